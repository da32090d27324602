"""Attention masks: causal + bidirectional visual span, and the four JEPA rules (paper-spec §6).

All masks are built as Bool[B, T, T] "may attend" matrices with vectorised ops, then converted to
a float additive (B, 1, T, T) mask in the model dtype: 0 = attend, ``finfo(dtype).min`` = blocked, or, when the
LM runs FlexAttention (``set_attn_implementation("flex_attention")``), to a ``BlockMask`` (``block_mask``).
A bool 4-D mask is silently wrong under eager attention in transformers 5 (stack-facts.md §4), and
``finfo.min`` avoids NaN rows under SDPA where the reference used -inf.

Reference: aimagelab/JARVIS ``src/models/mllm/modeling_mllm.py``
``prepare_causal_mask_with_full_mask_on_image_tokens`` (base mask) and
``src/models/mllm_jepa/modeling_mllm_jepa.py`` L144–165 (JEPA rules, per-sample loops there).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from jarvis.losses import IGNORE_INDEX

if TYPE_CHECKING:
    from torch.nn.attention.flex_attention import BlockMask


def to_additive(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Bool[B, T, T] -> Float[B, 1, T, T]: 0 where allowed, ``finfo(dtype).min`` where blocked."""
    blocked = torch.finfo(dtype).min
    zero = torch.zeros((), dtype=dtype, device=allowed.device)
    return torch.where(allowed, zero, torch.full((), blocked, dtype=dtype, device=allowed.device)).unsqueeze(
        1
    )


def block_mask(allowed: torch.Tensor, block_size: int = 128) -> BlockMask:
    """Bool[B, Q, K] -> a FlexAttention ``BlockMask`` with the same rules (issue 13, "GPU, free JEPA").

    The dense additive mask makes SDPA fall back from its flash kernel and reads B·T² floats per layer;
    FlexAttention skips the fully blocked (block × block) tiles and reads ``allowed`` only in partial ones. A query
    row with no allowed key (a left-padding row) yields zeros here and a uniform average under the dense mask;
    such rows carry no loss and no other token attends to them, so losses and gradients agree.
    """
    from torch.nn.attention.flex_attention import create_block_mask

    batch, queries, keys = allowed.shape

    def may_attend(b: torch.Tensor, _h: torch.Tensor, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        return allowed[b, q, k]

    return create_block_mask(may_attend, batch, None, queries, keys, device=allowed.device, BLOCK_SIZE=block_size)


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


def jepa_columns(
    visual_span: torch.Tensor,
    context: torch.Tensor,
    targets: torch.Tensor,
    has_image: torch.Tensor,
    length: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per position of the sequence: visual (B, T), context (B, T), target of block m (B, M, T).

    ``context`` Long[B_img, Kc] / ``targets`` Long[B_img, M, Kt] are visual-relative indices of the samples
    with an image, in batch order; rows without an image are all False.
    """
    batch, device = visual_span.shape[0], visual_span.device
    if context.shape[0] == 0:  # no image in the batch
        none = torch.zeros(batch, length, dtype=torch.bool, device=device)
        return none, none, torch.zeros(batch, targets.shape[1], length, dtype=torch.bool, device=device)
    pos = torch.arange(length, device=device)
    rel = (pos - visual_span[:, :1]).clamp(min=0)  # (B, T) visual-relative index of each position
    in_vis = _in_span(visual_span, length) & has_image.unsqueeze(1)  # (B, T)
    # Membership tables over the visual span, indexed by visual-relative position.
    n_vis = length  # any bound >= N works; T is always >= N and avoids a host sync
    ctx_member = _to_batch_rows(_membership(context, n_vis), has_image)  # (B, T)
    tgt_member = _to_batch_rows(_membership(targets, n_vis), has_image)  # (B, M, T)
    ctx_col = ctx_member.gather(1, rel) & in_vis  # (B, T) column is a context token
    tgt_col = tgt_member.gather(2, rel.unsqueeze(1).expand_as(tgt_member)) & in_vis.unsqueeze(1)  # (B, M, T)
    return in_vis, ctx_col, tgt_col


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
    in_vis, ctx_col, tgt_col = jepa_columns(visual_span, context, targets, has_image, length)

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


# ---- dropping what nobody attends (issue 13) -------------------------------------------------------------------------
# Under the JEPA rules a visual token that is neither context nor target is a key for no row (rule 1, never
# re-enabled), and a padding token is a key for no row (base mask). Their own rows feed a loss only through NTP when
# their output predicts a label (the last patch predicts the first caption token). Every other such position can leave
# the sequence: no kept row's attention changes (the dropped columns weighed exp(finfo.min) = 0), and each kept token
# keeps its position id, so the kept outputs are the same numbers, computed on a shorter sequence.


def kept_positions(
    attention_mask: torch.Tensor,
    visual_span: torch.Tensor,
    context: torch.Tensor,
    targets: torch.Tensor,
    has_image: torch.Tensor,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Long[B, T']: the positions a JEPA step must keep, ascending, rows padded with dropped positions.

    T' is the largest per-sample count of kept positions, read on the host: call this on host tensors (the
    collator's and the sampler's) to stay free of a device sync. A row with fewer kept positions is filled with
    distinct dropped positions (blocked as keys; their outputs are read by nothing).
    """
    length = attention_mask.shape[1]
    in_vis, ctx_col, tgt_col = jepa_columns(visual_span, context, targets, has_image, length)
    unattended = in_vis & ~ctx_col & ~tgt_col.any(dim=1)  # (B, T)
    keep = attention_mask.bool() & ~unattended
    if labels is not None:  # position t predicts labels[t + 1]
        supervised = torch.zeros_like(keep)
        supervised[:, :-1] = labels[:, 1:] != IGNORE_INDEX
        keep = keep | supervised
    n_keep = int(keep.sum(dim=1).max())  # host read; see the docstring
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # kept first, each group ascending
    return order[:, :n_keep]


def gather_positions(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """(B, T, ...) -> (B, T', ...) at the ``keep`` positions."""
    index = keep.view(*keep.shape, *([1] * (x.dim() - 2))).expand(-1, -1, *x.shape[2:])
    return x.gather(1, index)


def gather_square(allowed: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Bool[B, T, T] -> Bool[B, T', T']: rows and columns at the ``keep`` positions."""
    rows = allowed.gather(1, keep.unsqueeze(-1).expand(-1, -1, allowed.shape[2]))  # (B, T', T)
    return rows.gather(2, keep.unsqueeze(1).expand(-1, keep.shape[1], -1))  # (B, T', T')


def scatter_positions(x: torch.Tensor, keep: torch.Tensor, length: int) -> torch.Tensor:
    """(B, T', D) -> (B, T, D): back at the ``keep`` positions, zeros at the dropped ones (read by nothing)."""
    out = x.new_zeros(x.shape[0], length, *x.shape[2:])
    return out.scatter(1, keep.unsqueeze(-1).expand_as(x), x)
