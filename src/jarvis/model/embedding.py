"""Vectorised splice of visual embeddings into the token sequence (paper-spec §5).

Input convention (docs/design.md): a sample with an image carries N consecutive copies of
``image_token_id``; ``visual_embeds`` holds one (N, D) block per such sample, in batch order.
One ``masked_scatter`` replaces the reference's per-token Python loop
(aimagelab/JARVIS ``src/models/mllm/modeling_mllm.py`` L245).
"""

from __future__ import annotations

import torch


def check(condition: torch.Tensor, message: str) -> None:
    """Fail loudly on a bad input without a blocking host sync on accelerators.

    On CPU the check is a plain ``ValueError``; elsewhere ``torch._assert_async`` raises on the
    device stream, so ``forward`` never waits for the host (house rule 10).
    """
    if condition.device.type == "cpu":
        if not bool(condition):
            raise ValueError(message)
    else:
        torch._assert_async(condition, message)


def image_token_mask(input_ids: torch.Tensor, image_token_id: int) -> torch.Tensor:
    """Bool[B, T]: positions holding the image placeholder."""
    return input_ids == image_token_id


def visual_span(is_image: torch.Tensor) -> torch.Tensor:
    """Long[B, 2] = (v0, v1) of each sample's contiguous visual span; (0, 0) for no image."""
    count = is_image.sum(dim=1)
    start = torch.where(count > 0, is_image.int().argmax(dim=1), torch.zeros_like(count))
    return torch.stack([start, start + count], dim=1)


def splice_visual(
    token_embeds: torch.Tensor,
    input_ids: torch.Tensor,
    image_token_id: int,
    visual_embeds: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Write ``visual_embeds`` (B_img, N, D) over the image placeholders of ``token_embeds`` (B, T, D).

    Returns (embeds (B, T, D), visual_span Long[B, 2]). The caller's tensors are not modified.
    """
    is_image = image_token_mask(input_ids, image_token_id)  # (B, T)
    span = visual_span(is_image)
    n_img = 0 if visual_embeds is None else visual_embeds.shape[0]
    has_image = is_image.any(dim=1)
    check(
        has_image.sum() == n_img, f"{n_img} visual blocks for a different number of samples with image tokens"
    )
    if visual_embeds is None or n_img == 0:
        return token_embeds, span
    n = visual_embeds.shape[1]
    positions = torch.arange(input_ids.shape[1], device=input_ids.device)
    contiguous = (positions >= span[:, :1]) & (positions < span[:, 1:])
    check(
        ((span[:, 1] - span[:, 0] == n) | ~has_image).all() & (contiguous == is_image).all(),
        f"every sample with an image must carry exactly {n} consecutive image tokens",
    )
    source = visual_embeds.to(token_embeds.dtype)
    embeds = token_embeds.masked_scatter(is_image.unsqueeze(-1), source)  # (B, T, D)
    return embeds, span
