"""Answers files before scoring: strict JSONL reading, per-row type checks, and the check against the benchmark.

A scorer trusts its rows: an answer line carries its own ``gt_answer``, so invented or duplicated lines change the
score (5 invented POPE lines moved 50.0 to 58.6), and a ``null`` answer crashed the extractors. Here every problem
is refused with its line number (1-based, the line in the file; blank lines keep their numbers):

- ``read_answer_lines``: UTF-8 (a BOM is accepted), one JSON object per non-blank line; not JSON, a JSON array,
  ``NaN``/``Infinity`` (not JSON, though Python reads them) and non-objects are errors.
- ``validate_rows``: the fields each scorer reads, with their types (``answer``/``gt_answer`` strings, options lists
  of strings, a ground-truth letter that names an option, known CV-Bench sources and MME categories, and in fixed
  mode the pair structure of MMVP/MME).
- ``check_against_questions``: every line answers a question of the benchmark (by its id), at most once, with the
  benchmark's own ground truth; coverage is answered / total, and a subset is refused unless allowed.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

from jarvis.eval.parsing import gt_letter
from jarvis.eval.scorers import CVBENCH_SOURCES, MME_COGNITION, MME_PERCEPTION
from jarvis.io import StageFailed

CVBENCH_FAMILY = ("ade", "coco", "omni", "cvbench_2d", "cvbench_3d", "cvbench")
MCQ = (*CVBENCH_FAMILY, "blink", "mmvp")
_OPTIONS_FIELD = {**dict.fromkeys(CVBENCH_FAMILY, "options"), "blink": "choices", "mmvp": "text_options",
                  "mmstar": "options"}  # fmt: skip
_OMNI = ("Omni3D", "Synth3D")
# The benchmarks of issue 11 (jarvis.eval.benchmarks_ext): their scorers check their own fields.
LIST_GT = ("textvqa", "chartqa", "ocrbench", "vstar", "realworldqa", "ai2d", "scienceqa", "seed", "mmbench_en")


class AnswersError(StageFailed, ValueError):
    """A bad answers file or row; the message names the line (``jarvis evaluate``: one error line, exit 1)."""


def id_field(benchmark: str) -> str:
    """The question-id field of an answer line (CV-Bench writes ``questionId``, MMBench ``index``, the others
    ``question_id``)."""
    if benchmark in CVBENCH_FAMILY:
        return "questionId"
    return "index" if benchmark == "mmbench_en" else "question_id"


def answer_field(benchmark: str) -> str:
    """The model-answer field: MMBench's harness writes ``prediction`` (mmbench_en_eval.py), the others ``answer``."""
    return "prediction" if benchmark == "mmbench_en" else "answer"


# ------------------------------------------------------------------------------------------------------ reading
def _no_constants(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose keys repeat is refused: json.loads would silently keep the last value."""
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"key {k!r} appears twice in one object")
        out[k] = v
    return out


def read_answer_lines(path: str | os.PathLike[str]) -> tuple[list[dict], list[int]]:
    """Rows of an answers JSONL file and their 1-based line numbers. Raises ``AnswersError`` naming the line."""
    raw = open(path, "rb").read()  # noqa: SIM115 - read in one go; decoding errors are reported with their line
    try:
        text = raw.decode("utf-8-sig")  # a BOM written by some editors is not part of the first line
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise AnswersError(f"{path}: line {line}: not UTF-8 ({e.reason} at byte {e.start})") from e
    rows, lines = [], []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line, parse_constant=_no_constants, object_pairs_hook=_unique_keys)
        except ValueError as e:
            hint = " (answers are JSON lines, one object per line, not a JSON array)" if line.lstrip()[:1] == "[" else ""
            raise AnswersError(f"{path}: line {n}: not valid JSON ({e}){hint}") from e
        if not isinstance(row, dict):
            hint = "; answers are JSON lines, one object per line, not a JSON array" if isinstance(row, list) else ""
            raise AnswersError(f"{path}: line {n}: expected a JSON object, got {_typename(row)}{hint}")
        rows.append(row)
        lines.append(n)
    if not rows:
        raise AnswersError(f"{path}: no answer lines")
    return rows, lines


# ------------------------------------------------------------------------------------------------------ rows
def _typename(v: Any) -> str:
    return "null" if v is None else {list: "list", dict: "object", bool: "boolean", str: "string"}.get(
        type(v), "number" if isinstance(v, (int, float)) else type(v).__name__
    )


def _describe(v: Any) -> str:
    """``null``, ``number 1``, ``list ["yes"]``: the JSON type and (the start of) the value."""
    return "null" if v is None else f"{_typename(v)} {json.dumps(v)[:60]}"


def _is_id(v: Any) -> bool:
    return (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, str) and bool(v))


def _row_problem(benchmark: str, row: dict, mode: str) -> str | None:
    """What is wrong with one row, or None."""
    akey = answer_field(benchmark)
    for key in (akey, "gt_answer"):
        if key not in row:
            return f"no {key!r} field (keys: {sorted(row)})"
    if not isinstance(row[akey], str):
        return f"{akey!r} must be a string, got {_describe(row[akey])}"
    gt = row["gt_answer"]
    if isinstance(gt, list) and benchmark in LIST_GT:  # VQA-style: the annotators' answers
        if not gt or not all(isinstance(g, str) for g in gt):
            return f"'gt_answer' must be a non-empty list of strings, got {_describe(gt)}"
    elif not isinstance(gt, str):
        return f"'gt_answer' must be a string, got {_describe(gt)}"
    elif not gt.strip() and benchmark not in LIST_GT:  # MMBench's test split has no ground truth: its scorer says so
        return "empty 'gt_answer'"
    opt_key = _OPTIONS_FIELD.get(benchmark)
    options = row.get(opt_key) if opt_key else None
    if opt_key and (options is not None or benchmark == "mmvp"):
        if not isinstance(options, list) or not options or not all(isinstance(o, str) for o in options):
            return f"{opt_key!r} must be a non-empty list of strings, got {json.dumps(options)[:80]}"
    cat_types = (str, int) if benchmark in LIST_GT else str  # SEED's category is its question_type_id
    if "category" in row and row["category"] is not None and not isinstance(row["category"], cat_types):
        return f"'category' must be a string, got {_typename(row['category'])}"
    for key in (id_field(benchmark), "pair_id"):
        if key in row and not _is_id(row[key]):
            return f"{key!r} must be an integer or a non-empty string, got {_typename(row[key])}"
    if benchmark in MCQ:
        letter = gt_letter(row["gt_answer"])
        n = len(options) if options else 26
        if not ("a" <= letter <= "z") or ord(letter) - ord("a") >= n:
            return f"gt_answer {row['gt_answer']!r} does not name one of the {n} options"
    if benchmark.startswith("cvbench"):
        src = row.get("source")
        if src not in CVBENCH_SOURCES:
            return f"unknown source {json.dumps(src)[:60]}; expected one of {sorted(CVBENCH_SOURCES)}"
    if benchmark == "mme":
        if row.get("category") not in (*MME_PERCEPTION, *MME_COGNITION):
            return f"unknown category {row.get('category')!r}; expected one of {MME_PERCEPTION + MME_COGNITION}"
    if mode == "fixed" and benchmark == "mmvp" and "pair_id" not in row and not isinstance(row.get("question_id"), int):
        return "neither 'pair_id' nor an integer 'question_id' to pair by (fixed mode)"
    if mode == "fixed" and benchmark == "mme" and "pair_id" not in row and "question_id" not in row:
        return "fixed mode pairs MME questions by image: the line needs 'pair_id' or 'question_id'"
    return None


def validate_rows(benchmark: str, rows: Sequence[Any], mode: str, lines: Sequence[int] | None = None) -> None:
    """Raise ``AnswersError`` at the first row a scorer cannot read; ``lines`` are the rows' file line numbers."""
    lines = list(lines) if lines is not None else list(range(1, len(rows) + 1))
    for row, n in zip(rows, lines, strict=True):
        if not isinstance(row, dict):
            raise AnswersError(f"{benchmark}: line {n}: expected a JSON object, got {_typename(row)}")
        problem = _row_problem(benchmark, row, mode)
        if problem:
            raise AnswersError(f"{benchmark}: line {n}: {problem}")
    if mode == "fixed" and benchmark in ("mmvp", "mme"):
        _check_pairs(benchmark, rows, lines)


def _check_pairs(benchmark: str, rows: Sequence[dict], lines: Sequence[int]) -> None:
    groups: dict[Any, list[int]] = {}
    for row, n in zip(rows, lines, strict=True):
        if benchmark == "mmvp":
            key = row["pair_id"] if "pair_id" in row else row["question_id"] // 2
        else:
            key = (row["category"], row.get("pair_id", row.get("question_id")))
        groups.setdefault(key, []).append(n)
    bad = {k: v for k, v in groups.items() if len(v) != 2}
    if bad:
        key, at = next(iter(bad.items()))
        raise AnswersError(
            f"{benchmark}: {len(bad)} pair ids without exactly two questions (fixed mode scores pairs), "
            f"e.g. {key!r} at lines {at}"
        )


def check_compat_crashes(benchmark: str, rows: Sequence[dict], lines: Sequence[int]) -> None:
    """Compat MMStar/POPE crash on an empty answer, as the reference does; name the line instead of a traceback."""
    if benchmark not in ("mmstar", "pope"):
        return
    for row, n in zip(rows, lines, strict=True):
        if not row["answer"].split():
            raise AnswersError(
                f"{benchmark}: line {n}: empty answer; the compat scorer fails on it as the reference does "
                "(benchmarks-spec §2.7); --mode fixed scores it as unparseable"
            )


# ------------------------------------------------------------------------------------------------------ questions
def row_key(benchmark: str, row: dict) -> tuple:
    """The question an answer line answers. BLINK ids restart per category; MME's id is the image, shared by the
    image's two questions (told apart by the prompt); CV-Bench 2D and 3D ids both start at 0."""
    qid = row.get(id_field(benchmark))
    qid = None if qid is None else str(qid)  # 1 and "1" name one question (harnesses differ in the id type)
    if benchmark in CVBENCH_FAMILY:
        if benchmark == "cvbench":
            return ("3d" if row.get("source") in _OMNI else "2d", qid)
        return ("3d" if benchmark in ("omni", "cvbench_3d") else "2d", qid)
    if benchmark == "blink":
        return (row.get("category"), qid)
    if benchmark == "mme":
        return (qid, row.get("prompt"))
    return (qid,)


def _show(key: tuple) -> str:
    return repr(key[0]) if len(key) == 1 else repr(key)


def check_against_questions(
    benchmark: str,
    rows: Sequence[dict],
    lines: Sequence[int],
    questions: Iterable[Any],
    allow_partial: bool = False,
) -> dict[str, Any]:
    """Refuse unknown, duplicated and ground-truth-changed answers; return the coverage dict.

    Raises ``AnswersError`` when fewer questions are answered than the benchmark has, unless ``allow_partial``.
    """
    from jarvis.eval.benchmarks import answer_row

    expected: dict[tuple, dict] = {}
    for q in questions:
        ref = answer_row(q, "", "")
        expected[row_key(benchmark, ref)] = ref
    if not expected:
        raise AnswersError(f"{benchmark}: the question set is empty")
    idf = id_field(benchmark)
    seen: dict[tuple, int] = {}
    for row, n in zip(rows, lines, strict=True):
        if idf not in row:
            raise AnswersError(f"{benchmark}: line {n}: no {idf!r} field; answers are matched to questions by id")
        key = row_key(benchmark, row)
        if key not in expected:
            raise AnswersError(
                f"{benchmark}: line {n}: question {_show(key)} is not a question of the benchmark "
                f"({len(expected)} questions)"
            )
        if key in seen:
            raise AnswersError(
                f"{benchmark}: line {n}: duplicate answer for question {_show(key)} (first at line {seen[key]})"
            )
        seen[key] = n
        ref = expected[key]
        for field in ("gt_answer", "category", "source"):
            if ref.get(field) is not None and row.get(field) != ref[field]:
                raise AnswersError(
                    f"{benchmark}: line {n}: {field} {json.dumps(row.get(field))} of question {_show(key)} "
                    f"differs from the benchmark's {json.dumps(ref[field])}"
                )
    total, answered = len(expected), len(seen)
    coverage = {
        "answered": answered,
        "total": total,
        "fraction": answered / total,
        "partial": answered < total,
    }
    if answered < total and not allow_partial:
        missing = [_show(k) for k in expected if k not in seen][:5]
        raise AnswersError(
            f"{benchmark}: the answers cover {answered}/{total} questions ({answered / total:.1%}); missing e.g. "
            f"{', '.join(missing)}. A subset is scored only with --allow-partial"
        )
    return coverage


def finite_or_null(obj: Any, path: str = "", undefined: list[str] | None = None) -> Any:
    """``obj`` with every NaN/inf float replaced by None (strict JSON); their key paths are appended to ``undefined``.

    A score over no questions (a CV-Bench category missing from a partial subset) is NaN: undefined, not a number.
    """
    if isinstance(obj, dict):
        return {k: finite_or_null(v, f"{path}{k}/", undefined) for k, v in obj.items()}
    if isinstance(obj, list):
        return [finite_or_null(v, f"{path}{i}/", undefined) for i, v in enumerate(obj)]
    if isinstance(obj, float) and not math.isfinite(obj):
        if undefined is not None:
            undefined.append(path.rstrip("/"))
        return None
    return obj
