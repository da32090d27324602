"""Benchmark scorers, Cambrian-compatible (``compat``) or corrected (``fixed``, the default).

Implements benchmarks-spec.md §2 (what each reference scorer computes) and §3 (the corrections). ``compat``
reproduces the numbers of aimagelab/JARVIS 17426c1 ``cambrian/eval/eval/<b>/<b>_test.py`` and ``tabulate.py``
bit for bit, quirks included (golden vectors: spec §9). ``fixed`` applies the corrections, each marked
``fix #N`` below with its row of the spec's §3 table.

Entry point: ``score_answers(benchmark, rows, mode) -> dict``; the CLI ``jarvis score`` goes through
``add_score_arguments`` / ``run_score``. Every scores dict shares one schema (fix #1: a fixed schema instead of
appended CSV rows): ``benchmark, mode, metric, overall, n, categories, unparseable, unparseable_rate, incorrect``,
plus benchmark-specific keys and, in compat mode, ``csv_row`` (the reference's CSV columns minus model/time).
``unparseable`` always counts answers that the robust (fixed) parser cannot read, in both modes.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from jarvis.eval import parsing as P
from jarvis.eval import scorers_ext

Mode = Literal["compat", "fixed"]
MODES: tuple[str, ...] = ("compat", "fixed")

MME_PERCEPTION = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
MME_COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")

# CV-Bench source names -> scorer file; the synthetic world uses its own source names (spec §6: SynthFlat and
# SynthClutter play ADE and COCO, Synth3D plays Omni3D) so the official combined formula applies unchanged.
CVBENCH_SOURCES = {
    "ADE20K": "ade",
    "SynthFlat": "ade",
    "COCO": "coco",
    "SynthClutter": "coco",
    "Omni3D": "omni",
    "Synth3D": "omni",
}


# --------------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------------


def _field(row: dict, key: str, line: int, benchmark: str) -> Any:
    if key not in row:
        raise ValueError(f"{benchmark}: answer line {line + 1} has no {key!r} field (keys: {sorted(row)})")
    return row[key]


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown scorer mode {mode!r}; expected one of {MODES}")


def _categories(per_row: list[tuple[str, bool]]) -> dict[str, dict[str, Any]]:
    """Per-category integer counts, in first-appearance order (the reference's column order)."""
    out: dict[str, dict[str, Any]] = {}
    for cat, ok in per_row:
        c = out.setdefault(cat, {"correct": 0, "total": 0})
        c["correct"] += int(ok)
        c["total"] += 1
    for c in out.values():
        c["fraction"] = c["correct"] * 1.0 / c["total"]
        c["accuracy"] = 100 * c["fraction"]
    return out


def _result(
    benchmark: str,
    mode: str,
    metric: str,
    overall: float,
    oks: list[bool],
    cats: dict,
    unparseable: int,
    **extra: Any,
) -> dict[str, Any]:
    n = len(oks)
    return {
        "benchmark": benchmark,
        "mode": mode,
        "metric": metric,
        "overall": overall,
        "n": n,
        "correct": int(sum(oks)),
        "categories": cats,
        "unparseable": unparseable,
        "unparseable_rate": unparseable / n if n else 0.0,
        "incorrect": [i for i, ok in enumerate(oks) if not ok],
        **extra,
    }


def _dict_cols(cats: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The reference's per-category CSV cells: a Python dict's str(), read back with eval by tabulate.py."""
    return {k: str({"accuracy": v["fraction"], "total": v["total"]}) for k, v in cats.items()}


def _require_rows(benchmark: str, rows: Sequence[dict]) -> None:
    if not rows:
        raise ValueError(f"{benchmark}: no answer rows to score")


# --------------------------------------------------------------------------------------------------------------
# multiple choice with per-category dict columns: ade / coco / omni / blink (spec §2.1, §2.2, §2.5)
# --------------------------------------------------------------------------------------------------------------


def _mcq_correct(bench: str, row: dict, line: int, mode: str) -> tuple[bool, bool]:
    """(correct, unparseable-by-the-fixed-parser) for one MCQ row."""
    answer = _field(row, "answer", line, bench)
    gt = P.gt_letter(_field(row, "gt_answer", line, bench))
    options = row.get("options" if bench != "blink" else "choices") or None
    fixed = P.letter_fixed(answer, options)
    if mode == "fixed":
        return fixed == gt, fixed is None
    if bench == "blink":
        ok = P.blink_compat(answer) == gt
    elif bench == "omni":
        ext = P.mcq_compat(answer, trailing=".:,")
        # Quirk (fix #5): a 1-char answer is compared with the raw, non-lowercased option text.
        ok = ext == gt or (options is not None and ext == options[ord(gt) - ord("a")])
    else:
        ok = P.mcq_compat(answer, trailing=".") == gt
    return ok, fixed is None


def _score_mcq(bench: str, rows: Sequence[dict], mode: str) -> dict[str, Any]:
    per_row = [_mcq_correct(bench, r, i, mode) for i, r in enumerate(rows)]
    oks = [ok for ok, _ in per_row]
    cats = _categories([(str(r.get("category", "")), ok) for r, ok in zip(rows, oks, strict=True)])
    frac = sum(oks) * 1.0 / len(oks)
    extra: dict[str, Any] = {}
    if mode == "compat":
        extra["csv_row"] = {"accuracy": frac, "total_count": len(oks), **_dict_cols(cats)}
    # tabulate.py multiplies the pooled fraction by 100 for the pivot (spec §2.3, §2.5).
    return _result(bench, mode, "accuracy", 100 * frac, oks, cats, sum(u for _, u in per_row), **extra)


# --------------------------------------------------------------------------------------------------------------
# CV-Bench tabulation (spec §2.3)
# --------------------------------------------------------------------------------------------------------------


def _pooled_2d(ade: dict, coco: dict, cat: str, mode: str) -> float:
    a, c = ade["categories"].get(cat), coco["categories"].get(cat)
    parts = [x for x in (a, c) if x is not None]
    if not parts:
        return float("nan")
    if mode == "compat":
        # Quirk (fix #2): counts are rebuilt as floor(fraction * n), which loses 1 for e.g. 15/22.
        hits = sum(math.floor(x["fraction"] * x["total"]) for x in parts)
    else:
        hits = sum(x["correct"] for x in parts)
    return hits / sum(x["total"] for x in parts) * 100


def cvbench_2d_table(ade: dict, coco: dict, mode: str = "fixed") -> dict[str, float]:
    """The 2D columns of tabulate.py's ``cvbench_<stem>.csv`` (spec §2.3), from ade and coco scores dicts."""
    _check_mode(mode)
    acc_ade, acc_coco = (100 * (s["correct"] * 1.0 / s["n"]) for s in (ade, coco))
    return {
        "Count 2D": _pooled_2d(ade, coco, "Count", mode),
        "Relative location 2D": _pooled_2d(ade, coco, "Relative location", mode),
        "Accuracy ADE": acc_ade,
        "Accuracy COCO": acc_coco,
        "Accuracy 2D": (acc_ade + acc_coco) / 2,
    }


def cvbench_table(ade: dict, coco: dict, omni: dict, mode: str = "fixed") -> dict[str, float]:
    """All columns of tabulate.py's ``cvbench_<stem>.csv`` plus the combined score (spec §2.3).

    ``ade``/``coco``/``omni`` are scores dicts from ``score_answers``. tabulate.py does not compute the combined
    score (fix #13); it is ((ADE + COCO)/2 + Omni)/2, from the dataset card.
    """
    out = cvbench_2d_table(ade, coco, mode)
    out["Depth 3D"] = omni["categories"].get("Depth", {}).get("accuracy", float("nan"))
    out["Distance 3D"] = omni["categories"].get("Distance", {}).get("accuracy", float("nan"))
    out["Accuracy 3D"] = 100 * (omni["correct"] * 1.0 / omni["n"])
    out["CV-Bench"] = (out["Accuracy 2D"] + out["Accuracy 3D"]) / 2
    return out


def _split_sources(rows: Sequence[dict], bench: str) -> dict[str, list[dict]]:
    split: dict[str, list[dict]] = {"ade": [], "coco": [], "omni": []}
    for i, r in enumerate(rows):
        src = _field(r, "source", i, bench)
        if src not in CVBENCH_SOURCES:
            raise ValueError(
                f"{bench}: line {i + 1} has unknown source {src!r}; expected one of {sorted(CVBENCH_SOURCES)}"
            )
        split[CVBENCH_SOURCES[src]].append(r)
    return split


def _score_cvbench(bench: str, rows: Sequence[dict], mode: str) -> dict[str, Any]:
    """CV-Bench 2D (ade + coco), 3D (omni) or the combined score, from rows carrying a ``source`` field."""
    split = _split_sources(rows, bench)
    need = {"cvbench_2d": ("ade", "coco"), "cvbench_3d": ("omni",), "cvbench": ("ade", "coco", "omni")}[bench]
    for part in need:
        if not split[part]:
            raise ValueError(
                f"{bench}: no rows from source {part!r} (sources: { {k: len(v) for k, v in split.items()} })"
            )
    extras = [k for k in split if split[k] and k not in need]
    if extras:
        raise ValueError(f"{bench}: unexpected rows from {extras}; score them as their own benchmark")
    subs = {k: _score_mcq(k, split[k], mode) for k in need}
    if bench == "cvbench_3d":
        omni = subs["omni"]
        return {**omni, "benchmark": bench, "sources": {"omni": omni}}
    wrong = {k: set(subs[k]["incorrect"]) for k in need}
    oks = [i not in wrong[k] for k in need for i in range(subs[k]["n"])]
    if bench == "cvbench_2d":
        table = cvbench_2d_table(subs["ade"], subs["coco"], mode)
        overall = table["Accuracy 2D"]
    else:
        table = cvbench_table(subs["ade"], subs["coco"], subs["omni"], mode)
        overall = table["CV-Bench"]
    cats = {f"{k}/{c}": v for k in need for c, v in subs[k]["categories"].items()}
    unp = sum(subs[k]["unparseable"] for k in need)
    res = _result(bench, mode, "accuracy", overall, oks, cats, unp, table=table, sources=subs)
    # Row indices refer to each source's own row order; keep the per-source lists only.
    res.pop("incorrect")
    return res


# --------------------------------------------------------------------------------------------------------------
# pair scorers: MMVP (spec §2.4) and MME (spec §2.6)
# --------------------------------------------------------------------------------------------------------------


def _pairs_by_id(rows: Sequence[dict], keys: Sequence[tuple], bench: str) -> dict[tuple, list[int]]:
    """Group line indices by explicit pair key and fail loudly on anything but exactly two per key (fix #12)."""
    groups: dict[tuple, list[int]] = {}
    for i, k in enumerate(keys):
        groups.setdefault(k, []).append(i)
    bad = {k: v for k, v in groups.items() if len(v) != 2}
    if bad:
        first = next(iter(bad.items()))
        raise ValueError(
            f"{bench}: {len(bad)} pair ids without exactly two questions, e.g. {first[0]!r} at lines "
            f"{[i + 1 for i in first[1]]}"
        )
    return groups


def _mmvp_pair_key(row: dict, line: int) -> tuple:
    if "pair_id" in row:
        return (row["pair_id"],)
    qid = row.get("question_id")
    if isinstance(qid, int):
        return (qid // 2,)  # Questions.csv row_index // 2 (fix #6)
    raise ValueError(f"mmvp: line {line + 1} has neither 'pair_id' nor an integer 'question_id' to pair by")


def _score_mmvp(rows: Sequence[dict], mode: str) -> dict[str, Any]:
    oks, unp = [], 0
    for i, r in enumerate(rows):
        answer = _field(r, "answer", i, "mmvp")
        gt = P.gt_letter(_field(r, "gt_answer", i, "mmvp"))
        options = list(_field(r, "text_options", i, "mmvp"))
        fixed = P.letter_fixed(answer, options)
        unp += fixed is None
        if mode == "fixed":
            oks.append(fixed == gt)
        else:
            ext = P.mcq_compat(answer, trailing=".:,", truncate=False)
            oks.append(ext == gt or ext == options[ord(gt) - ord("a")].lower())
    n = len(oks)
    if mode == "compat":
        # Quirk (fix #6/#12): a running parity counter over the merged file's line order.
        correct = 0
        for i, ok in enumerate(oks):
            if ok and (i % 2 == 0 or correct % 2 == 1):
                correct += 1
            elif not ok and i % 2 == 1 and correct % 2 == 1:
                correct -= 1
        acc = 100.0 * correct / n
        pairs_ok, n_pairs = correct // 2, n / 2
        extra: dict[str, Any] = {"csv_row": {"total": float(n), "correct": correct, "accuracy": acc}}
    else:
        groups = _pairs_by_id(rows, [_mmvp_pair_key(r, i) for i, r in enumerate(rows)], "mmvp")
        pairs_ok = sum(all(oks[i] for i in idx) for idx in groups.values())
        n_pairs = len(groups)
        acc = 100.0 * pairs_ok / n_pairs
        extra = {}
    cats = _categories([("all", ok) for ok in oks])
    return _result(
        "mmvp",
        mode,
        "pair_accuracy",
        acc,
        oks,
        cats,
        unp,
        pairs_correct=pairs_ok,
        pairs=n_pairs,
        question_accuracy=100.0 * sum(oks) / n,
        **extra,
    )


def _mme_category_group(cat: str) -> str:
    if cat in MME_PERCEPTION:
        return "Perception"
    if cat in MME_COGNITION:
        return "Cognition"
    raise ValueError(f"mme: unknown category {cat!r}; expected one of {MME_PERCEPTION + MME_COGNITION}")


def _score_mme(rows: Sequence[dict], mode: str) -> dict[str, Any]:
    cats_order: list[str] = []
    oks, unp = [], 0
    for i, r in enumerate(rows):
        answer = _field(r, "answer", i, "mme")
        gt = str(_field(r, "gt_answer", i, "mme")).lower()
        fixed = P.yes_no_fixed(answer)
        unp += fixed is None
        # fix #8: yes/no is the first word; compat needs an exact match after removing trailing dots.
        oks.append(fixed == gt if mode == "fixed" else P.exact_compat(answer) == gt)
        cat = str(_field(r, "category", i, "mme"))
        _mme_category_group(cat)
        if cat not in cats_order:
            cats_order.append(cat)
    plus: dict[str, int] = dict.fromkeys(cats_order, 0)
    if mode == "compat":
        # Quirk (fix #8): a per-category acc+ counter driven by the parity of the GLOBAL line index, so an odd
        # category size shifts the pairing of every later category.
        for i, (r, ok) in enumerate(zip(rows, oks, strict=True)):
            cat = str(r["category"])
            if ok and not (i % 2 == 1 and plus[cat] % 2 == 0):
                plus[cat] += 1
            elif not ok and i % 2 == 1 and plus[cat] % 2 == 1:
                plus[cat] -= 1
    else:
        keys = [(str(r["category"]), r.get("pair_id", r.get("question_id"))) for r in rows]
        if any(k[1] is None for k in keys):
            raise ValueError(
                "mme: fixed mode pairs by (category, image); rows need 'pair_id' or 'question_id'"
            )
        for (cat, _), idx in _pairs_by_id(rows, keys, "mme").items():
            plus[cat] += 2 * all(oks[i] for i in idx)  # counted per question, as the reference's acc+ counter
    categories: dict[str, dict[str, Any]] = {}
    groups = {"Perception": 0.0, "Cognition": 0.0}
    total_score = 0.0
    for cat in cats_order:
        idx = [i for i, r in enumerate(rows) if str(r["category"]) == cat]
        size = float(len(idx))
        hits = sum(oks[i] for i in idx)
        acc, acc_plus = hits / size, plus[cat] / size
        score = 100.0 * (acc + acc_plus)
        total_score += score
        groups[_mme_category_group(cat)] += score
        categories[cat] = {
            "acc_score": 100.0 * acc,
            "acc_plus_score": 100.0 * acc_plus,
            "score": score,
            "size": size,
            "correct": hits,
            "total": len(idx),
            "accuracy": 100.0 * acc,
        }
    accuracy = 100.0 * (sum(oks) / float(len(oks)))
    extra: dict[str, Any] = {
        "total_score": total_score,
        "accuracy": accuracy,
        "perception": groups["Perception"],
        "cognition": groups["Cognition"],
    }
    if mode == "compat":
        extra["csv_row"] = {
            "total_score": total_score,
            "accuracy": accuracy,
            **groups,
            **{
                c: str({k: v[k] for k in ("acc_score", "acc_plus_score", "score", "size")})
                for c, v in categories.items()
            },
        }
    # tabulate.py reports Perception (spec §2.6).
    return _result("mme", mode, "perception", groups["Perception"], oks, categories, unp, **extra)


# --------------------------------------------------------------------------------------------------------------
# single-token scorers: MMStar (§2.7), POPE (§2.8), GQA (§2.9)
# --------------------------------------------------------------------------------------------------------------


def _binary_stats(pred: list[str | None], gt: list[str]) -> dict[str, float]:
    """POPE's paper metrics with "yes" as the positive class (fix #10); unparseable answers count as "no"."""
    tp = sum(p == "yes" and g == "yes" for p, g in zip(pred, gt, strict=True))
    fp = sum(p == "yes" and g == "no" for p, g in zip(pred, gt, strict=True))
    fn = sum(p != "yes" and g == "yes" for p, g in zip(pred, gt, strict=True))
    n = len(gt)
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": 100 * precision,
        "recall": 100 * recall,
        "f1": 100 * f1,
        "yes_ratio": 100 * sum(p == "yes" for p in pred) / n if n else 0.0,
    }


def _score_token(bench: str, rows: Sequence[dict], mode: str) -> dict[str, Any]:
    oks, unp, preds, gts = [], 0, [], []
    for i, r in enumerate(rows):
        answer = _field(r, "answer", i, bench)
        gt = str(_field(r, "gt_answer", i, bench))
        if bench == "mmstar":
            options = r.get("options") or P.parse_mmstar_options(str(r.get("prompt", ""))) or None
            fixed: str | None = P.letter_fixed(answer, options)
            target = gt.lower()
        elif bench == "pope":
            fixed, target = P.yes_no_fixed(answer), gt.lower()
        else:  # gqa
            fixed = P.short_answer_fixed(answer) or None
            target = P.short_answer_fixed(gt)
        unp += fixed is None
        if mode == "fixed":
            ok = fixed == target  # fix #9: empty = unparseable = wrong, no crash
            preds.append(fixed)
        elif bench == "gqa":
            ok = P.exact_compat(answer) == gt.lower()
        else:
            ext = P.first_token_compat(answer)  # raises IndexError on an empty answer, as the reference
            ok = ext == gt.lower()
            preds.append(ext)
        oks.append(ok)
        gts.append(target)
    cats = _categories([(str(r.get("category", "all")), ok) for r, ok in zip(rows, oks, strict=True)])
    n = float(len(oks))
    acc = 100.0 * sum(oks) / n
    extra: dict[str, Any] = {}
    if mode == "compat":
        extra["csv_row"] = {"total": n, "correct": float(sum(oks)), "accuracy": acc}
    if bench == "pope":
        extra["pope"] = {"all": _binary_stats(preds, gts)}
        for cat in cats:
            idx = [i for i, r in enumerate(rows) if str(r.get("category", "all")) == cat]
            extra["pope"][cat] = _binary_stats([preds[i] for i in idx], [gts[i] for i in idx])
    return _result(bench, mode, "accuracy", acc, oks, cats, unp, **extra)


# --------------------------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------------------------

_SCORERS: dict[str, Callable[[Sequence[dict], str], dict[str, Any]]] = {
    "ade": lambda rows, mode: _score_mcq("ade", rows, mode),
    "coco": lambda rows, mode: _score_mcq("coco", rows, mode),
    "omni": lambda rows, mode: _score_mcq("omni", rows, mode),
    "blink": lambda rows, mode: _score_mcq("blink", rows, mode),
    "cvbench_2d": lambda rows, mode: _score_cvbench("cvbench_2d", rows, mode),
    "cvbench_3d": lambda rows, mode: _score_cvbench("cvbench_3d", rows, mode),
    "cvbench": lambda rows, mode: _score_cvbench("cvbench", rows, mode),
    "mmvp": _score_mmvp,
    "mme": _score_mme,
    "mmstar": lambda rows, mode: _score_token("mmstar", rows, mode),
    "pope": lambda rows, mode: _score_token("pope", rows, mode),
    "gqa": lambda rows, mode: _score_token("gqa", rows, mode),
    **scorers_ext.SCORERS,  # RealWorldQA, V*Bench, MMBench-EN, SEED, ScienceQA-IMG, AI2D, TextVQA, ChartQA, OCRBench
}
SCORABLE: tuple[str, ...] = tuple(_SCORERS)


def score_answers(
    benchmark: str, rows: list[dict], mode: str = "fixed", lines: Sequence[int] | None = None
) -> dict[str, Any]:
    """Score answer lines (Cambrian answers format, one dict per line, in file order) for one benchmark.

    Returns the scores dict described in the module docstring; ``overall`` is in the unit tabulate.py reports
    (percent, or the MME Perception sum out of 2000). Rows a scorer cannot read (missing fields, ``null`` or list
    answers, a ground truth naming no option...) raise ``ValueError`` naming the line: ``lines`` are the rows'
    1-based file line numbers (default: row position + 1).
    """
    from jarvis.eval.answers import validate_rows

    _check_mode(mode)
    if benchmark not in _SCORERS:
        raise ValueError(f"unknown benchmark {benchmark!r}; scorable: {SCORABLE}")
    _require_rows(benchmark, rows)
    validate_rows(benchmark, rows, mode, lines)
    return _SCORERS[benchmark](rows, mode)


def read_answers(path: str | Path) -> list[dict]:
    """Read an answers JSONL file; a malformed line fails with its (1-based) line number."""
    from jarvis.eval.answers import read_answer_lines

    return read_answer_lines(path)[0]


def add_score_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``jarvis score --benchmark B --questions DIR [--mode compat|fixed] [--allow-partial] ANSWERS``."""
    parser.add_argument("--benchmark", required=True, choices=SCORABLE, help="benchmark scorer to apply")
    parser.add_argument(
        "--questions",
        required=True,
        type=Path,
        help="the benchmark's data directory (as `jarvis evaluate` reads it, e.g. data/synth/pope): answers are "
        "matched to its questions by id; unknown ids, duplicates and changed ground truth are refused",
    )
    parser.add_argument(
        "--mode",
        default="fixed",
        choices=MODES,
        help="compat: reproduce the Cambrian scorers' numbers; fixed: corrected (default)",
    )
    parser.add_argument(
        "--allow-partial",
        action="store_true",
        help="score answers that cover only part of the benchmark (the output says so); refused otherwise",
    )
    parser.add_argument("answers", type=Path, help="answers JSONL (Cambrian answers format)")


def run_score(args: argparse.Namespace) -> int:
    """Check and score ``args.answers``; print the scores JSON (with ``coverage``) to stdout.

    Returns the process exit code: 0, or 2 with one ``error: ...`` line on stderr for a bad file, row or question
    set (never a traceback).
    """
    from jarvis.eval.answers import (
        check_against_questions,
        check_compat_crashes,
        finite_or_null,
        read_answer_lines,
        validate_rows,
    )
    from jarvis.eval.benchmarks import load_questions

    try:
        rows, lines = read_answer_lines(args.answers)
        validate_rows(args.benchmark, rows, args.mode, lines)
        try:
            questions = list(load_questions(args.benchmark, args.questions))
        except (KeyError, TypeError) as e:  # a data file without the fields the loader needs
            raise ValueError(f"cannot read the {args.benchmark} questions under {args.questions}: {e!r}") from e
        coverage = check_against_questions(args.benchmark, rows, lines, questions, args.allow_partial)
        if args.mode == "compat":
            check_compat_crashes(args.benchmark, rows, lines)
        scores = score_answers(args.benchmark, rows, args.mode, lines)
    except (ValueError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    scores["coverage"] = coverage
    if coverage["partial"]:
        scores["partial"] = True
        print(
            f"PARTIAL: {args.benchmark} scored on {coverage['answered']}/{coverage['total']} questions "
            f"({coverage['fraction']:.1%}) because of --allow-partial; not comparable with full-benchmark scores",
            file=sys.stderr,
        )
    undefined: list[str] = []
    scores = finite_or_null(scores, undefined=undefined)
    if undefined:
        print(f"note: undefined (no questions) and written as null: {', '.join(undefined)}", file=sys.stderr)
    json.dump(scores, sys.stdout, indent=2, sort_keys=False, allow_nan=False)
    sys.stdout.write("\n")
    return 0


def main_score(argv: Sequence[str] | None = None) -> int:
    """Stand-alone entry point for ``jarvis score``."""
    parser = argparse.ArgumentParser(prog="jarvis score", description=__doc__.splitlines()[0])
    add_score_arguments(parser)
    return run_score(parser.parse_args(argv))
