"""The report's benchmark groups (Vision, General, Knowledge, OCR) and their averages.

The reference code tabulates per benchmark only (``cambrian/eval/scripts/tabulate.py`` has no groups), and the
JARVIS paper's own list is not stated (paper-spec §10). The groups here are those of HeRA, by the same authors on
the same harness (paper-spec §10, §12.2): each group average is the plain mean of its members' tabulated numbers
(tabulate.py's units, percent), with MME's Perception score (out of 2000) divided by 20 first. HeRA's Table 4
group averages follow from its Table 9 numbers this way (tests/test_groups.py).

CV-Bench counts as one member, ``((ADE + COCO)/2 + Omni3D)/2`` (benchmarks-spec §2.3): taken from ``cvbench``,
else from ``cvbench_2d`` and ``cvbench_3d``, else from ``ade``, ``coco`` and ``omni``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

GROUPS: dict[str, tuple[str, ...]] = {
    "Vision": ("realworldqa", "mmvp", "blink", "vstar", "cvbench"),
    "General": ("gqa", "pope", "mme", "mmbench_en", "seed"),
    "Knowledge": ("scienceqa", "mmmu", "mathvista", "ai2d"),
    "OCR": ("chartqa", "ocrbench", "textvqa", "vizwiz"),
}
SCALE: dict[str, float] = {"mme": 1 / 20}  # MME Perception (max 2000) on a 0-100 scale


def _number(bench: str, value: Any) -> float:
    """A benchmark's tabulated number: a float, or a scores dict's ``overall``; NaN fails loudly."""
    x = float(value["overall"] if isinstance(value, Mapping) else value)
    if math.isnan(x):
        raise ValueError(f"{bench}: score is NaN; a group average cannot include it")
    return x


def member_value(bench: str, scores: Mapping[str, Any]) -> float | None:
    """The number ``bench`` contributes to its group (MME scaled), or None when it was not evaluated."""
    if bench == "cvbench":
        if "cvbench" in scores:
            return _number("cvbench", scores["cvbench"])
        if "cvbench_2d" in scores and "cvbench_3d" in scores:
            return (
                _number("cvbench_2d", scores["cvbench_2d"]) + _number("cvbench_3d", scores["cvbench_3d"])
            ) / 2
        if all(k in scores for k in ("ade", "coco", "omni")):
            two_d = (_number("ade", scores["ade"]) + _number("coco", scores["coco"])) / 2
            return (two_d + _number("omni", scores["omni"])) / 2
        return None
    if bench not in scores:
        return None
    return _number(bench, scores[bench]) * SCALE.get(bench, 1.0)


def group_averages(scores: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per group: each member's value, the members missing, and two averages.

    ``scores`` maps benchmark -> tabulated number (or its scores dict from ``score_answers``). ``average`` is the
    group average as the paper tables report it, and is None unless every member was evaluated; ``partial_average``
    is the mean over the members present (None if there are none), to be shown labelled with ``n_present``.
    """
    out: dict[str, dict[str, Any]] = {}
    for group, members in GROUPS.items():
        values = {m: v for m in members if (v := member_value(m, scores)) is not None}
        missing = [m for m in members if m not in values]
        mean = sum(values.values()) / len(values) if values else None
        out[group] = {
            "members": list(members),
            "values": values,
            "missing": missing,
            "n_present": len(values),
            "average": None if missing else mean,
            "partial_average": mean,
        }
    return out
