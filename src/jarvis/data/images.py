"""Image preprocessing: CLIP-style crop (stage 1) or LLaVA ``pad`` (stage 2 / eval), then normalisation.

- ``crop``: resize the shortest side to ``size`` (bicubic), centre-crop ``size``×``size`` (paper-spec §3, stage 1).
- ``pad``: expand to a square filled with ``int(mean·255)`` per channel (LLaVA's ``expand2square``), then the same
  resize (benchmarks-spec §1, paper-spec §3 for stage 2 and evaluation).

``ContextTargetTransform`` produces the two copies JARVIS needs from one image (paper-spec §3): one geometric
transform, normalised twice (context and target mean/std). When the target size differs, only the **target** copy is
resized (bilinear, ``align_corners=False``); the reference also resized the context copy (paper-spec §11.2).

Every image goes through ``to_rgb`` first. Pillow's ``convert("RGB")`` clips 16-bit and 32-bit pixels to 255 (a
16-bit PNG becomes all white) and drops transparency (showing whatever colour hides under alpha 0), so those modes are
converted here: 16-bit values are scaled by 1/257, ``I``/``F`` by their stated or actual range, and transparent
pixels are composited on ``ALPHA_BACKGROUND``. A mode with no known conversion raises ``ImageProblem``. Sizes are
checked from the header, before decoding (``check_size``): a decompression bomb is refused by its pixel count, not by
its file size, and so are degenerate sizes the transforms would blow up (see ``MAX_ASPECT_RATIO``).
"""

from __future__ import annotations

import os
import warnings
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

# Transparent pixels are shown over white: the colour stored under alpha 0 is arbitrary (often black), and white is
# what a viewer shows for the page background.
ALPHA_BACKGROUND = (255, 255, 255)
# Decompression-bomb limit on width*height from the header (8192 x 8192), below Pillow's own 2 x 89.5 M error limit.
# The long side is bounded by the same number: ``pad`` materialises a long x long square before resizing.
MAX_IMAGE_PIXELS = 8192 * 8192
MAX_IMAGE_SIDE = 8192
# ``crop`` resizes the short side to ``size``, so the long side becomes size * ratio before the crop: a 1 x 8000 strip
# would become a 64 x 512000 image. No photo or document in the LLaVA/Cambrian data comes near 100:1.
MAX_ASPECT_RATIO = 100.0
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")


class ImageProblem(ValueError):
    """An image that cannot be used, with the drop reason (``jarvis.data.dataset.DROP_REASONS``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def check_size(
    size: tuple[int, int], max_pixels: int = MAX_IMAGE_PIXELS, max_aspect_ratio: float = MAX_ASPECT_RATIO
) -> None:
    """Raise ``ImageProblem`` for an empty, too large (pixels or long side) or too elongated ``(width, height)``."""
    w, h = int(size[0]), int(size[1])
    if w <= 0 or h <= 0:
        raise ImageProblem("empty_image", f"image has size {w}x{h}")
    if w * h > max_pixels or max(w, h) > max(MAX_IMAGE_SIDE, int(max_pixels**0.5)):
        raise ImageProblem(
            "image_too_large",
            f"image {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels} pixels / side "
            f"{max(MAX_IMAGE_SIDE, int(max_pixels**0.5))} (decompression-bomb guard)",
        )
    if max(w, h) / min(w, h) > max_aspect_ratio:
        raise ImageProblem(
            "extreme_aspect_ratio",
            f"image {w}x{h} has aspect ratio {max(w, h) / min(w, h):.1f} > {max_aspect_ratio}",
        )


def _gray_to_rgb(values: np.ndarray) -> Image.Image:
    gray = np.clip(np.rint(values), 0, 255).astype(np.uint8)
    return Image.fromarray(gray, "L").convert("RGB")


def _scale_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit, 32-bit integer and float grey images -> RGB with the full range kept."""
    arr = np.asarray(image)
    if image.mode in _SIXTEEN_BIT:
        return _gray_to_rgb(arr.astype(np.float64) / 257.0)  # 65535 -> 255 exactly
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise ImageProblem("unsupported_image_mode", f"mode {image.mode!r} image holds non-finite values")
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0 and hi <= 1 and image.mode == "F":
        return _gray_to_rgb(arr * 255.0)  # float images in [0, 1]
    if lo >= 0 and hi <= 255:
        return _gray_to_rgb(arr)  # 8-bit data in a wider container (what Pillow's L -> I / F gives)
    if lo >= 0 and hi <= 65535 and image.mode == "I":
        # 16-bit data in a 32-bit container (16-bit PNG/TIFF through older Pillow, I;16 -> I): scale as I;16.
        return _gray_to_rgb(arr / 257.0)
    if hi == lo:  # a constant image out of [0, 255]: clipped, there is no range to stretch
        return _gray_to_rgb(arr)
    # No stated range: stretch the actual one to [0, 255].
    return _gray_to_rgb((arr - lo) * (255.0 / (hi - lo)))


def to_rgb(image: Image.Image, background: tuple[int, int, int] = ALPHA_BACKGROUND) -> Image.Image:
    """Convert any mode Pillow opens to 8-bit RGB; transparency is composited on ``background``.

    Raises ``ImageProblem("unsupported_image_mode")`` when Pillow has no conversion for the mode.
    """
    mode = image.mode
    if mode in _SIXTEEN_BIT or mode in ("I", "F"):
        return _scale_to_8bit(image)
    if mode in _ALPHA_MODES or "transparency" in image.info:
        try:
            if mode == "La":  # premultiplied grey + alpha: Pillow converts it only to LA
                image = image.convert("LA")
            rgba = image.convert("RGBA")  # applies a palette's or a tRNS colour's transparency
        except (ValueError, OSError) as e:
            raise ImageProblem("unsupported_image_mode", f"cannot convert mode {mode!r} to RGBA: {e}") from e
        bg = Image.new("RGBA", rgba.size, (*background, 255))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    if mode == "RGB":
        return image
    try:
        return image.convert("RGB")  # 1, L, P, CMYK, YCbCr, HSV, ...
    except (ValueError, OSError) as e:
        raise ImageProblem("unsupported_image_mode", f"cannot convert mode {mode!r} to RGB: {e}") from e


def load_rgb(
    path: str | os.PathLike[str],
    max_pixels: int = MAX_IMAGE_PIXELS,
    background: tuple[int, int, int] = ALPHA_BACKGROUND,
) -> Image.Image:
    """Open ``path``, check its header size (before decoding), decode and convert to RGB (``to_rgb``).

    Raises ``ImageProblem`` for unusable sizes and modes; Pillow's own errors for files that are not images.
    """
    with warnings.catch_warnings():
        # Our limit is below Pillow's warning threshold; Pillow's hard limit still raises DecompressionBombError.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)
        except Image.DecompressionBombError as e:
            raise ImageProblem("image_too_large", str(e)) from e
    with im:
        check_size(im.size, max_pixels)
        im.load()
        return to_rgb(im, background)


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
        check_size(image.size)
        image = to_rgb(image)
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
