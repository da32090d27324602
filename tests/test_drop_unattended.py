"""JEPA step without the tokens nobody attends (issue 13): which positions stay, and the same numbers."""

from __future__ import annotations

import pytest
import torch

from jarvis.masking import MaskSpec, sample_block_masks
from jarvis.model.attention import (
    base_allowed,
    gather_square,
    jepa_allowed,
    kept_positions,
    scatter_positions,
)
from jarvis.model.freeze import set_trainable
from jarvis.seeding import make_generator
from test_model import IMG, batch, build, masks  # tests dir is on sys.path under pytest


def test_kept_positions_hand_computed() -> None:
    """Visual 0-5, text 6-7; ctx {0}, target {2, 3}: 1 and 4 go; 5 stays (it predicts token 6)."""
    attn = torch.tensor([[1] * 8, [1] * 6 + [0, 0]])
    span = torch.tensor([[0, 6], [0, 6]])
    ctx, tgt = torch.tensor([[0], [5]]), torch.tensor([[[2, 3]], [[2, 3]]])
    labels = torch.tensor([[-100] * 6 + [7, 8], [-100] * 6 + [-100, -100]])
    keep = kept_positions(attn, span, ctx, tgt, torch.tensor([True, True]), labels)
    # Row 1: its text is padding (dropped), ctx {5}, target {2, 3}: 3 kept, then dropped positions as filler.
    assert keep.tolist() == [[0, 2, 3, 5, 6, 7], [2, 3, 5, 0, 1, 4]]
    # Without labels no position predicts anything: 5 goes too.
    assert kept_positions(attn, span, ctx, tgt, torch.tensor([True, True])).tolist() == [
        [0, 2, 3, 6, 7],
        [2, 3, 5, 0, 1],
    ]


def test_dropped_columns_are_attended_by_nobody() -> None:
    """The premise: every dropped position is a blocked key for every row of the full mask."""
    model = build()
    b, m = batch(model), masks()
    _, span, _ = model.embed(b["input_ids"], b["pixel_values"], None)
    has = span[:, 1] > span[:, 0]
    allowed = jepa_allowed(base_allowed(b["attention_mask"], span, True), span, **_jepa(m), has_image=has)
    keep = kept_positions(b["attention_mask"], span, m["jepa_context"], m["jepa_targets"], has, b["labels"])
    kept = torch.zeros_like(b["attention_mask"], dtype=torch.bool).scatter(1, keep, True)
    assert keep.shape[1] < b["input_ids"].shape[1]
    for row in range(3):
        n_kept = int(kept[row].sum())
        dropped = (~kept[row]).nonzero().flatten()
        assert not allowed[row][:, dropped].any()
        filler = keep[row, n_kept:]  # slots past this row's count hold distinct dropped positions
        assert not kept[row, filler].any() and filler.unique().numel() == filler.numel()
    square = gather_square(allowed, keep)
    assert torch.equal(square[0, :4, :4], allowed[0][keep[0, :4]][:, keep[0, :4]])
    x = torch.randn(3, keep.shape[1], 2)
    assert torch.equal(
        scatter_positions(x, keep, b["input_ids"].shape[1]).gather(1, keep[..., None].expand(-1, -1, 2)), x
    )


def _jepa(m: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {"context": m["jepa_context"], "targets": m["jepa_targets"]}


def _step(model, b, m, **kw) -> tuple[list[float], dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    out = model(**b, **m, **kw)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return [out.loss.detach(), out.loss_ntp.detach(), out.loss_jepa.detach()], grads


@pytest.mark.parametrize(
    ("lm", "context", "target", "layer"),
    [("llama", "timm_vit", "timm_vit", 1), ("qwen2", "clip", "dinov2_grid6", -1)],
)
def test_same_losses_and_gradients_with_and_without_dropping(
    lm: str, context: str, target: str, layer: int
) -> None:
    """Image at 0, a text-only sample and an image after a prefix, right padding; everything but the target
    tower trains, so gradients reach the LM, the context tower, the projector, z and the head."""
    model = build(lm=lm, context=context, target=target, jepa_layer=layer, layers=3)
    set_trainable(model, {"llm", "vision", "projector", "mask_token", "jepa_head"})
    b = batch(model, seed=1)
    b["label_positions"] = (b["labels"][:, 1:] != -100).nonzero()
    for seed in range(3):
        m = masks(seed=seed)
        full, full_grads = _step(model, b, m, drop_unattended=False)
        dropped, dropped_grads = _step(model, b, m)
        _, span, _ = model.embed(b["input_ids"], b["pixel_values"], None)
        has = span[:, 1] > span[:, 0]
        keep = kept_positions(
            b["attention_mask"], span, m["jepa_context"], m["jepa_targets"], has, b["labels"]
        )
        given, given_grads = _step(model, b, m, jepa_keep=keep)
        assert keep.shape[1] < b["input_ids"].shape[1]  # the short path really ran
        assert set(full_grads) == set(dropped_grads) == set(given_grads)
        assert len([n for n in full_grads if n.startswith("vision_tower.")]) > 0
        for a, d, g in zip(full, dropped, given, strict=True):
            torch.testing.assert_close(d, a, rtol=1e-6, atol=1e-7)
            assert torch.equal(d, g)
        for name, grad in full_grads.items():
            torch.testing.assert_close(dropped_grads[name], grad, rtol=1e-5, atol=1e-7, msg=name)
            assert torch.equal(given_grads[name], dropped_grads[name]), name


def test_full_sequence_when_logits_are_asked_for() -> None:
    """return_logits needs every position: no dropping, and the loss is the dropped step's."""
    model = build()
    b, m = batch(model), masks()
    full = model(**b, **m, return_logits=True)
    assert full.logits.shape[1] == b["input_ids"].shape[1]
    short = model(**b, **m)
    torch.testing.assert_close(short.loss, full.loss, rtol=1e-6, atol=1e-7)


def test_reference_spec_drops_a_share_of_the_grid() -> None:
    """On the paper's 24x24 grid with the reference mask spec, a JEPA step keeps only part of the image."""
    grid, n, bsz, caption = (24, 24), 576, 4, 40
    m = sample_block_masks(grid, MaskSpec(), bsz, make_generator("drop-test", 0))
    ids = torch.cat([torch.full((bsz, n), IMG), torch.ones(bsz, caption, dtype=torch.long)], dim=1)
    labels = ids.masked_fill(ids == IMG, -100)
    span = torch.tensor([[0, n]] * bsz)
    keep = kept_positions(
        torch.ones_like(ids), span, m.context, m.targets, torch.ones(bsz, dtype=torch.bool), labels
    )
    union = torch.zeros(bsz, n, dtype=torch.bool).scatter(1, m.context, True)
    union = union.scatter(1, m.targets.flatten(1), True)
    union[:, -1] = True  # the last patch predicts the first caption token
    assert keep.shape[1] == int(union.sum(1).max()) + caption < n + caption
