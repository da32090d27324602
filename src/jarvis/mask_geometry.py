"""Block sizes of the JEPA mask sampler, without torch: params validation checks them when params.yaml loads.

Kept apart from jarvis.masking (which draws the blocks with torch generators) so that loading params, as every
Snakefile parse and every CLI start does, does not import torch.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jarvis.config import MaskSpec


def size_from_r(
    grid: tuple[int, int], scale: tuple[float, float], aspect_ratio: tuple[float, float], r: float
) -> tuple[int, int]:
    """I-JEPA's coupled size formula: the same r in [0, 1) sets both the scale and the aspect ratio."""
    height, width = grid
    s = scale[0] + r * (scale[1] - scale[0])
    a = aspect_ratio[0] + r * (aspect_ratio[1] - aspect_ratio[0])
    n = int(height * width * s)
    h = int(round(math.sqrt(n * a)))
    w = int(round(math.sqrt(n / a)))
    # Blocks must be strictly smaller than the grid (the exclusive position bound needs H - h >= 1).
    return max(min(h, height - 1), 0), max(min(w, width - 1), 0)


@functools.lru_cache(maxsize=64)
def check_spec(grid: tuple[int, int], spec: MaskSpec) -> None:
    """Fail at the first batch if *any* draw of r could give a block with <= min_keep patches.

    Scans r over a fine grid of [0, 1] with the same size formula, so a bad (grid, min_keep)
    pair is reported deterministically instead of on an unlucky step.
    """
    for r in (i / 1000 for i in range(1001)):
        if spec.num_targets > 0:
            check_feasible("target", size_from_r(grid, spec.target_scale, spec.aspect_ratio, r), grid, spec)
        check_feasible("context", size_from_r(grid, spec.context_scale, (1.0, 1.0), r), grid, spec)


def check_feasible(what: str, size: tuple[int, int], grid: tuple[int, int], spec: MaskSpec) -> None:
    # The size is fixed per batch and only the position is redrawn, so a block with <= min_keep
    # patches can never become valid: the reference loops forever here (paper-spec §4.2).
    if size[0] * size[1] <= spec.min_keep:
        raise ValueError(
            f"{what} block {size[0]}x{size[1]} on grid {grid[0]}x{grid[1]} has "
            f"{size[0] * size[1]} patches, never > min_keep={spec.min_keep}; lower min_keep or raise the scale"
        )
