"""Golden tests for the scorers of RealWorldQA, V*Bench, MMBench-EN, SEED, ScienceQA-IMG, AI2D, TextVQA, ChartQA and
OCRBench (jarvis.eval.scorers_ext).

The expected values are hand-computed by reading the reference scorers, aimagelab/JARVIS 17426c1
``cambrian/eval/eval/<b>/<b>_test.py`` (file and lines in each docstring); the comments give the derivation.
Percentages are written as the reference's own expressions (``100.0 * correct / total``) so the float matches
bit for bit.
"""

from __future__ import annotations

import pytest

from jarvis.eval.scorers import SCORABLE, score_answers
from jarvis.eval.scorers_ext import ai2d_compat, chartqa_correct, realworldqa_compat, scienceqa_compat
from jarvis.eval.vqa_norm import normalize_answer, soft_score

LR = ["left", "right"]


def _rows(triples: list[tuple], keys: tuple[str, ...]) -> list[dict]:
    return [dict(zip(keys, t, strict=True)) for t in triples]


def test_new_benchmarks_are_scorable() -> None:
    for b in (
        "realworldqa",
        "vstar",
        "mmbench_en",
        "seed",
        "scienceqa",
        "ai2d",
        "textvqa",
        "chartqa",
        "ocrbench",
    ):
        assert b in SCORABLE


# ---------------------------------------------------------------------------------------------------------------
# RealWorldQA
# ---------------------------------------------------------------------------------------------------------------

RWQA = [  # (answer, gt_answer, options, compat correct, fixed correct)
    ("Yes.", "Yes", [], True, True),  # "." stripped (line 29), gt lowercased (line 46)
    ("(A)", "A", LR, False, True),  # no "(" stripping in compat: "(a)" != "a"
    ("A.", "A", LR, True, True),
    ("The answer is B", "B", LR, True, True),  # keyword tail " b" -> "b" (lines 25-28)
    ("A, because", "A", LR, False, True),  # first token "a," keeps its comma
    ("3 cars", "3", [], True, True),  # first whitespace token (line 30)
    ("B", "A", LR, False, False),
]


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ("Yes.", "yes"),
        ("(A)", "(a)"),
        ("A, because", "a,"),
        ("The answer is: B", ":"),
        ("answer: 3 cars", "3"),
    ],
)
def test_realworldqa_extractor(answer: str, expected: str) -> None:
    """realworldqa_test.py:23-30 (keywords in the order "answer is", "answer is:", "answer:")."""
    assert realworldqa_compat(answer) == expected


def test_realworldqa_scorer() -> None:
    """realworldqa_test.py:33-61: CSV row total (float), correct (float), accuracy = 100.0 * correct / total."""
    rows = [
        {"question_id": i, "answer": a, "gt_answer": g, "options": o}
        for i, (a, g, o, _, _) in enumerate(RWQA)
    ]
    c = score_answers("realworldqa", rows, "compat")
    assert c["csv_row"] == {"total": 7.0, "correct": 4.0, "accuracy": 100.0 * 4.0 / 7.0}
    assert c["incorrect"] == [i for i, r in enumerate(RWQA) if not r[3]]
    f = score_answers("realworldqa", rows, "fixed")
    assert f["overall"] == 100.0 * 6 / 7 and f["incorrect"] == [6]


def test_realworldqa_empty_answer_crashes_compat_only() -> None:
    """realworldqa_test.py:30: ``text.split()[0]`` raises IndexError on an empty answer."""
    rows = [{"answer": "", "gt_answer": "Yes"}]
    with pytest.raises(IndexError):
        score_answers("realworldqa", rows, "compat")
    f = score_answers("realworldqa", rows, "fixed")
    assert f["overall"] == 0.0 and f["unparseable"] == 1


# ---------------------------------------------------------------------------------------------------------------
# V*Bench
# ---------------------------------------------------------------------------------------------------------------


def test_vstar_scorer() -> None:
    """vstar_test.py:22-32 (extractor: trailing "." stripped, parens, first character) and 42-60 (CSV: total is
    a float, correct an int, accuracy = 100.0 * correct / total)."""
    opts = ["blue", "red", "green", "white"]
    rows = _rows(
        [
            ("A", "A", "direct_attributes", opts),  # right in both
            ("(B)", "B", "direct_attributes", opts),  # right in both
            ("B. red", "B", "direct_attributes", opts),  # compat: "b. red" -> "b"
            ("The correct option is C", "C", "relative_position", opts),  # compat "t"; fixed: unparseable
            ("red", "B", "relative_position", opts),  # compat "r"; fixed: option text -> b
            ("answer: (D)", "D", "relative_position", opts),  # keyword "answer:" then "(d)" -> "d"
        ],
        ("answer", "gt_answer", "category", "options"),
    )
    c = score_answers("vstar", rows, "compat")
    assert c["csv_row"] == {"total": 6.0, "correct": 4, "accuracy": 100.0 * 4 / 6.0}
    assert isinstance(c["csv_row"]["correct"], int) and c["incorrect"] == [3, 4]
    f = score_answers("vstar", rows, "fixed")
    assert f["overall"] == 100.0 * 5 / 6 and f["incorrect"] == [3] and f["unparseable"] == 1
    assert f["categories"]["relative_position"]["correct"] == 2


# ---------------------------------------------------------------------------------------------------------------
# MMBench-EN (circular)
# ---------------------------------------------------------------------------------------------------------------

MMB_KEYS = ("prediction", "gt_answer", "category", "source_id", "circular_id")
MMB = [
    ("A", "A", "c1", "s1", "k1"),  # right
    ("(B) cat", "B", "c1", "s1", "k1"),  # right: s1 all right
    ("C", "C", "c1", "s2", "k2"),  # right
    ("A", "D", "c1", "s2", "k2"),  # wrong: s2 lost
    ("The answer is: B", "B", "c2", "s3", "k3"),  # compat ":" wrong; fixed right
    ("b,", "B", "c2", "s3", "k3"),  # ".:," stripped -> "b", right
    ("", "", "c2", "s4", "k4"),  # test-split row without gt: skipped (lines 62-64)
]


def _mmb_rows() -> list[dict]:
    return [
        {**dict(zip(MMB_KEYS, t, strict=True)), "A": "dog", "B": "cat", "C": "cow", "D": "pig"} for t in MMB
    ]


def test_mmbench_circular_compat() -> None:
    """mmbench_en_test.py:22-32 (extractor, trailing ".:,"), 58-83 (a source_id is right only if every copy is
    right, per category), 92-124 (CSV; per-category key misspelt 'accurcay'), tabulate.py:54 (100 x circular).

    c1: 3/4 right, circular s1 right, s2 wrong -> 1/2. c2: 1/2 right ("The answer is: B" reads ":"), s3 -> 0/1.
    Overall 4/6 right, circular 1/3 over 3 source ids.
    """
    c = score_answers("mmbench_en", _mmb_rows(), "compat")
    assert c["csv_row"] == {
        "accuracy": 4 * 1.0 / 6,
        "total_count": 6,
        "circular_accuracy": 1 * 1.0 / 3,
        "circular_count": 3,
        "c1": str({"accurcay": 0.75, "total": 4, "circular_accuracy": 0.5, "circular_count": 2}),
        "c2": str({"accurcay": 0.5, "total": 2, "circular_accuracy": 0.0, "circular_count": 1}),
    }
    assert c["overall"] == (1 * 1.0 / 3) * 100 and c["n"] == 6


def test_mmbench_circular_fixed() -> None:
    """Fixed: the robust letter reader ("The answer is: B" -> b) and the circular_id key: s1 and s3 right."""
    f = score_answers("mmbench_en", _mmb_rows(), "fixed")
    assert f["overall"] == 100.0 * (2 * 1.0 / 3) and f["question_accuracy"] == 100.0 * (5 * 1.0 / 6)
    assert f["categories"]["c2"]["circular_accuracy"] == 100.0


def test_mmbench_category_without_gt_fails() -> None:
    """A category holding only test-split rows divides by zero in the reference (mmbench_en_test.py:97)."""
    rows = _mmb_rows()[:2] + [{**_mmb_rows()[6], "category": "only_test"}]
    with pytest.raises(ValueError, match="only_test"):
        score_answers("mmbench_en", rows, "compat")


# ---------------------------------------------------------------------------------------------------------------
# SEED-Bench
# ---------------------------------------------------------------------------------------------------------------


def test_seed_scorer() -> None:
    """seed_test.py:8-17 (question_type_id -> dimension), 46-56 (extractor: trailing "." only, first character),
    74-83 and 91-114 (CSV: accuracy as a fraction, per dimension {'accurcay', 'total'}); tabulate.py:56 (x100).

    Scene Understanding 2/2; Instance Counting 1/2 ("C:" -> "c:" -> "c" right, "The answer is: D" -> ":");
    Text Recognition 0/1. Overall 3/5.
    """
    opts = ["one", "two", "three", "four"]
    rows = _rows(
        [
            ("A", "A", 1, opts),
            ("B.", "B", 1, opts),
            ("C:", "C", 5, opts),
            ("The answer is: D", "D", 5, opts),
            ("(B) two", "A", 9, opts),
        ],
        ("answer", "gt_answer", "category", "options"),
    )
    c = score_answers("seed", rows, "compat")
    assert c["csv_row"] == {
        "accuracy": 3 * 1.0 / 5,
        "total_count": 5,
        "Scene Understanding": str({"accurcay": 1.0, "total": 2}),
        "Instance Counting": str({"accurcay": 0.5, "total": 2}),
        "Text Recognition": str({"accurcay": 0.0, "total": 1}),
    }
    assert c["overall"] == (3 * 1.0 / 5) * 100
    assert score_answers("seed", rows, "fixed")["overall"] == 100.0 * (4 * 1.0 / 5)
    with pytest.raises(ValueError, match="category 10"):
        score_answers("seed", [{"answer": "A", "gt_answer": "A", "category": 10}], "compat")


# ---------------------------------------------------------------------------------------------------------------
# ScienceQA-IMG
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "gt", "text", "expected"),
    [
        ("A", "a", "paris", True),
        ("(B)", "b", "london", False),
        ("london", "b", "london", True),
        ("The answer is C.", "c", "rome", True),
        ("A. Paris", "a", "paris", True),
        ("Paris!", "a", "paris", True),
    ],
)
def test_scienceqa_compat_rule(answer: str, gt: str, text: str, expected: bool) -> None:
    """scienceqa_test.py:33-49: the option text (punctuation removed) or the part before the first "."."""
    assert scienceqa_compat(answer, gt, text) is expected


def test_scienceqa_scorer() -> None:
    """scienceqa_test.py:52-117: ``is_multimodal`` is a category of its own (line 56), so the pooled accuracy
    counts each multimodal question twice; tabulate.py:52 reports 100 x multimodal_acc.

    Multimodal rows: A right, (B) wrong, london right, "The answer is C." right -> 3/4. The text-only row
    (type False) is wrong. grade5: 1/2, grade6: 2/3. Pooled: (3 + 3) / (5 + 4) = 6/9, total_count 9.
    """
    opts = ["Paris", "London", "Rome"]
    rows = _rows(
        [
            ("A", "A", "Paris", "grade5", True),
            ("(B)", "B", "London", "grade5", True),
            ("london", "B", "London", "grade6", True),
            ("The answer is C.", "C", "Rome", "grade6", True),
            ("B", "A", "Paris", "grade6", False),
        ],
        ("answer", "gt_answer", "text_answer", "category", "type"),
    )
    for r in rows:
        r["options"] = opts
    c = score_answers("scienceqa", rows, "compat")
    assert c["csv_row"] == {
        "multimodal_acc": 3 * 1.0 / 4,
        "accuracy": 6 * 1.0 / 9,
        "total_count": 9,
        "is_multimodal": str({"accuracy": 0.75, "total": 4}),
        "grade5": str({"accuracy": 0.5, "total": 2}),
        "grade6": str({"accuracy": 2 * 1.0 / 3, "total": 3}),
    }
    assert c["overall"] == 75.0
    f = score_answers("scienceqa", rows, "fixed")
    assert f["overall"] == 100.0 and f["accuracy"] == 80.0  # "(B)" read as b; the text-only row stays wrong


# ---------------------------------------------------------------------------------------------------------------
# AI2D
# ---------------------------------------------------------------------------------------------------------------


def test_ai2d_scorer() -> None:
    """ai2d_test.py:22-32 (extractor, trailing ".:,", first character) and 46-61 (a-d -> "0"-"3"; a bare digit
    passes through, so "1" is read as option B)."""
    assert [ai2d_compat(a) for a in ("A", "(C)", "1", "B. The moon", "The answer is: D", "")] == [
        "0",
        "2",
        "1",
        "1",
        ":",
        "",
    ]
    opts = ["sun", "moon", "star", "planet"]
    rows = _rows(
        [("A", "0"), ("(C)", "2"), ("1", "1"), ("B. The moon", "1"), ("The answer is: D", "3"), ("c", "3")],
        ("answer", "gt_answer"),
    )
    for r in rows:
        r["options"] = opts
    c = score_answers("ai2d", rows, "compat")
    assert c["csv_row"] == {"total": 6.0, "correct": 4.0, "accuracy": 100.0 * 4.0 / 6.0}
    assert c["incorrect"] == [4, 5]
    f = score_answers("ai2d", rows, "fixed")  # "1" is no letter (unparseable); "answer is: D" is d
    assert f["incorrect"] == [2, 5] and f["unparseable"] == 1


# ---------------------------------------------------------------------------------------------------------------
# TextVQA
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "compat"),
    [
        ("The Sign.", "sign"),
        ("two", "2"),
        ("cat's", "cat 's"),
        ("e-mail", "e mail"),
        ("a/b", "b"),
        ("3.5", "3.5"),
        ("3.", "3"),
        ("hello - world", "hello world"),
        ("dont", "don't"),
        ("Im", "im"),
    ],
)
def test_textvqa_normalization(text: str, compat: str) -> None:
    """m4c_evaluator.py:181-218: word_tokenize, punctuation (removed next to a space, else a space), periods not
    before a digit, number words, articles, contractions (the capitalised key "Im" never matches)."""
    assert normalize_answer(text.lower()) == compat


def test_textvqa_normalization_quirks() -> None:
    """m4c_evaluator.py:195: ``re.UNICODE`` (32) is passed as the count; line 69 maps "somebody'd" to "somebodyd"."""
    assert normalize_answer("." * 33 + "x") == ".x" and normalize_answer("." * 33 + "x", "fixed") == "x"
    assert (
        normalize_answer("somebody'd") == "somebodyd"
        and normalize_answer("somebody'd", "fixed") == "somebody'd"
    )


def test_textvqa_soft_score_and_scorer() -> None:
    """m4c_evaluator.py:225-257: leave-one-out min(1, matches/3) averaged over the 10 answers.

    refs: 4 "stop", 2 "stop sign", 4 "sign". "stop sign": its 2 positions see 1 match (1/3), the other 8 see 2
    (2/3) -> (2/3 + 16/3) / 10 = 0.6. "Stop" and "The Sign." see >= 3 everywhere -> 1.0; "go" -> 0.
    """
    refs = ["stop"] * 4 + ["stop sign"] * 2 + ["sign"] * 4
    assert soft_score("stop", refs) == 1.0 and soft_score("the sign.", refs) == 1.0
    assert soft_score("stop sign", refs) == pytest.approx(0.6, abs=1e-12) and soft_score("go", refs) == 0.0
    with pytest.raises(ValueError, match="exactly 10"):
        soft_score("stop", refs[:9])
    rows = [{"answer": a, "gt_answer": [r.upper() for r in refs]} for a in ("Stop", "stop sign", "go", "")]
    c = score_answers("textvqa", rows, "compat")
    expected = 100.0 * ((1.0 + soft_score("stop sign", refs) + 0.0 + 0.0) / 4)  # textvqa_test.py:42
    assert c["csv_row"] == {"accuracy": expected} and c["overall"] == expected
    assert c["unparseable"] == 1 and score_answers("textvqa", rows, "fixed")["overall"] == expected


# ---------------------------------------------------------------------------------------------------------------
# ChartQA
# ---------------------------------------------------------------------------------------------------------------

CHART = [  # (answer, gt, compat, fixed)
    ("12", "12", True, True),
    ("12.5", "12", True, True),  # |0.5| <= 0.05 * 12 = 0.6 (relaxed_accuracy, line 23-24)
    ("13", "12", False, False),  # 1 > 0.6
    ("12%", "12", False, True),  # compat: not a float(), exact match fails
    ("Yes", "yes", True, True),  # lowercased exact match (lines 45-51)
    ("1,200", "1200", False, True),
    ("0", "0", True, True),  # |0| <= 0
]


def test_chartqa_scorer() -> None:
    """chartqa_test.py:23-61: relaxed accuracy for two numbers, else exact lowercase match; CSV total, correct
    (floats), accuracy = 100.0 * correct / total."""
    for a, g, comp, fix in CHART:
        assert chartqa_correct(a, g, "compat") is comp and chartqa_correct(a, g, "fixed") is fix, a
    rows = [{"answer": a, "gt_answer": g, "category": "human_test"} for a, g, _, _ in CHART]
    c = score_answers("chartqa", rows, "compat")
    assert c["csv_row"] == {"total": 7.0, "correct": 4.0, "accuracy": 100.0 * 4.0 / 7.0}
    assert score_answers("chartqa", rows, "fixed")["overall"] == 100.0 * 6 / 7


# ---------------------------------------------------------------------------------------------------------------
# OCRBench
# ---------------------------------------------------------------------------------------------------------------

HMER = "Handwritten Mathematical Expression Recognition"


def test_ocrbench_scorer() -> None:
    """ocrbench_test.py:41-64 (a reference contained in the answer; the CLI leaves extra_penalization off,
    lines 126-130), 78-83 (HMER: spaces removed, case kept) and 100-108 (per category then total_accuracy, in
    percent; tabulate.py:59 reads total_accuracy['accuracy']).

    Regular: 1/2 ("helo" misses "hello"); HMER: 1/2 ("x^2 + 1" -> "x^2+1" right, "X^2+1" wrong: case kept);
    KIE: 1/1 through the empty reference, which every answer contains. Total 3/5.
    """
    rows = _rows(
        [
            ("The text says HELLO world", ["hello"], "Regular Text Recognition"),
            ("helo", ["hello"], "Regular Text Recognition"),
            ("x^2 + 1", ["x^{2}+1", "x^2+1"], HMER),
            ("X^2+1", ["x^2+1"], HMER),
            ("anything", ["", "42"], "Key Information Extraction"),
        ],
        ("answer", "gt_answer", "category"),
    )
    c = score_answers("ocrbench", rows, "compat")
    assert c["csv_row"] == {
        "Regular Text Recognition": str({"accuracy": 100.0 * (1.0 / 2), "total": 2}),
        HMER: str({"accuracy": 100.0 * (1.0 / 2), "total": 2}),
        "Key Information Extraction": str({"accuracy": 100.0, "total": 1}),
        "total_accuracy": str({"accuracy": 100.0 * (3.0 / 5), "total": 5}),
    }
    assert c["overall"] == 100.0 * (3.0 / 5) and c["score"] == 3
    f = score_answers("ocrbench", rows, "fixed")  # the empty reference no longer matches everything
    assert f["overall"] == 100.0 * (2.0 / 5) and f["incorrect"] == [1, 3, 4]
    with pytest.raises(ValueError, match="empty reference"):
        score_answers("ocrbench", [{"answer": "x", "gt_answer": [""], "category": "c"}], "fixed")
    with pytest.raises(ValueError, match="list of strings"):
        score_answers("ocrbench", [{"answer": "x", "gt_answer": "abc", "category": "c"}], "compat")


def test_csv_correct_keeps_the_reference_type() -> None:
    """``correct`` starts as the int 0 and turns float on ``+= 1.0`` (realworldqa_test.py:35, 48-49;
    chartqa_test.py:37, 48-51, where a numeric row adds the int relaxed_accuracy)."""
    none_right = score_answers("realworldqa", [{"answer": "No", "gt_answer": "Yes"}], "compat")["csv_row"]
    assert none_right["correct"] == 0 and isinstance(none_right["correct"], int)
    numeric = score_answers("chartqa", [{"answer": "12", "gt_answer": "12"}], "compat")["csv_row"]
    assert numeric["correct"] == 1 and isinstance(numeric["correct"], int)
    text = score_answers(
        "chartqa", [{"answer": "12", "gt_answer": "12"}, {"answer": "a", "gt_answer": "a"}], "compat"
    )["csv_row"]
    assert text["correct"] == 2.0 and isinstance(text["correct"], float)
