"""Accuracy per question type, next to its chance level (issue 12): which skills a model has, and which it guesses.

A benchmark's overall mixes skills; a model that counts at chance and reads colours well scores like one that does
a little of both. Types, from each answer row:

| type | questions |
|---|---|
| ``count`` | CV-Bench 2D ``Count`` |
| ``relation`` | CV-Bench 2D ``Relative location`` |
| ``depth``, ``distance`` | CV-Bench 3D ``Depth``, ``Distance`` |
| ``presence`` | POPE (every question), MME ``existence`` |
| ``colour`` | MME ``color``, GQA questions starting "What color" / "What colour" |
| ``shape`` | GQA questions starting "What shape" |
| ``mmvp`` | MMVP (every question, scored per question, not per pair) |

Chance is computed from each question, not per benchmark: 1/(number of options) for a multiple-choice question,
1/2 for a yes/no one (ground truth "yes" or "no" and no options); a type's chance is the mean over its questions,
i.e. the expected accuracy of a uniform guesser. An open-ended question (GQA's "What color is the X?") has **no**
chance level: such questions get their own type, suffixed ``(open)`` (``colour (open)``), whose chance is None, so
a type never mixes questions with and without one.

Correctness comes from the scorer's own verdicts (``incorrect``; per source for CV-Bench), so the numbers follow
the scorer mode; the scorers themselves are not touched (the evaluate stage adds ``question_types`` to
scores.json). Accuracy and chance are in percent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jarvis.eval.answers import CVBENCH_FAMILY
from jarvis.eval.scorers import CVBENCH_SOURCES

OPEN = " (open)"
_CVBENCH_TYPES = {"Count": "count", "Relative location": "relation", "Depth": "depth", "Distance": "distance"}
_MME_TYPES = {"existence": "presence", "color": "colour"}
_GQA_PREFIXES = (("what color", "colour"), ("what colour", "colour"), ("what shape", "shape"))
_OPTIONS = ("options", "choices", "text_options")  # CV-Bench, BLINK, MMVP (jarvis.eval.benchmarks.answer_row)


def question_type(benchmark: str, row: dict[str, Any]) -> str | None:
    """The type of one answer row (without the ``(open)`` suffix), or None for a question of no listed type."""
    if benchmark in CVBENCH_FAMILY:
        return _CVBENCH_TYPES.get(str(row.get("category")))
    if benchmark == "pope":
        return "presence"
    if benchmark == "mme":
        return _MME_TYPES.get(str(row.get("category")))
    if benchmark == "mmvp":
        return "mmvp"
    if benchmark == "gqa":
        text = str(row.get("prompt", "")).strip().lower()
        return next((t for prefix, t in _GQA_PREFIXES if text.startswith(prefix)), None)
    return None


def chance(row: dict[str, Any]) -> float | None:
    """A uniform guesser's chance of answering this question right, in [0, 1]; None for an open-ended one."""
    options = next((row[k] for k in _OPTIONS if row.get(k)), None)
    if options:
        return 1 / len(options)
    gt = row.get("gt_answer")
    if isinstance(gt, str) and gt.strip().lower() in ("yes", "no"):
        return 0.5
    return None


def row_correct(benchmark: str, rows: Sequence[dict[str, Any]], scores: dict[str, Any]) -> list[bool] | None:
    """Each row's verdict from a scores dict of ``rows``, or None when the scorer keeps none."""
    if benchmark in ("cvbench_2d", "cvbench_3d", "cvbench"):  # verdicts per source, in each source's row order
        wrong = {k: set(s["incorrect"]) for k, s in scores["sources"].items()}
        seen = dict.fromkeys(wrong, 0)
        out = []
        for r in rows:
            src = CVBENCH_SOURCES[r["source"]]
            out.append(seen[src] not in wrong[src])
            seen[src] += 1
        return out
    if "incorrect" not in scores:
        return None
    wrong = set(scores["incorrect"])
    return [i not in wrong for i in range(len(rows))]


def question_types(benchmark: str, rows: Sequence[dict[str, Any]], scores: dict[str, Any]) -> dict[str, Any]:
    """type -> {correct, total, accuracy, chance} over the rows of one benchmark (first-appearance order).

    ``chance`` is None for an open type (the ``(open)`` suffix); ``{}`` when no row has a type or the scorer keeps
    no verdicts.
    """
    oks = row_correct(benchmark, rows, scores)
    if oks is None:
        return {}
    acc: dict[str, dict[str, Any]] = {}
    for row, ok in zip(rows, oks, strict=True):
        base = question_type(benchmark, row)
        if base is None:
            continue
        p = chance(row)
        t = acc.setdefault(base if p is not None else base + OPEN, {"correct": 0, "total": 0, "chance_sum": 0.0})
        t["correct"] += int(ok)
        t["total"] += 1
        t["chance_sum"] += p or 0.0
    return {name: {"correct": t["correct"], "total": t["total"], "accuracy": 100 * t["correct"] / t["total"],
                   "chance": None if name.endswith(OPEN) else 100 * t["chance_sum"] / t["total"]}
            for name, t in acc.items()}
