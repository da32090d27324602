"""Multiblock sampler (paper-spec §4, §13 "Sampler")."""

from __future__ import annotations

import pytest
import torch

from jarvis.masking import BlockMasks, MaskSpec, block_size, check_spec, sample_block_masks, size_from_r
from jarvis.seeding import make_generator

GRID = (24, 24)
REF = MaskSpec()  # the reference defaults


def _sample(seed: int = 0, grid: tuple[int, int] = GRID, spec: MaskSpec = REF, batch: int = 8) -> BlockMasks:
    return sample_block_masks(grid, spec, batch, make_generator("test", seed))


def test_shapes_and_index_range() -> None:
    m = _sample()
    assert m.context.dtype == torch.long and m.targets.dtype == torch.long
    assert m.context.shape[0] == 8 and m.targets.shape[:2] == (8, 4)
    n = GRID[0] * GRID[1]
    assert int(m.context.min()) >= 0 and int(m.context.max()) < n
    assert int(m.targets.min()) >= 0 and int(m.targets.max()) < n


def test_every_block_has_more_than_min_keep() -> None:
    for seed in range(5):
        m = _sample(seed)
        assert m.context.shape[1] > REF.min_keep
        assert m.targets.shape[2] > REF.min_keep


def test_context_and_targets_disjoint_and_sorted() -> None:
    for seed in range(10):
        m = _sample(seed)
        assert m.num_relaxed == 0
        for b in range(m.context.shape[0]):
            ctx = m.context[b]
            assert torch.equal(ctx, ctx.sort().values) and ctx.unique().numel() == ctx.numel()
            assert not torch.isin(ctx, m.targets[b].flatten()).any()


def test_target_blocks_are_same_size_rectangles_from_the_first_draw() -> None:
    """Sizes are drawn once per batch, target first, from the coupled draw (paper-spec §4.1 step 2)."""
    seed = 3
    r_target = float(torch.rand(1, generator=make_generator("test", seed))[0])
    h, w = size_from_r(GRID, REF.target_scale, REF.aspect_ratio, r_target)
    m = _sample(seed)
    assert m.targets.shape[2] == h * w  # all targets share (h, w): nothing truncated
    for block in m.targets.flatten(0, 1):
        rows, cols = block // GRID[1], block % GRID[1]
        assert int(rows.max() - rows.min()) + 1 == h and int(cols.max() - cols.min()) + 1 == w


def test_coupled_draw_pinned() -> None:
    """One r sets scale and aspect; values from paper-spec §4.2."""
    assert size_from_r(GRID, REF.target_scale, REF.aspect_ratio, 0.0) == (8, 11)
    assert size_from_r(GRID, REF.target_scale, REF.aspect_ratio, 0.9999) == (13, 9)
    seen = []
    for i in range(10000):
        s = size_from_r(GRID, REF.target_scale, REF.aspect_ratio, i / 10000)
        if not seen or seen[-1] != s:
            seen.append(s)
    assert seen[-7:] == [(9, 10), (10, 10), (10, 9), (11, 10), (11, 9), (12, 9), (13, 9)]
    assert set(seen[:-7]) == {(8, 11), (8, 10)}
    ctx = {size_from_r(GRID, REF.context_scale, (1.0, 1.0), i / 1000) for i in range(1000)}
    assert ctx == {(22, 22), (23, 23)}
    assert size_from_r(GRID, REF.context_scale, (1.0, 1.0), 0.81) == (23, 23)
    assert size_from_r((27, 27), REF.target_scale, REF.aspect_ratio, 0.0) == (9, 12)
    # block_size consumes exactly one uniform from the generator.
    r = float(torch.rand(1, generator=make_generator(7))[0])
    assert block_size(GRID, REF.target_scale, REF.aspect_ratio, make_generator(7)) == size_from_r(
        GRID, REF.target_scale, REF.aspect_ratio, r
    )


def test_last_row_and_column_never_covered() -> None:
    """The exclusive upper bound quirk inherited from I-JEPA (paper-spec §4.2)."""
    covered = torch.zeros(GRID[0] * GRID[1], dtype=torch.bool)
    for seed in range(20):
        m = _sample(seed)
        covered[m.context.flatten()] = True
        covered[m.targets.flatten()] = True
    grid = covered.view(GRID)
    assert not grid[-1].any() and not grid[:, -1].any()
    assert grid[:-1, :-1].all()


def test_context_truncated_to_batch_minimum() -> None:
    m = _sample(1, batch=16)
    # The batch minimum is reached by some image, so its context list is a complete (block - targets) set:
    # every kept row is a raster-order prefix, i.e. all Kc entries are valid, unique and sorted.
    assert m.context.shape == (16, m.context.shape[1])
    assert all(m.context[b].unique().numel() == m.context.shape[1] for b in range(16))


def test_same_generator_same_masks_and_different_seeds_differ() -> None:
    a, b, c = _sample(5), _sample(5), _sample(6)
    assert torch.equal(a.context, b.context) and torch.equal(a.targets, b.targets)
    same_context = a.context.shape == c.context.shape and torch.equal(a.context, c.context)
    same_targets = a.targets.shape == c.targets.shape and torch.equal(a.targets, c.targets)
    assert not (same_context and same_targets)


def test_global_rng_is_not_used() -> None:
    torch.manual_seed(0)
    a = _sample(9)
    torch.manual_seed(123)
    b = _sample(9)
    assert torch.equal(a.context, b.context) and torch.equal(a.targets, b.targets)


def test_impossible_min_keep_raises() -> None:
    # 8x8 grid: targets are 3x3 to 4x3 (9-12 patches); min_keep=10 loops forever in the reference.
    with pytest.raises(ValueError, match="min_keep=10"):
        _sample(0, grid=(8, 8))
    with pytest.raises(ValueError, match="min_keep"):
        check_spec((8, 8), MaskSpec(min_keep=10))
    m = _sample(0, grid=(8, 8), spec=MaskSpec(min_keep=4))
    assert m.targets.shape[2] > 4 and m.context.shape[1] > 4


def test_relaxation_rule_fires_and_still_returns_valid_blocks(caplog: pytest.LogCaptureFixture) -> None:
    # Targets that cover most of a small grid leave no room for a context with > min_keep patches.
    spec = MaskSpec(num_targets=4, target_scale=(0.4, 0.4), context_scale=(0.6, 0.6), min_keep=8)
    m = _sample(0, grid=(6, 6), spec=spec, batch=4)
    assert m.num_relaxed > 0
    assert m.context.shape[1] > 8
    assert "dropping constraint" in caplog.text


def test_targets_may_not_overlap_when_disabled() -> None:
    spec = MaskSpec(num_targets=3, targets_may_overlap=False, min_keep=4)
    for seed in range(5):
        m = _sample(seed, grid=(16, 16), spec=spec)
        if m.num_relaxed:
            continue
        for b in range(m.targets.shape[0]):
            flat = m.targets[b].flatten()
            assert flat.unique().numel() == flat.numel()


def test_zero_targets() -> None:
    m = _sample(0, spec=MaskSpec(num_targets=0))
    assert m.targets.shape == (8, 0, 0)


def test_maskspec_validation() -> None:
    with pytest.raises(ValueError, match="target_scale"):
        MaskSpec(target_scale=(0.3, 0.2))
    with pytest.raises(ValueError, match="num_targets"):
        MaskSpec(num_targets=-1)
