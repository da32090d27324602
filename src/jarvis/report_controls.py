"""The report's controls (issue 12): blind rows, question types against chance, and answer-distribution flags.

Before issue 12 every arm of the tiny default answered "Yes" to every POPE question and "A" to every multiple-choice
one, and the report showed plausible numbers. Three controls say when a score is not vision:

- **blind rows** ``<arm> (blind)``: the same models evaluated with blank images (``evaluation.blind``,
  jarvis.eval.controls.blank_image), pooled over seeds like the arm's own row. An arm no better than its blind row
  answers from the text alone. They are ordinary rows of the scores table, never part of a delta.
- **question types**: each run's ``question_types`` (jarvis.eval.qtypes, written into scores.json by the evaluate
  stage) pooled over its benchmarks (correct and total summed), then over seeds; a chance row beside them.
- **answer flags**: a run whose most common answer (stripped, lowercased) is at least ``ANSWER_FLAG_SHARE`` of its
  answers on a benchmark; logged as a WARNING, marked in the tables, listed in a Flags section.

The pooling into mean ± interval is jarvis.report's (one definition); this module reads and reduces.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from jarvis.eval.controls import ANSWER_FLAG_SHARE, is_flagged
from jarvis.eval.qtypes import OPEN

__all__ = ["BLIND_SUFFIX", "FLAG", "OPEN", "answer_flags", "blind_row", "chance_row", "flags_markdown", "run_types"]

log = logging.getLogger(__name__)

BLIND_SUFFIX = " (blind)"
FLAG = "⚠"  # the marker on a flagged cell of table.md


def blind_row(arm: str) -> str:
    """The row name of ``arm`` evaluated with blank images."""
    return arm + BLIND_SUFFIX


def run_types(per_bench: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """type -> {correct, total, accuracy, chance} of one run, its benchmarks' ``question_types`` pooled (chance
    weighted by questions; None for an open type). Benchmarks whose scores carry no ``question_types`` add
    nothing."""
    acc: dict[str, dict[str, Any]] = {}
    for scores in per_bench.values():
        for name, c in (scores.get("question_types") or {}).items():
            a = acc.setdefault(name, {"correct": 0, "total": 0, "chance_sum": 0.0, "open": False})
            a["correct"] += int(c["correct"])
            a["total"] += int(c["total"])
            a["open"] |= c["chance"] is None
            a["chance_sum"] += 0.0 if c["chance"] is None else float(c["chance"]) * int(c["total"])
    return {name: {"correct": a["correct"], "total": a["total"], "accuracy": 100 * a["correct"] / a["total"],
                   "chance": None if a["open"] else a["chance_sum"] / a["total"]}
            for name, a in acc.items() if a["total"]}


def chance_row(runs: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, float | None]:
    """type -> its chance level in percent (the mean over runs, which share their questions), None when open."""
    out: dict[str, float | None] = {}
    for name in dict.fromkeys(t for r in runs.values() for t in r):
        values = [r[name]["chance"] for r in runs.values() if name in r]
        out[name] = None if any(v is None for v in values) else sum(values) / len(values)
    return out


def answer_flags(dists: Mapping[str, Mapping[str, Mapping[str, Any]]],
                 arm_seed: Callable[[str], tuple[str, str]]) -> list[dict[str, Any]]:
    """Every (run, benchmark) whose top answer reaches ANSWER_FLAG_SHARE, each logged as a WARNING. ``dists`` is
    run -> benchmark -> ``answer_distribution``; ``arm_seed`` names a run's arm and seed."""
    flags = []
    for run in sorted(dists):
        for bench, d in sorted(dists[run].items()):
            if not is_flagged(float(d["top_share"])):  # the share decides, not a stored verdict
                continue
            arm, seed = arm_seed(run)
            flag = {"run": run, "arm": arm, "seed": seed, "benchmark": bench, "answer": d["top_answer"],
                    "share": float(d["top_share"]), "n": int(d["n"])}
            log.warning("answer flag: %s seed %s %s: %r is %.1f%% of %d answers (>= %.0f%%)", arm, seed, bench,
                        flag["answer"], 100 * flag["share"], flag["n"], 100 * ANSWER_FLAG_SHARE)
            flags.append(flag)
    return flags


def flags_markdown(flags: list[dict[str, Any]], n_checked: int) -> str:
    lines = [f"### Flags: one answer for (nearly) everything ({FLAG}: the top answer is >= "
             f"{100 * ANSWER_FLAG_SHARE:.0f} % of a run's answers on a benchmark)", ""]
    if not flags:
        return "\n".join(lines + [f"None of the {n_checked} (run, benchmark) answer sets is flagged."]) + "\n"
    lines += [f"- {FLAG} {f['arm']} seed {f['seed']}, {f['benchmark']}: {f['answer']!r} is {100 * f['share']:.1f} %"
              f" of {f['n']} answers" for f in flags]
    return "\n".join(lines) + "\n"


QTYPES_NOTE = ("Accuracy per question type (%, jarvis.eval.qtypes), mean ± 95 % CI over seeds. Chance: "
               "1/options per multiple-choice question, 1/2 per yes/no one, averaged over the type's questions; "
               "`(open)` types are open-ended questions, which have no chance level (—).\n")
