"""The JEPA attention rules as a FlexAttention block mask equal the dense additive mask (issue 13, "GPU, free JEPA").

torch 2.14.1 has no FlexAttention backward on the CPU ("FlexAttention does not support backward on CPU"), so on the
CPU the test compares forward numbers (losses of JEPA and plain steps, greedy answers); gradients are compared in
the ``gpu`` test, which runs where CUDA is.
"""

from __future__ import annotations

import pytest
import torch

from jarvis.model.attention import base_allowed, block_mask, jepa_allowed
from jarvis.model.freeze import set_trainable
from test_model import batch, build, masks  # tests dir is on sys.path under pytest

pytestmark = pytest.mark.slow  # each FlexAttention shape compiles once (~20 s on 2 cores)


def _with(model, implementation: str):
    model.language_model.set_attn_implementation(implementation)
    return model


def _losses(model, b, m) -> list[torch.Tensor]:
    out = model(**b, **m)
    return [out.loss, out.loss_ntp, out.loss_jepa]


def test_block_mask_keeps_exactly_the_allowed_pairs() -> None:
    """Every (query, key) pair of the block mask's rules is the dense matrix's, JEPA rules included."""
    model = build()
    b, m = batch(model), masks()
    _, span, _ = model.embed(b["input_ids"], b["pixel_values"], None)
    has = span[:, 1] > span[:, 0]
    allowed = jepa_allowed(base_allowed(b["attention_mask"], span, True), span, m["jepa_context"],
                           m["jepa_targets"], has)
    bm = block_mask(allowed, block_size=8)
    batch_size, q, k = allowed.shape
    rows, cols = torch.meshgrid(torch.arange(q), torch.arange(k), indexing="ij")
    for i in range(batch_size):
        rule = bm.mask_mod(torch.tensor(i), torch.tensor(0), rows, cols)
        assert torch.equal(rule, allowed[i])
    assert bm.shape[-2:] == (q, k)


def test_flex_forward_equals_dense_on_the_cpu() -> None:
    """JEPA step (short sequence), full-sequence JEPA step and a plain step: the same losses under both masks."""
    torch.manual_seed(0)
    model = build(layers=2)
    b, m = batch(model, seed=1), masks(seed=2)
    with torch.no_grad():
        dense = [_losses(model, b, m), model(**b, **m, drop_unattended=False).loss, model(**b).loss]
        _with(model, "flex_attention")
        probe = torch.ones(1, 4, 4, dtype=torch.bool)
        assert type(model.lm_mask(probe, torch.float32)).__name__ == "BlockMask"  # the flex path really runs
        flex = [_losses(model, b, m), model(**b, **m, drop_unattended=False).loss, model(**b).loss]
    for d, f in zip(dense[0], flex[0], strict=True):
        torch.testing.assert_close(f, d, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(flex[1], dense[1], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(flex[2], dense[2], rtol=1e-5, atol=1e-6)


@pytest.mark.gpu
def test_flex_losses_and_gradients_equal_dense_on_cuda() -> None:
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA: torch 2.14.1 has no FlexAttention backward on the CPU")
    torch.manual_seed(0)
    model = build(layers=3).cuda()
    set_trainable(model, {"llm", "vision", "projector", "mask_token", "jepa_head"})
    b = {k: v.cuda() for k, v in batch(model, seed=1).items()}
    m = {k: v.cuda() for k, v in masks(seed=2).items()}

    def step() -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
        model.zero_grad(set_to_none=True)
        losses = _losses(model, b, m)
        losses[0].backward()
        return [x.detach() for x in losses], {n: p.grad.clone() for n, p in model.named_parameters()
                                              if p.grad is not None}

    dense, dense_grads = step()
    flex, flex_grads = step() if _with(model, "flex_attention") else (None, None)
    for d, f in zip(dense, flex, strict=True):
        torch.testing.assert_close(f, d, rtol=1e-5, atol=1e-6)
    assert set(flex_grads) == set(dense_grads)
    for name, grad in dense_grads.items():
        torch.testing.assert_close(flex_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
