"""Attention masks (paper-spec §6): hand-computed toy case, each rule, vectorised == naive loop."""

from __future__ import annotations

import torch

from jarvis.masking import MaskSpec, sample_block_masks
from jarvis.model.attention import (
    base_allowed,
    jepa_allowed,
    jepa_attention_mask,
    to_additive,
    visual_attention_mask,
)
from jarvis.seeding import make_generator

# paper-spec §6 hand-computed example: visual 0-5, text 6-7, ctx {0}, targets {2,3}, {4,5}; 1 = attend.
TOY = torch.tensor(
    [
        [1, 0, 0, 0, 0, 0, 0, 0],
        [1, 0, 0, 0, 0, 0, 0, 0],
        [1, 0, 1, 1, 0, 0, 0, 0],
        [1, 0, 1, 1, 0, 0, 0, 0],
        [1, 0, 0, 0, 1, 1, 0, 0],
        [1, 0, 0, 0, 1, 1, 0, 0],
        [1, 0, 1, 1, 1, 1, 1, 0],
        [1, 0, 1, 1, 1, 1, 1, 1],
    ],
    dtype=torch.bool,
)


def _toy_inputs() -> tuple[torch.Tensor, ...]:
    attn = torch.ones(1, 8, dtype=torch.long)
    span = torch.tensor([[0, 6]])
    ctx = torch.tensor([[0]])
    tgt = torch.tensor([[[2, 3], [4, 5]]])
    return attn, span, ctx, tgt, torch.tensor([True])


def test_toy_matrix_matches_paper_spec() -> None:
    attn, span, ctx, tgt, has = _toy_inputs()
    mask = jepa_attention_mask(attn, span, ctx, tgt, has, torch.float32)
    assert mask.shape == (1, 1, 8, 8) and mask.dtype == torch.float32
    assert torch.equal(mask[0, 0] == 0, TOY)
    assert torch.all(mask[0, 0][~TOY] == torch.finfo(torch.float32).min)


def test_each_rule_on_the_toy_case() -> None:
    attn, span, ctx, tgt, has = _toy_inputs()
    allowed = jepa_allowed(base_allowed(attn, span, True), span, ctx, tgt, has)[0]
    # Rule 1: the "neither" token (1) is never a key, not even for itself.
    assert not allowed[:, 1].any()
    # Rule 2: every row from v0 on sees the context column.
    assert allowed[:, 0].all()
    # Rule 3: target blocks are bidirectional inside, blind to the other block.
    assert allowed[2, 3] and allowed[3, 2] and not allowed[2, 4] and not allowed[4, 2]
    # Rule 4: text rows see all targets; targets never see text.
    assert allowed[6, 2:6].all() and not allowed[2:6, 6:].any()


def test_base_mask_bidirectional_span_and_padding_columns() -> None:
    attn = torch.tensor([[1, 1, 1, 1, 1, 0]])
    span = torch.tensor([[1, 4]])
    allowed = base_allowed(attn, span, bidir_visual=True)[0]
    expected = torch.ones(6, 6, dtype=torch.bool).tril()
    expected[1:4, 1:4] = True
    expected[:, 5] = False  # nobody attends to padding; the padding row still attends
    assert torch.equal(allowed, expected)
    causal = base_allowed(attn, span, bidir_visual=False)[0]
    assert torch.equal(causal, torch.ones(6, 6, dtype=torch.bool).tril() & attn.bool())


def test_additive_conversion_dtype() -> None:
    allowed = torch.tensor([[[True, False], [True, True]]])
    for dtype in (torch.float32, torch.bfloat16):
        m = to_additive(allowed, dtype)
        assert m.dtype == dtype and m.shape == (1, 1, 2, 2)
        assert m[0, 0, 0, 0] == 0 and m[0, 0, 0, 1] == torch.finfo(dtype).min
    m = visual_attention_mask(torch.ones(1, 3, dtype=torch.long), torch.tensor([[0, 2]]), torch.float16)
    assert m.dtype == torch.float16 and (m[0, 0, 0, :2] == 0).all()


def _naive(attn: torch.Tensor, span: torch.Tensor, ctx, tgt, has: torch.Tensor) -> torch.Tensor:
    """Per-sample, per-block Python loops following the reference's rules literally."""
    batch, length = attn.shape
    out = torch.zeros(batch, length, length, dtype=torch.bool)
    k = 0
    for b in range(batch):
        v0, v1 = int(span[b, 0]), int(span[b, 1])
        for r in range(length):
            for c in range(length):
                bidir = v0 <= r < v1 and v0 <= c < v1
                out[b, r, c] = (c <= r or bidir) and bool(attn[b, c])
        if not has[b]:
            continue
        out[b, :, v0:v1] = False  # rule 1
        for r in range(v0, length):  # rule 2
            for i in ctx[k].tolist():
                out[b, r, v0 + i] = True
        for block in tgt[k].tolist():  # rule 3
            for a in block:
                for c in block:
                    out[b, v0 + a, v0 + c] = True
        for r in range(v1, length):  # rule 4
            for block in tgt[k].tolist():
                for i in block:
                    out[b, r, v0 + i] = True
        k += 1
    return out


def test_vectorised_equals_naive_loop_on_random_inputs() -> None:
    g = make_generator("attention-test")
    grid, n = (4, 4), 16
    for trial in range(6):
        batch, length = 5, 30
        has = torch.rand(batch, generator=g) < 0.7
        has[trial % batch] = True
        attn = torch.ones(batch, length, dtype=torch.long)
        span = torch.zeros(batch, 2, dtype=torch.long)
        for b in range(batch):
            pad = int(torch.randint(0, 4, (1,), generator=g))
            if b % 2:  # right padding
                attn[b, length - pad :] = 0
                first = 0
            else:  # left padding
                attn[b, :pad] = 0
                first = pad
            if has[b]:
                v0 = first + int(torch.randint(0, 4, (1,), generator=g))
                span[b] = torch.tensor([v0, v0 + n])
        n_img = int(has.sum())
        if trial % 2:
            masks = sample_block_masks(
                grid, MaskSpec(num_targets=3, target_scale=(0.2, 0.3), min_keep=1), n_img, g
            )
            ctx, tgt = masks.context, masks.targets
        else:  # arbitrary (overlapping, unsorted) index sets
            ctx = torch.randint(0, n, (n_img, 5), generator=g)
            tgt = torch.randint(0, n, (n_img, 2, 3), generator=g)
        got = jepa_allowed(base_allowed(attn, span, True), span, ctx, tgt, has)
        assert torch.equal(got, _naive(attn, span, ctx, tgt, has)), f"trial {trial}"


def test_rows_without_image_are_unchanged() -> None:
    attn = torch.ones(2, 10, dtype=torch.long)
    span = torch.tensor([[0, 0], [2, 6]])
    has = torch.tensor([False, True])
    base = base_allowed(attn, span, True)
    got = jepa_allowed(base, span, torch.tensor([[0, 1]]), torch.tensor([[[2, 3]]]), has)
    assert torch.equal(got[0], base[0])
    assert not torch.equal(got[1], base[1])


def test_zero_target_blocks_and_full_context_equal_bidirectional_base() -> None:
    attn = torch.tensor([[1] * 9, [1] * 7 + [0] * 2])
    span = torch.tensor([[1, 5], [0, 4]])
    has = torch.tensor([True, True])
    base = base_allowed(attn, span, True)
    ctx = torch.arange(4).expand(2, 4)
    got = jepa_allowed(base, span, ctx, torch.zeros(2, 0, 0, dtype=torch.long), has)
    assert torch.equal(got, base)


def test_no_image_in_batch_returns_base() -> None:
    attn = torch.ones(2, 5, dtype=torch.long)
    span = torch.zeros(2, 2, dtype=torch.long)
    base = base_allowed(attn, span, True)
    got = jepa_allowed(
        base,
        span,
        torch.zeros(0, 3, dtype=torch.long),
        torch.zeros(0, 2, 2, dtype=torch.long),
        torch.tensor([False, False]),
    )
    assert torch.equal(got, base)
