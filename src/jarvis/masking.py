"""I-JEPA multiblock mask sampler and the JEPA skip coin (paper-spec.md §4, §7).

A port of the *semantics* of I-JEPA's ``MaskCollator`` as used by the JARVIS reference
(aimagelab/JARVIS, file ``src/train/collators.py``), written as a pure function:
``(grid, spec, batch_size, generator) -> BlockMasks`` of flat raster indices.

Kept on purpose (and pinned by tests):
- one uniform draw sets both the scale and the aspect ratio of a block (coupled draw);
- block sizes are drawn once per batch (target first, then context with aspect 1), so every
  image of a batch has the same block sizes;
- positions use an *exclusive* upper bound (``randint(0, H - h)``), so the last row and column
  are never covered by any block;
- ``min_keep`` is strict: a block is valid only with ``> min_keep`` patches;
- the context is constrained to avoid the targets; after 20 failures in a row the last target's
  constraint is dropped, then the next one, and so on (the relaxation rule);
- context and target lists are truncated to the batch minimum, keeping the first raster indices.

Deviation (house rule 3): positions are drawn from the same explicit generator as the sizes,
not from the global RNG. Masks are distributionally identical to the reference, not bit-identical.
An impossible ``min_keep`` raises ``ValueError`` (the reference loops forever, paper-spec §4.2).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch

from jarvis.config import MaskSpec  # the schema of jepa.<name>.mask; re-exported for the sampler's callers
from jarvis.mask_geometry import check_feasible, check_spec, size_from_r  # torch-free: params load runs them
from jarvis.seeding import make_generator

logger = logging.getLogger(__name__)

# Failures in a row before one more target constraint is dropped (I-JEPA's timeout).
_RELAX_AFTER = 20


@dataclass(frozen=True)
class BlockMasks:
    """Index tensors into the flat H*W patch grid (raster order)."""

    context: torch.Tensor  # Long[B, Kc]
    targets: torch.Tensor  # Long[B, M, Kt]
    num_relaxed: int = 0  # how many context draws needed the relaxation rule (context may touch targets)


def block_size(
    grid: tuple[int, int],
    scale: tuple[float, float],
    aspect_ratio: tuple[float, float],
    generator: torch.Generator,
) -> tuple[int, int]:
    """Draw one (h, w): one uniform r from ``generator``, then ``size_from_r``."""
    r = float(torch.rand(1, generator=generator)[0])
    return size_from_r(grid, scale, aspect_ratio, r)


def _rect(grid: tuple[int, int], size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """A Bool[H, W] rectangle of ``size`` at a random top-left corner (exclusive upper bound)."""
    (height, width), (h, w) = grid, size
    top = int(torch.randint(0, height - h, (1,), generator=generator)[0])
    left = int(torch.randint(0, width - w, (1,), generator=generator)[0])
    mask = torch.zeros(grid, dtype=torch.bool)
    mask[top : top + h, left : left + w] = True
    return mask


def _constrained_block(
    grid: tuple[int, int],
    size: tuple[int, int],
    avoid: list[torch.Tensor],
    min_keep: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Sample a block minus the ``avoid`` rectangles, relaxing the constraint when stuck.

    Returns (flat sorted indices, the full rectangle Bool[H, W], number of dropped constraints).
    """
    dropped, failures = 0, 0
    while True:
        rect = _rect(grid, size, generator)
        mask = rect.clone()
        for region in avoid[: max(len(avoid) - dropped, 0)]:
            mask &= ~region
        idx = mask.flatten().nonzero().squeeze(1)
        if idx.numel() > min_keep:
            return idx, rect, dropped
        failures += 1
        if failures == _RELAX_AFTER:
            failures = 0
            dropped += 1
            logger.warning("mask sampler: no valid block found, dropping constraint %d", dropped)


def sample_block_masks(
    grid: tuple[int, int], spec: MaskSpec, batch_size: int, generator: torch.Generator
) -> BlockMasks:
    """One context block and ``spec.num_targets`` target blocks per image (paper-spec §4.1)."""
    height, width = grid
    if height < 2 or width < 2:
        raise ValueError(f"grid must be at least 2x2 for the multiblock sampler, got {grid}")
    check_spec(tuple(grid), spec)
    target_size = block_size(grid, spec.target_scale, spec.aspect_ratio, generator)
    context_size = block_size(grid, spec.context_scale, (1.0, 1.0), generator)
    if spec.num_targets > 0:
        check_feasible("target", target_size, grid, spec)
    check_feasible("context", context_size, grid, spec)

    contexts: list[torch.Tensor] = []
    targets: list[list[torch.Tensor]] = []
    num_relaxed = 0
    for _ in range(batch_size):
        rects: list[torch.Tensor] = []
        blocks: list[torch.Tensor] = []
        for _ in range(spec.num_targets):
            # With overlap allowed a target is a plain rectangle; otherwise it avoids earlier targets.
            avoid = [] if spec.targets_may_overlap else rects
            idx, rect, dropped = _constrained_block(grid, target_size, avoid, spec.min_keep, generator)
            num_relaxed += dropped > 0
            rects.append(rect)
            blocks.append(idx)
        ctx, _, dropped = _constrained_block(grid, context_size, rects, spec.min_keep, generator)
        num_relaxed += dropped > 0
        contexts.append(ctx)
        targets.append(blocks)

    kc = min(c.numel() for c in contexts)
    context = torch.stack([c[:kc] for c in contexts])  # (B, Kc)
    if spec.num_targets == 0:
        target = torch.zeros(batch_size, 0, 0, dtype=torch.long)
    else:
        kt = min(t.numel() for blocks in targets for t in blocks)
        target = torch.stack([torch.stack([t[:kt] for t in blocks]) for blocks in targets])  # (B, M, Kt)
    return BlockMasks(context=context, targets=target, num_relaxed=num_relaxed)


def draw_skip(seed: int, stage: str, global_step: int, micro_step: int, skip_prob: float) -> bool:
    """The JEPA skip coin: True means "plain NTP step on the full image" (paper-spec §7).

    Seeded by (seed, stage, "skip", global_step, micro_step) with no rank, so every rank draws the
    same decision and runs the same graph (fixes the reference's per-rank global-RNG coin).
    """
    if not 0.0 <= skip_prob <= 1.0:
        raise ValueError(f"skip_prob must be in [0, 1], got {skip_prob}")
    generator = make_generator(seed, stage, "skip", global_step, micro_step)
    return bool(torch.rand(1, generator=generator)[0] < skip_prob)
