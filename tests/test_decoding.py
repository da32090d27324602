"""Decoding length per benchmark (jarvis.eval.decoding) and its params.yaml override."""

from __future__ import annotations

import copy

import pytest

from jarvis.config import BENCHMARKS, ConfigError, load_params, load_raw, validate_params
from jarvis.eval.decoding import MAX_NEW_TOKENS, max_new_tokens

# The ``--max_new_tokens`` defaults of cambrian/eval/eval/<b>/<b>_eval.py (aimagelab/JARVIS 17426c1), read off the
# scripts: realworldqa_eval.py:192, vstar_eval.py:170, mmbench_en_eval.py:183, seed_eval.py:166,
# scienceqa_eval.py:196, ai2d_eval.py:168, textvqa_eval.py:166, chartqa_eval.py:152, ocrbench_eval.py:182,
# mmvp_eval.py:196, blink_eval.py:147, mme_eval.py:160, mmstar_eval.py:160, pope_eval.py:195, gqa_eval.py:156,
# ade_eval.py:148, omni_eval.py:174.
REFERENCE = {
    "realworldqa": 512,
    "vstar": 32,
    "mmbench_en": 512,
    "seed": 512,
    "scienceqa": 512,
    "ai2d": 512,
    "textvqa": 512,
    "chartqa": 128,
    "ocrbench": 512,
    "mmvp": 512,
    "blink": 32,
    "mme": 32,
    "mmstar": 128,
    "pope": 128,
    "gqa": 128,
    "ade": 512,
    "omni": 512,
}


def test_reference_lengths() -> None:
    for bench, n in REFERENCE.items():
        assert max_new_tokens(bench) == n, bench
    assert set(BENCHMARKS) <= set(MAX_NEW_TOKENS)  # every schema benchmark has a length


def test_override_and_unknown() -> None:
    assert max_new_tokens("mmvp", {"mmvp": 16, "blink": 4}) == 16
    assert max_new_tokens("gqa", {"mmvp": 16}) == 128
    with pytest.raises(ValueError, match="no decoding length"):
        max_new_tokens("not_a_benchmark")
    with pytest.raises(ValueError, match=">= 1"):
        max_new_tokens("mmvp", {"mmvp": 0})


def test_loader_lengths_match_the_table() -> None:
    """The lengths the loaders put on questions are the table's (one place to read them)."""
    from jarvis.eval import benchmarks_ext

    assert {b: MAX_NEW_TOKENS[b] for b in benchmarks_ext.LOADERS} == {
        b: REFERENCE[b] for b in benchmarks_ext.LOADERS
    }


def test_params_override_is_validated(root) -> None:
    raw = load_raw(root / "params.yaml")
    assert (
        load_params(root / "params.yaml").evaluation.max_new_tokens == {}
    )  # default: the reference's lengths
    ok = copy.deepcopy(raw)
    ok["evaluation"]["max_new_tokens"] = {"vstar": 64}
    assert validate_params(ok).evaluation.max_new_tokens == {"vstar": 64}
    for bad_value, match in (({"vstarr": 64}, "vstarr"), ({"vstar": 0}, "max_new_tokens")):
        bad = copy.deepcopy(raw)
        bad["evaluation"]["max_new_tokens"] = bad_value
        with pytest.raises(ConfigError, match=match):
            validate_params(bad)
