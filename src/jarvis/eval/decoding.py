"""Decoding length per benchmark, as the reference's inference scripts set it (benchmarks-spec §2, §2.9).

Each ``cambrian/eval/eval/<b>/<b>_eval.py`` of aimagelab/JARVIS 17426c1 declares its own ``--max_new_tokens``
default, and ``eval_cambrian_single_benchmark.sh`` never overrides it, so the default is what a paper run uses.
Line numbers are those of the ``parser.add_argument("--max_new_tokens", ...)`` line of each script.
``params.yaml``'s ``evaluation.max_new_tokens`` maps benchmark -> length to override an entry. Generation stops at
EOS (``JarvisForCausalLM.generate_greedy``), so a long limit costs nothing once every answer in a batch has ended.
"""

from __future__ import annotations

from collections.abc import Mapping

MAX_NEW_TOKENS: dict[str, int] = {
    "gqa": 128,  # gqa_eval.py:156
    "vizwiz": 128,  # spec §2.9
    "scienceqa": 512,  # scienceqa_eval.py:196
    "textvqa": 512,  # textvqa_eval.py:166
    "pope": 128,  # pope_eval.py:195
    "mme": 32,  # mme_eval.py:160
    "mmbench_en": 512,  # mmbench_en_eval.py:183
    "mmbench_cn": 128,  # spec §2.9
    "seed": 512,  # seed_eval.py:166
    "mmmu": 512,  # spec §2.9
    "mathvista": 512,  # spec §2.9
    "ai2d": 512,  # ai2d_eval.py:168
    "chartqa": 128,  # chartqa_eval.py:152
    "ocrbench": 512,  # ocrbench_eval.py:182
    "mmstar": 128,  # mmstar_eval.py:160
    "realworldqa": 512,  # realworldqa_eval.py:192
    "qbench": 32,  # spec §2.9
    "blink": 32,  # blink_eval.py:147
    "mmvp": 512,  # mmvp_eval.py:196
    "vstar": 32,  # vstar_eval.py:170
    "ade": 512,  # ade_eval.py:148
    "coco": 512,  # coco_eval.py:149
    "omni": 512,  # omni_eval.py:174
    # Our CV-Bench views are scored from the ade/coco/omni questions, which all ask 512.
    "cvbench_2d": 512,
    "cvbench_3d": 512,
    "cvbench": 512,
}


def max_new_tokens(benchmark: str, overrides: Mapping[str, int] | None = None) -> int:
    """The decoding length of ``benchmark``: ``overrides[benchmark]`` if set (params.yaml), else the reference's."""
    if overrides and benchmark in overrides:
        value = int(overrides[benchmark])
        if value < 1:
            raise ValueError(f"max_new_tokens for {benchmark!r} must be >= 1, got {value}")
        return value
    if benchmark not in MAX_NEW_TOKENS:
        raise ValueError(
            f"no decoding length known for benchmark {benchmark!r}; known: {sorted(MAX_NEW_TOKENS)}"
        )
    return MAX_NEW_TOKENS[benchmark]
