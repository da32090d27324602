"""Loss functions as pure tensor functions (paper-spec §7).

- ``ntp_loss``: token-mean cross-entropy over label tokens != -100 (``num_items_in_batch`` is ignored,
  as in the reference).
- ``jepa_loss``: per target block, the mean over all (image, token) pairs; then the mean over blocks
  (reference: aimagelab/JARVIS ``src/models/mllm_jepa/modeling_mllm_jepa.py`` L208–226).
"""

from __future__ import annotations

from typing import assert_never

import torch
import torch.nn.functional as F

from jarvis.config import JepaLossKind

IGNORE_INDEX = -100



def shift_labels(labels: torch.Tensor) -> torch.Tensor:
    """Labels aligned with the logits of positions ``0 .. T-2``: ``labels[:, 1:]``."""
    return labels[:, 1:]


def ntp_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits`` (..., V) against **already aligned** ``labels`` (...).

    Positions with label -100 are ignored. With no valid label the loss is 0 (not NaN), so a
    micro-batch whose captions were all truncated away does not poison the step.
    """
    flat_logits = logits.reshape(-1, logits.shape[-1]).float()
    flat_labels = labels.reshape(-1)
    total = F.cross_entropy(flat_logits, flat_labels, ignore_index=IGNORE_INDEX, reduction="sum")
    count = (flat_labels != IGNORE_INDEX).sum().clamp(min=1)
    return total / count


def jepa_loss(pred: torch.Tensor, target: torch.Tensor, kind: JepaLossKind) -> torch.Tensor:
    """JEPA regression loss of ``pred`` onto ``target``, both (B_img, M, Kt, Dt).

    - ``cos``: negative cosine similarity, mean over (image, token) per block, then over blocks.
    - ``smooth_l1``: targets LayerNormed over Dt without affine parameters (I-JEPA), smooth-L1
      (beta = 1) with the mean over all elements per block, then over blocks.
    Every block has the same (B_img, Kt), so both means equal one global mean; written per block
    anyway to mirror the spec. No block or no image gives a 0 tensor that still carries ``pred``'s
    graph (so every rank touches the same parameters).
    """
    if pred.shape != target.shape:
        raise ValueError(f"jepa_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} differ")
    if pred.dim() != 4:
        raise ValueError(f"jepa_loss expects (B_img, M, Kt, Dt), got {tuple(pred.shape)}")
    if pred.numel() == 0:
        return pred.sum() * 0.0
    pred, target = pred.float(), target.float()
    # ``kind`` was validated where it entered: params.yaml's schema (JepaLossKind) or JarvisConfig (a config.json)
    match kind:
        case "cos":
            per_token = -F.cosine_similarity(pred, target, dim=-1)  # (B_img, M, Kt)
            per_block = per_token.mean(dim=(0, 2))  # (M,)
        case "smooth_l1":
            target = F.layer_norm(target, (target.shape[-1],))
            per_elem = F.smooth_l1_loss(pred, target, reduction="none")  # (B_img, M, Kt, Dt)
            per_block = per_elem.mean(dim=(0, 2, 3))  # (M,)
        case _:  # unreachable for a JepaLossKind (a type checker proves the match exhaustive)
            assert_never(kind)
    return per_block.mean()


def total_loss(loss_ntp: torch.Tensor, loss_jepa: torch.Tensor, weight: float) -> torch.Tensor:
    """``loss_ntp + weight * loss_jepa`` (``jepa.weight``, 1.0 in the reference)."""
    return loss_ntp + weight * loss_jepa
