"""Attention masks: causal + bidirectional visual span, and the four JEPA rules (paper-spec §6).

All masks are built as Bool[B, T, T] "may attend" matrices with vectorised ops, then converted to
a float additive (B, 1, T, T) mask in the model dtype: 0 = attend, ``finfo(dtype).min`` = blocked.
A bool 4-D mask is silently wrong under eager attention in transformers 5 (stack-facts.md §4), and
``finfo.min`` avoids NaN rows under SDPA where the reference used -inf.

Reference: aimagelab/JARVIS ``src/models/mllm/modeling_mllm.py``
``prepare_causal_mask_with_full_mask_on_image_tokens`` (base mask) and
``src/models/mllm_jepa/modeling_mllm_jepa.py`` L144–165 (JEPA rules, per-sample loops there).
"""

from __future__ import annotations

import torch


def to_additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool[B, T, T] -> Float[B, 1, T, T]: 0 where allowed, ``finfo(dtype).min`` where blocked."""
    blocked = torch.finfo(dtype).min
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.full((), blocked, dtype=dtype, device=allowed.device)).unsqueeze(
        1
    )


def _in_span(visual_span: torch.Tensor, length: int) -> torch.Tensor:
    """Bool[B, T]: position inside [v0, v1)."""
    pos = torch.arange(length, device=visual_span.device)
    return (pos >= visual_span[:, :1]) & (pos < visual_span[:, 1:])


def base_allowed(attention_mask: torch.Tensor, visual_span: torch.Tensor, bidir_visual: bool) -> torch.Tensor:
    """Bool[B, T, T]: causal, optionally bidirectional inside the visual span, padding columns blocked.

    Padding *rows* still attend (their outputs carry no loss), as in the reference.
    """
    batch, length = attention_mask.shape
    causal = torch.ones(length, length, dtype=torch.bool, device=attention_mask.device).tril()
    allowed = causal.expand(batch, length, length)
    if bidir_visual:
        vis = _in_span(visual_span, length)  # (B, T)
        allowed = allowed | (vis.unsqueeze(2) & vis.unsqueeze(1))
    return allowed & attention_mask.bool().unsqueeze(1)


def visual_attention_mask(
    attention_mask: torch.Tensor, visual_span: torch.Tensor, dtype: torch.dtype, bidir_visual: bool = True
) -> torch.Tensor:
    """Float[B, 1, T, T] base mask for a forward with images (paper-spec §6, "Base mask")."""
    return to_additive(base_allowed(attention_mask, visual_span, bidir_visual), dtype)


def _membership(indices: torch.Tensor, span_len: int) -> torch.Tensor:
    """Long[..., K] visual-relative indices -> Bool[..., span_len] membership."""
    member = torch.zeros(*indices.shape[:-1], span_len, dtype=torch.bool, device=indices.device)
    return member.scatter(-1, indices, True)


def _to_batch_rows(x: torch.Tensor, has_image: torch.Tensor) -> torch.Tensor:
    """Scatter per-image rows (B_img, ...) to batch rows (B, ...), zeros for samples without image."""
    img_idx = (has_image.long().cumsum(0) - 1).clamp(min=0)  # (B,) index into B_img
    rows = x[img_idx]
    mask = has_image.view(-1, *([1] * (x.dim() - 1)))
    return rows & mask


def jepa_allowed(
    base: torch.Tensor,
    visual_span: torch.Tensor,
    context: torch.Tensor,
    targets: torch.Tensor,
    has_image: torch.Tensor,
) -> torch.Tensor:
    """Apply the four JEPA rules to ``base`` Bool[B, T, T] for every sample with an image.

    ``context`` Long[B_img, Kc] and ``targets`` Long[B_img, M, Kt] are visual-relative indices of the
    samples with an image, in batch order (``has_image`` Bool[B] says which rows those are).
    """
    length = base.shape[1]
    if context.shape[0] == 0:  # no image in the batch: nothing to change
        return base
    pos = torch.arange(length, device=base.device)
    v0, v1 = visual_span[:, :1], visual_span[:, 1:]  # (B, 1)
    rel = (pos - v0).clamp(min=0)  # (B, T) visual-relative index of each position
    in_vis = _in_span(visual_span, length) & has_image.unsqueeze(1)  # (B, T)
    # Membership tables over the visual span, indexed by visual-relative position.
    n_vis = length  # any bound >= N works; T is always >= N and avoids a host sync
    ctx_member = _to_batch_rows(_membership(context, n_vis), has_image)  # (B, T)
    tgt_member = _to_batch_rows(_membership(targets, n_vis), has_image)  # (B, M, T)
    ctx_col = ctx_member.gather(1, rel) & in_vis  # (B, T) column is a context token
    tgt_col = tgt_member.gather(2, rel.unsqueeze(1).expand_as(tgt_member)) & in_vis.unsqueeze(1)  # (B, M, T)

    rows_from_v0 = (pos >= v0) & has_image.unsqueeze(1)  # (B, T)
    text_rows = (pos >= v1) & has_image.unsqueeze(1)  # (B, T)
    # Rule 1: every visual column is blocked for every row.
    allowed = base & ~in_vis.unsqueeze(1)
    # Rule 2: rows from v0 on see the context columns.
    allowed = allowed | (rows_from_v0.unsqueeze(2) & ctx_col.unsqueeze(1))
    # Rule 3: each target block attends to itself bidirectionally (pairs within one block).
    same_block = torch.einsum("bmr,bmc->brc", tgt_col.float(), tgt_col.float()) > 0  # (B, T, T)
    allowed = allowed | same_block
    # Rule 4: text rows after the image see every target column.
    any_tgt = tgt_col.any(dim=1)  # (B, T)
    return allowed | (text_rows.unsqueeze(2) & any_tgt.unsqueeze(1))


def jepa_attention_mask(
    attention_mask: torch.Tensor,
    visual_span: torch.Tensor,
    context: torch.Tensor,
    targets: torch.Tensor,
    has_image: torch.Tensor,
    dtype: torch.dtype,
) -> torch.Tensor:
    """Float[B, 1, T, T]: bidirectional base mask, then the JEPA rules (paper-spec §6)."""
    base = base_allowed(attention_mask, visual_span, bidir_visual=True)
    return to_additive(jepa_allowed(base, visual_span, context, targets, has_image), dtype)
