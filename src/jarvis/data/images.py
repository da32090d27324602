"""Image preprocessing: CLIP-style crop (stage 1) or LLaVA ``pad`` (stage 2 / eval), then normalisation.

- ``crop``: resize the shortest side to ``size`` (bicubic), centre-crop ``size``×``size`` (paper-spec §3, stage 1).
- ``pad``: expand to a square filled with ``int(mean·255)`` per channel (LLaVA's ``expand2square``), then the same
  resize (benchmarks-spec §1, paper-spec §3 for stage 2 and evaluation).

``ContextTargetTransform`` produces the two copies JARVIS needs from one image (paper-spec §3): one geometric
transform, normalised twice (context and target mean/std). When the target size differs, only the **target** copy is
resized (bilinear, ``align_corners=False``); the reference also resized the context copy (paper-spec §11.2).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def expand_to_square(image: Image.Image, fill: tuple[int, int, int]) -> Image.Image:
    """Pad to a square, the original centred (offset ``(long - short) // 2``), as LLaVA's ``expand2square``."""
    w, h = image.size
    if w == h:
        return image
    side = max(w, h)
    out = Image.new(image.mode, (side, side), fill)
    out.paste(image, ((side - w) // 2, (side - h) // 2))
    return out


def resize_shortest_and_crop(image: Image.Image, size: int) -> Image.Image:
    """Bicubic resize of the shortest side to ``size`` (long side ``int(size·long/short)``), then a centre crop."""
    w, h = image.size
    if w <= h:
        new_w, new_h = size, int(size * h / w)
    else:
        new_w, new_h = int(size * w / h), size
    if (new_w, new_h) != (w, h):
        image = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    left, top = (new_w - size) // 2, (new_h - size) // 2
    return image.crop((left, top, left + size, top + size))


class ImageTransform:
    """PIL image → ``Float[3, size, size]``, normalised with ``mean``/``std``."""

    def __init__(
        self,
        size: int,
        mode: Literal["crop", "pad"],
        mean: Sequence[float] = CLIP_MEAN,
        std: Sequence[float] = CLIP_STD,
    ) -> None:
        if mode not in ("crop", "pad"):
            raise ValueError(f"image mode must be 'crop' or 'pad', got {mode!r}")
        if len(mean) != 3 or len(std) != 3:
            raise ValueError(f"mean/std need 3 channels, got {mean}, {std}")
        self.size, self.mode = int(size), mode
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)

    def geometry(self, image: Image.Image) -> torch.Tensor:
        """The resized/cropped image as ``Float[3, size, size]`` in [0, 1], before normalisation."""
        image = image.convert("RGB")
        if self.mode == "pad":
            fill = tuple(int(m * 255) for m in self.mean)
            image = expand_to_square(image, fill)  # type: ignore[arg-type]
        image = resize_shortest_and_crop(image, self.size)
        arr = np.asarray(image, dtype=np.float32) / 255.0  # (H, W, 3)
        return torch.from_numpy(arr).permute(2, 0, 1).contiguous()  # (3, H, W)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, self.mean, self.std)

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.normalize(self.geometry(image))


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``(x - mean) / std`` per channel for ``Float[3, H, W]``."""
    m = torch.tensor(mean, dtype=x.dtype).view(3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(3, 1, 1)
    return (x - m) / s


class ContextTargetTransform:
    """One image → (context pixels, target pixels): same geometry, two normalisations (paper-spec §3)."""

    def __init__(
        self,
        context: ImageTransform,
        target_mean: Sequence[float] = IMAGENET_MEAN,
        target_std: Sequence[float] = IMAGENET_STD,
        target_size: int | None = None,
    ) -> None:
        self.context = context
        self.target_mean, self.target_std = tuple(target_mean), tuple(target_std)
        self.target_size = target_size

    def __call__(self, image: Image.Image) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self.context.geometry(image)  # (3, S, S) in [0, 1]
        ctx = self.context.normalize(raw)
        tgt = raw
        if self.target_size is not None and self.target_size != self.context.size:
            # Only the target copy is resized (fixes the reference bug, paper-spec §11.2).
            tgt = F.interpolate(
                raw[None], size=(self.target_size, self.target_size), mode="bilinear", align_corners=False
            )[0]
        return ctx, normalize(tgt, self.target_mean, self.target_std)
