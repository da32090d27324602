"""Loss functions (paper-spec §7, §13 "Losses")."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from jarvis.losses import jepa_loss, ntp_loss, shift_labels, total_loss

G = torch.Generator().manual_seed(0)


def test_cos_of_identical_vectors_is_minus_one() -> None:
    x = torch.randn(2, 3, 5, 8, generator=G)
    assert torch.allclose(jepa_loss(x, x.clone(), "cos"), torch.tensor(-1.0), atol=1e-6)
    assert torch.allclose(jepa_loss(x, -x, "cos"), torch.tensor(1.0), atol=1e-6)
    assert torch.allclose(jepa_loss(x, 3.0 * x, "cos"), torch.tensor(-1.0), atol=1e-6)  # scale-free


def test_cos_is_mean_over_tokens_then_blocks() -> None:
    pred = torch.randn(2, 3, 4, 6, generator=G)
    tgt = torch.randn(2, 3, 4, 6, generator=G)
    per_block = [
        -F.cosine_similarity(pred[:, j].flatten(0, 1), tgt[:, j].flatten(0, 1), dim=-1).mean()
        for j in range(3)
    ]
    assert torch.allclose(jepa_loss(pred, tgt, "cos"), torch.stack(per_block).mean(), atol=1e-6)


def test_smooth_l1_targets_are_layer_normed() -> None:
    tgt = 5.0 + 3.0 * torch.randn(2, 2, 4, 16, generator=G)
    normed = F.layer_norm(tgt, (16,))
    assert torch.allclose(jepa_loss(normed, tgt, "smooth_l1"), torch.tensor(0.0), atol=1e-6)
    assert jepa_loss(tgt, tgt, "smooth_l1") > 0.1  # raw targets are not what it regresses onto
    pred = torch.randn(2, 2, 4, 16, generator=G)
    per_block = [F.smooth_l1_loss(pred[:, j], normed[:, j]) for j in range(2)]
    assert torch.allclose(jepa_loss(pred, tgt, "smooth_l1"), torch.stack(per_block).mean(), atol=1e-6)


def test_jepa_loss_empty_is_zero_with_graph() -> None:
    pred = torch.randn(0, 4, 3, 8, requires_grad=True)
    loss = jepa_loss(pred, torch.zeros(0, 4, 3, 8), "cos")
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert pred.grad is not None


def test_jepa_loss_rejects_bad_inputs() -> None:
    with pytest.raises(ValueError, match="differ"):
        jepa_loss(torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 3), "cos")
    # the kind is validated once, where it enters (schema, JarvisConfig); the loss only proves its match exhaustive
    with pytest.raises(AssertionError, match="'l2'"):
        jepa_loss(torch.ones(1, 1, 1, 2), torch.ones(1, 1, 1, 2), "l2")  # type: ignore[arg-type]


def test_ntp_loss_matches_cross_entropy_with_ignore_index() -> None:
    logits = torch.randn(2, 6, 11, generator=G)
    labels = torch.randint(0, 11, (2, 6), generator=G)
    labels[0, :3] = -100
    expected = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-100)
    assert torch.allclose(ntp_loss(logits, labels), expected, atol=1e-6)
    assert torch.equal(shift_labels(labels), labels[:, 1:])


def test_ntp_loss_all_ignored_is_zero_not_nan() -> None:
    loss = ntp_loss(torch.randn(1, 3, 5), torch.full((1, 3), -100))
    assert loss.item() == 0.0


def test_weight_zero_gives_ntp_only() -> None:
    ntp, jepa = torch.tensor(2.5), torch.tensor(-0.7)
    assert total_loss(ntp, jepa, 0.0) == ntp
    assert torch.allclose(total_loss(ntp, jepa, 0.5), torch.tensor(2.15))
