"""Vectorised visual splice (paper-spec §5) == naive per-token loop."""

from __future__ import annotations

import pytest
import torch

from jarvis.model.embedding import splice_visual, visual_span

IMG = 7


def _naive(token_embeds, input_ids, visual):
    out = token_embeds.clone()
    spans = []
    k = 0
    for b in range(input_ids.shape[0]):
        pos = [t for t in range(input_ids.shape[1]) if int(input_ids[b, t]) == IMG]
        if pos:
            for j, t in enumerate(pos):
                out[b, t] = visual[k, j]
            spans.append([pos[0], pos[-1] + 1])
            k += 1
        else:
            spans.append([0, 0])
    return out, torch.tensor(spans)


def _batch(g: torch.Generator, n: int = 4):
    ids = torch.randint(0, IMG, (4, 12), generator=g)  # no accidental image ids
    ids[0, 2 : 2 + n] = IMG  # image after a prefix, right padding below
    ids[2, 0:n] = IMG  # image at position 0 (stage-1 plain template)
    ids[3, 5 : 5 + n] = IMG  # left padded sample
    ids[0, -2:] = 0
    ids[3, :3] = 0
    return ids


def test_splice_equals_naive_loop_including_padding() -> None:
    g = torch.Generator().manual_seed(0)
    ids = _batch(g)
    tok = torch.randn(4, 12, 6, generator=g)
    vis = torch.randn(3, 4, 6, generator=g)
    tok_before, vis_before = tok.clone(), vis.clone()
    got, span = splice_visual(tok, ids, IMG, vis)
    want, want_span = _naive(tok, ids, vis)
    assert torch.equal(got, want) and torch.equal(span, want_span)
    assert torch.equal(tok, tok_before) and torch.equal(vis, vis_before)  # caller's tensors untouched


def test_visual_span_without_images() -> None:
    span = visual_span(torch.zeros(2, 5, dtype=torch.bool))
    assert torch.equal(span, torch.zeros(2, 2, dtype=torch.long))
    tok = torch.randn(2, 5, 3)
    got, span = splice_visual(tok, torch.zeros(2, 5, dtype=torch.long), IMG, None)
    assert torch.equal(got, tok)


def test_count_mismatch_fails_loudly() -> None:
    g = torch.Generator().manual_seed(1)
    ids = _batch(g)
    tok = torch.randn(4, 12, 6)
    with pytest.raises(ValueError, match="visual blocks"):
        splice_visual(tok, ids, IMG, torch.randn(2, 4, 6))
    with pytest.raises(ValueError, match="consecutive image tokens"):
        splice_visual(tok, ids, IMG, torch.randn(3, 5, 6))
    bad = ids.clone()
    bad[2, 1] = 1  # a hole in the visual span
    bad[2, 4] = IMG
    with pytest.raises(ValueError, match="consecutive image tokens"):
        splice_visual(tok, bad, IMG, torch.randn(3, 4, 6))
