"""`jarvis score` against the benchmark's questions: invented, duplicated and wrong-typed answer lines are refused
with their 1-based line number (no traceback), coverage comes with every score, subsets only with --allow-partial.

The question set is the synthetic POPE (24 questions, the real lmms-lab/POPE parquet layout). Half the answers are
right: 50.0. Before, 5 invented right lines made it 17/29 = 58.6 and a null answer raised AttributeError.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from jarvis.eval.benchmarks import answer_row, load_questions
from jarvis.eval.scorers import main_score, score_answers
from jarvis.eval.synthetic_bench import generate_general_benchmarks


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    generate_general_benchmarks(out, n_per_benchmark=24, image_size=16, seed=0)
    return out


@pytest.fixture(scope="module")
def pope_rows(world) -> list[dict]:
    qs = list(load_questions("pope", world / "pope"))
    assert len(qs) == 24
    flip = {"yes": "no", "no": "yes"}
    return [answer_row(q, q.gt_answer if i < 12 else flip[q.gt_answer], "m") for i, q in enumerate(qs)]


def write(path: Path, rows: list, raw: str | None = None) -> Path:
    path.write_text(raw if raw is not None else "".join(json.dumps(r) + "\n" for r in rows))
    return path


def score(capsys, world: Path, answers: Path, *extra: str) -> tuple[int, dict | None, str]:
    code = main_score(["--benchmark", "pope", "--questions", str(world / "pope"), *extra, str(answers)])
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    return code, (json.loads(out.out) if out.out.strip() else None), out.err


def test_full_answers_score_with_coverage(capsys, world, pope_rows, tmp_path) -> None:
    code, s, err = score(capsys, world, write(tmp_path / "a.jsonl", pope_rows))
    assert code == 0 and err == ""
    assert s["overall"] == 50.0 and s["coverage"] == {"answered": 24, "total": 24, "fraction": 1.0, "partial": False}
    assert "partial" not in s


def test_invented_rows_are_refused(capsys, world, pope_rows, tmp_path) -> None:
    invented = [{**pope_rows[0], "question_id": f"x{k}", "answer": "yes", "gt_answer": "yes"} for k in range(5)]
    rows = pope_rows + invented
    assert round(score_answers("pope", rows)["overall"], 1) == 58.6  # what the scorer alone makes of them
    code, s, err = score(capsys, world, write(tmp_path / "a.jsonl", rows))
    assert code == 2 and s is None
    assert err.strip() == "error: pope: line 25: question 'x0' is not a question of the benchmark (24 questions)"


def test_duplicates_and_changed_ground_truth_are_refused(capsys, world, pope_rows, tmp_path) -> None:
    code, _, err = score(capsys, world, write(tmp_path / "a.jsonl", [*pope_rows, pope_rows[3]]))
    qid = pope_rows[3]["question_id"]
    assert code == 2 and f"line 25: duplicate answer for question {qid!r} (first at line 4)" in err
    flipped = {"yes": "no", "no": "yes"}[pope_rows[13]["gt_answer"]]
    rows = [*pope_rows[:13], {**pope_rows[13], "gt_answer": flipped}, *pope_rows[14:]]  # a wrong one made right
    code, _, err = score(capsys, world, write(tmp_path / "a.jsonl", rows))
    assert code == 2 and "line 14: gt_answer" in err and "differs from the benchmark's" in err


def test_subset_needs_allow_partial_and_says_so(capsys, world, pope_rows, tmp_path) -> None:
    answers = write(tmp_path / "a.jsonl", pope_rows[:20])
    code, _, err = score(capsys, world, answers)
    assert code == 2 and "cover 20/24 questions (83.3%)" in err and "--allow-partial" in err
    code, s, err = score(capsys, world, answers, "--allow-partial")
    assert code == 0 and s["partial"] is True and s["n"] == 20 and s["overall"] == 60.0  # 12 / 20
    assert s["coverage"] == {"answered": 20, "total": 24, "fraction": 20 / 24, "partial": True}
    assert err.startswith("PARTIAL: pope scored on 20/24 questions (83.3%)")


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (None, "line 3: 'answer' must be a string, got null"),
        (["yes"], "line 3: 'answer' must be a string, got list [\"yes\"]"),
        (1, "line 3: 'answer' must be a string, got number 1"),
        (True, "line 3: 'answer' must be a string, got boolean true"),
        ({"text": "yes"}, "line 3: 'answer' must be a string, got object"),
    ],
)
def test_wrong_answer_types_are_refused(capsys, world, pope_rows, tmp_path, value, message) -> None:
    rows = [*pope_rows[:2], {**pope_rows[2], "answer": value}, *pope_rows[3:]]
    code, _, err = score(capsys, world, write(tmp_path / "a.jsonl", rows))
    assert code == 2 and message in err
    with pytest.raises(ValueError, match="line 3: 'answer' must be a string"):
        score_answers("pope", rows)  # the library call (evaluate) refuses them too


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("question_id", None, "line 3: 'question_id' must be an integer or a non-empty string, got null"),
        ("gt_answer", 0, "line 3: 'gt_answer' must be a string, got number"),
        ("category", ["a"], "line 3: 'category' must be a string, got list"),
    ],
)
def test_wrong_field_types_are_refused(capsys, world, pope_rows, tmp_path, field, value, message) -> None:
    rows = [*pope_rows[:2], {**pope_rows[2], field: value}, *pope_rows[3:]]
    code, _, err = score(capsys, world, write(tmp_path / "a.jsonl", rows))
    assert code == 2 and message in err


def test_file_format_problems_name_the_line(capsys, world, pope_rows, tmp_path) -> None:
    good = "".join(json.dumps(r) + "\n" for r in pope_rows)
    # a BOM and blank lines are accepted; blank lines keep their numbers in messages
    code, s, _ = score(capsys, world, write(tmp_path / "a.jsonl", [], "\ufeff\n" + good.replace("\n", "\n\n")))
    assert code == 0 and s["coverage"]["answered"] == 24
    bad = [*pope_rows[:2], {**pope_rows[2], "answer": None}]
    raw = "\n\n" + "".join(json.dumps(r) + "\n" for r in bad)
    code, _, err = score(capsys, world, write(tmp_path / "a.jsonl", [], raw))
    assert code == 2 and "line 5: 'answer' must be a string" in err  # 2 blank lines + 3rd row
    cases = {
        json.dumps(pope_rows): "line 1: expected a JSON object, got list; answers are JSON lines",
        "[\n" + good: "line 1: not valid JSON",
        good.replace('"answer": "', '"answer": NaN, "x": "', 1): "line 1: not valid JSON (NaN is not valid JSON)",
        good + "{oops\n": "line 25: not valid JSON",
        "": "no answer lines",
        "\n \n": "no answer lines",
        good + '"just a string"\n': "line 25: expected a JSON object, got string",
    }
    for raw, message in cases.items():
        code, _, err = score(capsys, world, write(tmp_path / "a.jsonl", [], raw))
        assert code == 2 and message in err, (raw[:40], err)
    (tmp_path / "latin1.jsonl").write_bytes(good.encode() + '{"answer": "caf\xe9"}\n'.encode("latin-1"))
    code, _, err = score(capsys, world, tmp_path / "latin1.jsonl")
    assert code == 2 and "latin1.jsonl: line 25: not UTF-8" in err
    code, _, err = score(capsys, world, tmp_path / "missing.jsonl")
    assert code == 2 and "missing.jsonl" in err


def test_compat_empty_answer_is_an_error_with_its_line(capsys, world, pope_rows, tmp_path) -> None:
    rows = [*pope_rows[:6], {**pope_rows[6], "answer": "  "}, *pope_rows[7:]]
    code, _, err = score(capsys, world, write(tmp_path / "a.jsonl", rows), "--mode", "compat")
    assert code == 2 and "line 7: empty answer; the compat scorer fails on it" in err
    code, s, _ = score(capsys, world, write(tmp_path / "a.jsonl", rows))
    assert code == 0 and s["unparseable"] == 1  # fixed mode scores it as unparseable


def test_question_set_is_required_and_checked(capsys, world, pope_rows, tmp_path) -> None:
    answers = write(tmp_path / "a.jsonl", pope_rows)
    with pytest.raises(SystemExit):
        main_score(["--benchmark", "pope", str(answers)])
    assert "--questions" in capsys.readouterr().err
    code = main_score(["--benchmark", "pope", "--questions", str(tmp_path / "nowhere"), str(answers)])
    assert code == 2 and "error: no parquet files for pope" in capsys.readouterr().err
    # the MME questions are not POPE's
    code = main_score(["--benchmark", "mme", "--questions", str(world / "mme"), str(answers)])
    err = capsys.readouterr().err
    assert code == 2 and "mme: line 1: unknown category" in err


def test_jarvis_score_subprocess_has_no_traceback(world, pope_rows, tmp_path) -> None:
    rows = [*pope_rows[:1], {**pope_rows[1], "answer": None}, *pope_rows[2:]]
    answers = write(tmp_path / "a.jsonl", rows)
    res = subprocess.run(
        [sys.executable, "-m", "jarvis", "score", "--benchmark", "pope", "--questions", str(world / "pope"),
         str(answers)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip() == "error: pope: line 2: 'answer' must be a string, got null"


def test_ids_match_across_int_and_str_and_repeated_keys_are_refused(capsys, world, pope_rows, tmp_path) -> None:
    # POPE ids are strings ("1"); a harness writing them as integers answers the same questions.
    as_int = [{**r, "question_id": int(r["question_id"])} for r in pope_rows]
    code, s, _ = score(capsys, world, write(tmp_path / "a.jsonl", as_int))
    assert code == 0 and s["overall"] == 50.0
    dup = [*as_int[:5], {**as_int[5], "question_id": pope_rows[0]["question_id"]}, *as_int[6:]]
    code, _, err = score(capsys, world, write(tmp_path / "a.jsonl", dup))
    assert code == 2 and "line 6: duplicate answer for question '1' (first at line 1)" in err
    # {"answer": "no", ..., "answer": "yes"}: json.loads keeps the last value silently
    raw = "".join(json.dumps(r) + "\n" for r in pope_rows)
    raw = raw.replace('"model_id": "m"', '"model_id": "m", "answer": "yes"', 1)
    code, _, err = score(capsys, world, write(tmp_path / "a.jsonl", [], raw))
    assert code == 2 and "line 1: not valid JSON (key 'answer' appears twice in one object)" in err


def test_undefined_scores_are_null_not_nan(capsys, tmp_path) -> None:
    # A partial CV-Bench 2D subset without any Count question: "Count 2D" is 0/0. Before: NaN in the printed JSON.
    def q(i: int, task: str, source: str) -> dict:
        return {"idx": i, "filename": f"img/2D/{i}.png", "task": task, "prompt": "?", "answer": "(A)",
                "choices": ["x", "y"], "source": source, "type": "2D"}  # fmt: skip

    qs = [q(0, "Relation", "ADE20K"), q(1, "Relation", "COCO"), q(2, "Count", "ADE20K"), q(3, "Count", "COCO")]
    (tmp_path / "test_2d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in qs))
    rows = [{"questionId": r["idx"], "answer": "A", "gt_answer": "(A)", "category": "Relative location",
             "options": ["x", "y"], "source": r["source"]} for r in qs[:2]]  # fmt: skip
    answers = write(tmp_path / "a.jsonl", rows)
    code = main_score(["--benchmark", "cvbench_2d", "--questions", str(tmp_path), "--allow-partial", str(answers)])
    out = capsys.readouterr()
    assert code == 0 and "NaN" not in out.out
    s = json.loads(out.out)
    assert s["table"]["Count 2D"] is None and s["table"]["Relative location 2D"] == 100.0
    assert "table/Count 2D" in out.err and s["coverage"]["answered"] == 2
