"""Loaders of RealWorldQA, V*Bench, MMBench-EN, SEED, ScienceQA-IMG, AI2D, TextVQA, ChartQA and OCRBench on tiny
files written here in the hub layouts, prompts as the reference's ``<b>_eval.py`` builds them (aimagelab/JARVIS
17426c1, lines in each test), answer lines, and loader -> scorer round trips."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
import pytest
from PIL import Image

from jarvis.eval.benchmarks import BENCHMARKS, answer_row, load_questions
from jarvis.eval.scorers import score_answers

LETTER = "Answer with the option's letter from the given choices directly."
ONLY_LETTER = "Please answer directly with only the letter of the correct option and nothing else."
SHORT = "Answer the question using a single word or phrase."


def _png(colour: str = "red", size: int = 8) -> dict:
    buf = io.BytesIO()
    Image.new("RGB", (size, size), colour).save(buf, format="PNG")
    return {"bytes": buf.getvalue(), "path": None}


def _parquet(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_parquet(path)
    return path.parent.parent


def _oracle(bench: str, root: Path, answer) -> dict:
    """Scores of the answers, computed by the scorer and, identically, by `jarvis score` (which checks every line
    against the benchmark's questions in their real layout)."""
    import contextlib
    import json

    from jarvis.eval.scorers import main_score

    rows = [answer_row(q, answer(q), "oracle") for q in load_questions(bench, root)]
    out = {mode: score_answers(bench, rows, mode)["overall"] for mode in ("compat", "fixed")}
    answers = root.parent / f"{bench}-answers.jsonl"
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    for mode, expected in out.items():
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            code = main_score(["--benchmark", bench, "--mode", mode, "--questions", str(root), str(answers)])
        assert code == 0, f"jarvis score refused valid {bench} answers"
        got = json.loads(buf.getvalue())
        assert got["overall"] == expected and got["coverage"]["partial"] is False
    return out


def test_all_registered() -> None:
    from jarvis.config import BENCHMARKS as SCHEMA

    new = (
        "realworldqa",
        "vstar",
        "mmbench_en",
        "seed",
        "scienceqa",
        "ai2d",
        "textvqa",
        "chartqa",
        "ocrbench",
    )
    assert set(new) <= set(BENCHMARKS) and set(new) <= set(SCHEMA)


def test_realworldqa(tmp_path: Path) -> None:
    """realworldqa_eval.py:47-51: ``qs`` is the question alone (the extension argument is never used); 512."""
    q1 = "Which side is the car on?\nA. left\nB. right\nPlease answer directly with only the letter."
    root = _parquet(
        tmp_path / "data" / "test-00000-of-00001.parquet",
        [
            {"image": _png(), "question": q1, "answer": "A"},
            {"image": _png(), "question": "How many cars? Answer with a number.", "answer": "3"},
        ],
    )
    qs = list(load_questions("realworldqa", root))
    assert [q.qs for q in qs] == [q1, "How many cars? Answer with a number."]
    assert qs[0].options == ("left", "right") and qs[1].options == () and qs[0].max_new_tokens == 512
    row = answer_row(qs[0], "A", "m")
    assert row == {
        "question_id": 0,
        "prompt": q1,
        "answer": "A",
        "gt_answer": "A",
        "model_id": "m",
        "options": ["left", "right"],
    }
    assert _oracle("realworldqa", root, lambda q: q.gt_answer) == {"compat": 100.0, "fixed": 100.0}


def test_vstar(tmp_path: Path) -> None:
    """vstar_eval.py:39-51, 127-154: ``text`` as is, the image ``<subfolder>/<file>``, label as gt; 32 tokens."""
    text = "What is the color of the cup?\n(A) white\n(B) red\nAnswer with the option's letter from the given choices directly."
    lines = [
        {
            "image": "direct_attributes/sa_1.jpg",
            "text": text,
            "category": "direct_attributes",
            "question_id": 7,
            "label": "B",
        },
        {
            "image": "relative_position/sa_2.jpg",
            "text": "Is the cup left of the dog?\n(A) yes\n(B) no",
            "category": "relative_position",
            "question_id": 9,
            "label": "A",
        },
    ]
    (tmp_path / "test_questions.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    for x in lines:
        (tmp_path / x["image"]).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (6, 6), "blue").save(tmp_path / x["image"])
    qs = list(load_questions("vstar", tmp_path))
    assert qs[0].qs == text and qs[0].max_new_tokens == 32 and qs[0].options == ("white", "red")
    assert [q.question_id for q in qs] == [0, 1]  # the row index, as the reference writes it
    assert qs[1].load_image().size == (6, 6)
    row = answer_row(qs[0], "B", "m")
    assert row["category"] == "direct_attributes" and row["gt_answer"] == "B" and row["prompt"] == text
    assert _oracle("vstar", tmp_path, lambda q: q.gt_answer) == {"compat": 100.0, "fixed": 100.0}
    with pytest.raises(FileNotFoundError, match="test_questions.jsonl"):
        list(load_questions("vstar", tmp_path / "nowhere"))


def _mmb(
    index: int, options: list[str], answer: str, hint: str = "nan", question: str = "Which animal?"
) -> dict:
    return {
        "index": index,
        "question": question,
        "hint": hint,
        **dict(zip("ABCD", options, strict=True)),
        "answer": answer,
        "category": "identity_reasoning",
        "image": _png(),
        "source": "MMBench",
        "l2-category": "fine-grained",
        "comment": "nan",
        "split": "dev",
    }


def test_mmbench_en(tmp_path: Path) -> None:
    """mmbench_en_eval.py:43-51 (hint line, " Options:", present options only), 156-167 (answer line)."""
    root = _parquet(
        tmp_path / "data" / "dev-00000-of-00001.parquet",
        [
            _mmb(1, ["dog", "cat", "cow", "nan"], "B", hint="Look closely."),
            _mmb(1000001, ["cat", "cow", "dog", "nan"], "A", hint="Look closely."),  # its circular copy
            _mmb(2, ["red", "blue", "nan", "nan"], "A", hint="Look closely."),  # same wording, other options
        ],
    )
    qs = list(load_questions("mmbench_en", root))
    assert qs[0].qs == f"Look closely.\nWhich animal? Options:\nA. dog\nB. cat\nC. cow\n{LETTER}"
    assert qs[2].options == ("red", "blue") and qs[0].max_new_tokens == 512
    rows = [answer_row(q, q.gt_answer, "m") for q in qs]
    assert set(rows[0]) >= {
        "index",
        "question",
        "prediction",
        "gt_answer",
        "A",
        "B",
        "C",
        "D",
        "source_id",
        "model_id",
        "category",
    }
    assert rows[0]["D"] is None and rows[0]["index"] == 1 and "answer" not in rows[0]
    # The reference's key merges all three (same question, image and source); ours keeps question 2 apart.
    assert len({r["source_id"] for r in rows}) == 1
    assert rows[0]["circular_id"] == rows[1]["circular_id"] != rows[2]["circular_id"]
    rows[2]["prediction"] = "B"  # question 2 wrong
    assert score_answers("mmbench_en", rows, "compat")["overall"] == 0.0  # one merged group, lost
    assert score_answers("mmbench_en", rows, "fixed")["overall"] == 50.0
    no_hint = next(
        load_questions(
            "mmbench_en",
            _parquet(tmp_path / "b" / "data" / "dev-0.parquet", [_mmb(3, ["x", "y", "z", "w"], "D")]),
        )
    )
    assert no_hint.qs == f"Which animal? Options:\nA. x\nB. y\nC. z\nD. w\n{LETTER}"


def test_seed(tmp_path: Path) -> None:
    """seed_eval.py:38-43 (" Options:" and four choices), 120-150 (rows with several images skipped,
    question_id = row index, category = question_type_id)."""
    base = {
        "question": "What is on the table?",
        "choice_a": "cup",
        "choice_b": "pen",
        "choice_c": "box",
        "choice_d": "hat",
        "answer": "C",
        "data_type": "image",
    }
    root = _parquet(
        tmp_path / "data" / "test-00000-of-00001.parquet",
        [
            {
                **base,
                "image": [_png(), _png()],
                "question_type_id": 10,
                "data_id": "v",
            },  # video frames: skipped
            {**base, "image": [_png()], "question_type_id": 2, "data_id": "1.jpg"},
        ],
    )
    (q,) = list(load_questions("seed", root))
    assert q.qs == f"What is on the table? Options:\nA. cup\nB. pen\nC. box\nD. hat\n{LETTER}"
    assert (q.question_id, q.max_new_tokens, q.options) == (1, 512, ("cup", "pen", "box", "hat"))
    row = answer_row(q, "C", "m")
    assert row["category"] == 2 and row["gt_answer"] == "C"
    assert _oracle("seed", root, lambda q: q.gt_answer) == {"compat": 100.0, "fixed": 100.0}


def test_scienceqa(tmp_path: Path) -> None:
    """scienceqa_eval.py:46-55 (hint + " " + question, "A. ..." lines), 171-179 (gt letter, text_answer, type)."""
    base = {"choices": ["Paris", "Rome"], "answer": 1, "grade": "grade4", "subject": "social science"}
    root = _parquet(
        tmp_path / "data" / "test-00000-of-00001.parquet",
        [
            {**base, "image": None, "question": "Text only?", "hint": ""},  # not ScienceQA-IMG
            {**base, "image": _png(), "question": "Capital of Italy?", "hint": "Look at the map."},
            {**base, "image": _png(), "question": "Capital?", "hint": ""},
        ],
    )
    qs = list(load_questions("scienceqa", root))
    assert [q.question_id for q in qs] == [1, 2]
    assert qs[0].qs == f"Look at the map. Capital of Italy?\nA. Paris\nB. Rome\n{ONLY_LETTER}"
    assert qs[1].qs.startswith("Capital?\nA. Paris") and qs[0].gt_answer == "B"
    row = answer_row(qs[0], "B", "m")
    assert (row["text_answer"], row["type"], row["has_img"], row["category"]) == (
        "Rome",
        True,
        True,
        "grade4",
    )
    assert _oracle("scienceqa", root, lambda q: q.gt_answer) == {"compat": 100.0, "fixed": 100.0}


def test_ai2d(tmp_path: Path) -> None:
    """ai2d_eval.py:45-52 (options as "A. ..." lines), 143-150 (gt the option index, text_answer)."""
    root = _parquet(
        tmp_path / "data" / "test-00000-of-00001.parquet",
        [
            {
                "question": "Which is the sun?",
                "options": ["moon", "sun", "star", "cloud"],
                "answer": "1",
                "image": _png(),
            }
        ],
    )
    (q,) = list(load_questions("ai2d", root))
    assert q.qs == f"Which is the sun?\nA. moon\nB. sun\nC. star\nD. cloud\n{LETTER}"
    assert answer_row(q, "B", "m")["text_answer"] == "sun" and q.max_new_tokens == 512
    assert _oracle("ai2d", root, lambda q: "ABCD"[int(q.gt_answer)]) == {"compat": 100.0, "fixed": 100.0}


def test_textvqa(tmp_path: Path) -> None:
    """textvqa_eval.py:37-45: the question, then "Reference OCR tokens: a, b", then the extension; 512."""
    answers = ["stop"] * 8 + ["stop sign"] * 2
    root = _parquet(
        tmp_path / "data" / "validation-00000-of-00003.parquet",
        [
            {
                "question": "What does the sign say?",
                "image": _png(),
                "answers": answers,
                "ocr_tokens": ["STOP", "4"],
                "question_id": 34602,
                "image_id": "abc",
            },
            {
                "question": "Brand?",
                "image": _png(),
                "answers": ["nike"] * 10,
                "ocr_tokens": [],
                "question_id": 1,
                "image_id": "d",
            },
        ],
    )
    qs = list(load_questions("textvqa", root))
    assert qs[0].qs == f"What does the sign say?\nReference OCR tokens: STOP, 4\n{SHORT}"
    assert qs[1].qs == f"Brand?\nReference OCR tokens:\n{SHORT}"
    row = answer_row(qs[0], "stop", "m")
    assert row["gt_answer"] == answers and row["question_id"] == 0
    assert _oracle("textvqa", root, lambda q: q.gt_answer[0]) == {"compat": 100.0, "fixed": 100.0}


def test_chartqa_and_ocrbench(tmp_path: Path) -> None:
    """chartqa_eval.py:41-50 (question + "\\nAnswer the question using a single number or phrase."; 128) and
    ocrbench_eval.py:48-55 (question + "\\nGive the short answer directly."; 512; the gt a list)."""
    c = _parquet(
        tmp_path / "chartqa" / "data" / "test-00000-of-00001.parquet",
        [{"type": "human_test", "question": "What is the peak?", "answer": "42", "image": _png()}],
    )
    (q,) = list(load_questions("chartqa", c))
    assert q.qs == "What is the peak?\nAnswer the question using a single number or phrase."
    assert (q.max_new_tokens, answer_row(q, "42", "m")["category"]) == (128, "human_test")
    assert _oracle("chartqa", c, lambda q: q.gt_answer) == {"compat": 100.0, "fixed": 100.0}

    o = _parquet(
        tmp_path / "ocrbench" / "data" / "test-00000-of-00001.parquet",
        [
            {
                "dataset": "IIIT5K",
                "question": "what is written in the image?",
                "question_type": "Regular Text Recognition",
                "answer": ["HELLO", "hello"],
                "image": _png(),
            }
        ],
    )
    (q,) = list(load_questions("ocrbench", o))
    assert (
        q.qs == "what is written in the image?\nGive the short answer directly." and q.max_new_tokens == 512
    )
    row = answer_row(q, "Hello", "m")
    assert row["gt_answer"] == ["HELLO", "hello"] and row["category"] == "Regular Text Recognition"
    assert _oracle("ocrbench", o, lambda q: q.gt_answer[0]) == {"compat": 100.0, "fixed": 100.0}


def test_missing_and_malformed_files_fail_loudly(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"realworldqa: no test-\*\.parquet"):
        list(load_questions("realworldqa", tmp_path))
    root = _parquet(
        tmp_path / "x" / "data" / "test-0.parquet",
        [{"question": "q", "options": ["a"] * 5, "answer": "0", "image": _png()}],
    )
    with pytest.raises(ValueError, match="5 options"):
        list(load_questions("ai2d", root))
    root = _parquet(
        tmp_path / "y" / "data" / "test-0.parquet",
        [{"question": "q", "question_type": "t", "answer": "abc", "image": _png()}],
    )
    with pytest.raises(ValueError, match="list of strings"):
        list(load_questions("ocrbench", root))
