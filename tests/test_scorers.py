"""Scorer tests: every golden vector of benchmarks-spec.md §9 (compat), the fixed-mode rules of §3, and
malformed answers. Expected numbers are the spec's printed values or hand-computed in the comments."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from jarvis.eval import parsing as P
from jarvis.eval.scorers import cvbench_table, main_score, read_answers, score_answers

# ---------------------------------------------------------------------------------------------------------------
# extractors
# ---------------------------------------------------------------------------------------------------------------

GV_MCQ = [
    ("B", "b"),
    ("(B)", "b"),
    ("B.", "b"),
    ("b)", "b"),
    ("(B) below", "b"),
    ("The answer is (C).", "c"),
    ("answer: (a) 3", "a"),
    ("below", "b"),
    ("left", "l"),
    ("", ""),
    ("The correct option is B", "t"),
    ("3", "3"),
    ("A,", "a"),
    ("(A) lamp", "a"),
    ("The answer is: D", ":"),
    ("(C) 5 chairs", "c"),
    ("B, because it is closer", "b"),
    ("b.", "b"),
    ("C:", "c"),
    ("\n(D)\n", "d"),
]


@pytest.mark.parametrize(("answer", "expected"), GV_MCQ, ids=[f"GV-MCQ-{i + 1:02d}" for i in range(20)])
def test_gv_mcq_compat(answer: str, expected: str) -> None:
    assert P.mcq_compat(answer, trailing=".") == expected  # ade/coco
    assert P.mcq_compat(answer, trailing=".:,") == expected  # omni gives the same on every row here


# Fixed mode (spec §3 #3/#4/#5): options are 4 letters unless given.
GV_MCQ_FIXED = [
    ("B", None, "b"),
    ("(B)", None, "b"),
    ("B.", None, "b"),
    ("b)", None, "b"),
    ("(B) below", None, "b"),
    ("The answer is (C).", None, "c"),
    ("answer: (a) 3", None, "a"),
    ("below", ["above", "below"], "b"),
    ("below", None, None),  # free text maps only through options
    ("left", ["left", "right"], "a"),
    ("left", None, None),
    ("", None, None),
    ("The correct option is B", None, None),
    ("3", ["1", "2", "3"], "c"),
    ("3", None, None),
    ("A,", None, "a"),
    ("(A) lamp", None, "a"),
    ("The answer is: D", None, "d"),
    ("(C) 5 chairs", None, "c"),
    ("B, because it is closer", None, "b"),
    ("b.", None, "b"),
    ("C:", None, "c"),
    ("\n(D)\n", None, "d"),
    ("E", ["x", "y"], None),  # letter outside the options
    ("A. Open", ["Open", "Closed"], "a"),
    ("A. Closed", ["Open", "Closed"], None),  # self-contradiction
    ("Closed.", ["Open", "Closed"], "b"),
    ("Answer:B", None, "b"),
    ("The answer is (B) because " + "it is far " * 50, None, "b"),
]


@pytest.mark.parametrize(("answer", "options", "expected"), GV_MCQ_FIXED)
def test_letter_fixed(answer: str, options: list[str] | None, expected: str | None) -> None:
    assert P.letter_fixed(answer, options) == expected


GV_MMVP_P = [
    ("A", "a"),
    ("(a)", "a"),
    ("a.", "a"),
    ("Open", "open"),
    ("(a) Open", "a) open"),
    ("The answer is B.", "b"),
    ("answer is B", "b"),
    ("(C) 5 chairs", "c) 5 chairs"),
    ("B, because it is closer", "b, because it is closer"),
    ("b.", "b"),
    ("Answer:B", "b"),
    ("none", "none"),
]


@pytest.mark.parametrize(("answer", "expected"), GV_MMVP_P, ids=[f"GV-MMVP-P-{i + 1:02d}" for i in range(12)])
def test_gv_mmvp_extractor(answer: str, expected: str) -> None:
    assert P.mcq_compat(answer, trailing=".:,", truncate=False) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("(A)", "a"), ("A", "a"), ("A. 3", "a"), ("(B) 2", "b"), ("The answer is A", "the"), ("(C).", "c")],
    ids=[f"GV-BLINK-{i + 1:02d}" for i in range(6)],
)
def test_gv_blink_extractor(answer: str, expected: str) -> None:
    assert P.blink_compat(answer) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("A", "a"), ("A.", "a"), ("(A)", "(a)"), ("a", "a"), ("B, because", "b")],
    ids=[f"GV-MMSTAR-{i + 1:02d}" for i in range(5)],
)
def test_gv_mmstar_extractor(answer: str, expected: str) -> None:
    assert P.first_token_compat(answer) == expected


@pytest.mark.parametrize(
    ("answer", "expected"),
    [("Yes", "yes"), ("Yes, there is a dog.", "yes"), ("no", "no"), ("There is no dog", "there")],
    ids=[f"GV-POPE-{i + 1:02d}" for i in range(4)],
)
def test_gv_pope_extractor(answer: str, expected: str) -> None:
    assert P.first_token_compat(answer) == expected


def test_yes_no_fixed() -> None:
    assert [
        P.yes_no_fixed(a) for a in ["Yes", "Yes, there is a dog.", "no", "There is no dog", "", "NO."]
    ] == ["yes", "yes", "no", None, None, "no"]


def test_mmstar_options_parsed() -> None:
    q = "Which is red? Options: A: the cube, B: the ball, C: a cone, D: none"
    assert P.parse_mmstar_options(q) == ["the cube", "the ball", "a cone", "none"]
    assert P.parse_mmstar_options("no options here") == []


def test_gv_floor_pairs() -> None:
    """GV-FLOOR: the float floor quirk behind fix #2 (checked on the spec's examples and its count)."""
    for m, n in [(15, 22), (13, 23), (31, 39)]:
        assert math.floor((m / n) * n) == m - 1
    assert sum(math.floor((m / n) * n) == m - 1 for n in range(1, 1001) for m in range(n + 1)) == 18657


# ---------------------------------------------------------------------------------------------------------------
# scorers on rows
# ---------------------------------------------------------------------------------------------------------------


def _mmvp_rows(pairs: list[tuple[str, str]]) -> list[dict]:
    return [
        {"question_id": i, "answer": a, "gt_answer": g, "text_options": ["Open", "Closed"]}
        for i, (a, g) in enumerate(pairs)
    ]


GV_MMVP_S = [
    ([("a", "(a)"), ("b", "(b)"), ("A", "(a)"), ("Closed", "(b)")], (4.0, 4, 100.0), []),
    ([("b", "(a)"), ("b", "(b)"), ("a", "(a)"), ("a", "(b)")], (4.0, 0, 0.0), [0, 3]),
    (
        [
            ("b", "(a)"),
            ("b", "(b)"),
            ("Open", "(a)"),
            ("(b)", "(b)"),
            ("A.", "(a)"),
            ("The answer is B.", "(b)"),
        ],
        (6.0, 4, 66.66666666666667),
        [0],
    ),
    ([("A. Open", "(a)"), ("B. Closed", "(b)")], (2.0, 0, 0.0), [0, 1]),
]


@pytest.mark.parametrize(
    ("pairs", "csv", "incorrect"), GV_MMVP_S, ids=[f"GV-MMVP-S-0{i + 1}" for i in range(4)]
)
def test_gv_mmvp_pairs(pairs: list, csv: tuple, incorrect: list[int]) -> None:
    s = score_answers("mmvp", _mmvp_rows(pairs), mode="compat")
    assert tuple(s["csv_row"].values()) == csv
    assert s["incorrect"] == incorrect
    assert s["overall"] == csv[2]


def test_mmvp_fixed() -> None:
    # S-04 in fixed mode: "A. Open" / "B. Closed" name the letter and its own option text -> 1 of 1 pair.
    s = score_answers("mmvp", _mmvp_rows(GV_MMVP_S[3][0]))
    assert (s["overall"], s["pairs_correct"], s["pairs"], s["unparseable"]) == (100.0, 1, 1, 0)
    # Fixed pairing uses ids, not line order: shuffle the S-03 rows and get the same 2/3 pairs.
    rows = _mmvp_rows(GV_MMVP_S[2][0])
    shuffled = [rows[i] for i in (5, 2, 0, 3, 1, 4)]
    assert score_answers("mmvp", shuffled)["overall"] == pytest.approx(200 / 3)
    # S-02 has no fully right pair; moving line 0 after line 2 lines up two right answers, which compat's
    # line-order parity counts as a pair (the quirk fix #12 removes) while fixed still finds none.
    rows = [_mmvp_rows(GV_MMVP_S[1][0])[i] for i in (1, 2, 0, 3)]
    assert score_answers("mmvp", rows, mode="compat")["overall"] == 50.0
    assert score_answers("mmvp", rows)["overall"] == 0.0


def test_mmvp_fixed_unpaired_fails() -> None:
    rows = _mmvp_rows([("a", "(a)"), ("b", "(b)"), ("a", "(a)")])
    with pytest.raises(ValueError, match="pair"):
        score_answers("mmvp", rows)


CV2D_ROWS = [
    ("(A)", "(A)", "Count", ["3", "2"]),
    ("B", "(A)", "Count", ["3", "2"]),
    ("(B) below", "(B)", "Relative location", ["above", "below"]),
    ("left", "(A)", "Relative location", ["left", "right"]),
]


def _mcq_rows(spec: list[tuple], source: str | None = None) -> list[dict]:
    rows = []
    for i, (a, g, c, o) in enumerate(spec):
        r = {"questionId": i, "answer": a, "gt_answer": g, "category": c, "options": o}
        if source:
            r["source"] = source
        rows.append(r)
    return rows


@pytest.mark.parametrize("mode", ["compat", "fixed"])
def test_gv_cv2d(mode: str) -> None:
    s = score_answers("ade", _mcq_rows(CV2D_ROWS), mode=mode)
    if mode == "compat":
        assert list(s["csv_row"]) == ["accuracy", "total_count", "Count", "Relative location"]
        assert s["csv_row"] == {
            "accuracy": 0.5,
            "total_count": 4,
            "Count": "{'accuracy': 0.5, 'total': 2}",
            "Relative location": "{'accuracy': 0.5, 'total': 2}",
        }
    # Fixed: "left" maps to option A through its text (right, by a real match rather than the first letter).
    assert s["overall"] == (50.0 if mode == "compat" else 75.0)


CV3D_ROWS = [
    ("A", "(A)", "Depth", ["lamp", "pillow"]),
    ("pillow", "(B)", "Depth", ["lamp", "pillow"]),
    ("The answer is (B).", "(B)", "Distance", ["table", "bus"]),
    ("3", "(C)", "Distance", ["1", "2", "3"]),
]


def test_gv_cv3d_compat() -> None:
    s = score_answers("omni", _mcq_rows(CV3D_ROWS), mode="compat")
    assert s["csv_row"] == {
        "accuracy": 0.75,
        "total_count": 4,
        "Depth": "{'accuracy': 0.5, 'total': 2}",
        "Distance": "{'accuracy': 1.0, 'total': 2}",
    }
    assert s["incorrect"] == [1]


def test_cv3d_fixed() -> None:
    # fix #5: "pillow" is compared in full with the lowercased options -> (B), right.
    s = score_answers("omni", _mcq_rows(CV3D_ROWS))
    assert (s["overall"], s["incorrect"], s["unparseable"]) == (100.0, [], 0)


def _cvall_rows(counts: dict[str, tuple[int, int]], source: str) -> list[dict]:
    """First c rows of a category right, the rest wrong (how GV-CVALL was produced)."""
    rows = []
    for cat, (c, n) in counts.items():
        for i in range(n):
            rows.append(
                {
                    "questionId": len(rows),
                    "answer": "A" if i < c else "B",
                    "gt_answer": "(A)",
                    "category": cat,
                    "options": ["x", "y"],
                    "source": source,
                }
            )
    return rows


CVALL = {
    "ADE20K": {"Count": (15, 22), "Relative location": (30, 40)},
    "COCO": {"Count": (13, 23), "Relative location": (20, 30)},
    "Omni3D": {"Depth": (31, 39), "Distance": (20, 40)},
}


def test_gv_cvall_compat() -> None:
    subs = {
        k: score_answers(k, _cvall_rows(CVALL[src], src), "compat")
        for k, src in [("ade", "ADE20K"), ("coco", "COCO"), ("omni", "Omni3D")]
    }
    assert subs["ade"]["overall"] == 72.58064516129032
    assert subs["coco"]["overall"] == 62.264150943396224
    assert subs["omni"]["overall"] == 64.55696202531645
    t = cvbench_table(subs["ade"], subs["coco"], subs["omni"], "compat")
    expected = {
        "Count 2D": 57.77777777777777,
        "Relative location 2D": 71.42857142857143,
        "Depth 3D": 79.48717948717949,
        "Distance 3D": 50.0,
        "Accuracy 3D": 64.55696202531645,
        "Accuracy ADE": 72.58064516129032,
        "Accuracy COCO": 62.264150943396224,
        "Accuracy 2D": 67.42239805234327,
        "CV-Bench": 65.98968003882986,
    }
    for k, v in expected.items():
        assert t[k] == pytest.approx(v, rel=1e-9, abs=1e-6), k
    # The same through score_answers("cvbench") on the merged rows.
    rows = [r for src in CVALL for r in _cvall_rows(CVALL[src], src)]
    s = score_answers("cvbench", rows, "compat")
    assert s["overall"] == pytest.approx(65.98968003882986, abs=1e-9)
    assert s["table"]["Count 2D"] == pytest.approx(57.77777777777777, abs=1e-9)
    s2 = score_answers("cvbench_2d", [r for r in rows if r["source"] != "Omni3D"], "compat")
    assert s2["overall"] == pytest.approx(67.42239805234327, abs=1e-9)
    s3 = score_answers("cvbench_3d", [r for r in rows if r["source"] == "Omni3D"], "compat")
    assert s3["overall"] == pytest.approx(64.55696202531645, abs=1e-9)


def test_cvall_fixed_uses_integer_counts() -> None:
    rows = [r for src in CVALL for r in _cvall_rows(CVALL[src], src)]
    s = score_answers("cvbench", rows, "fixed")
    assert s["table"]["Count 2D"] == pytest.approx(100 * 28 / 45)  # fix #2: the exact value, 62.22
    assert s["table"]["Relative location 2D"] == pytest.approx(100 * 50 / 70)
    assert s["overall"] == pytest.approx(65.98968003882986, abs=1e-9)  # pooled accuracies are unaffected


def test_cvbench_rejects_unknown_source() -> None:
    rows = _mcq_rows(CV2D_ROWS, source="ImageNet")
    with pytest.raises(ValueError, match="unknown source"):
        score_answers("cvbench_2d", rows)


def test_cvbench_synthetic_sources() -> None:
    rows = _mcq_rows(CV2D_ROWS[:2], "SynthFlat") + _mcq_rows(CV2D_ROWS[2:], "SynthClutter")
    s = score_answers("cvbench_2d", rows, "compat")
    # SynthFlat plays ADE (1/2 right), SynthClutter plays COCO ("(B) below" right, "left" -> "l" wrong): 50 / 50.
    assert s["table"]["Accuracy ADE"] == 50.0 and s["table"]["Accuracy COCO"] == 50.0


@pytest.mark.parametrize("mode", ["compat", "fixed"])
def test_gv_blink_scorer(mode: str) -> None:
    answers = ["(A)", "A", "A. 3", "(B) 2", "The answer is A", "(C)."]
    gts = ["(A)", "(A)", "(A)", "(B)", "(A)", "(C)"]
    rows = [
        {
            "question_id": i,
            "answer": a,
            "gt_answer": g,
            "category": "Counting" if i < 3 else "IQ_Test",
            "choices": ["3", "2", "1"],
        }
        for i, (a, g) in enumerate(zip(answers, gts, strict=True))
    ]
    s = score_answers("blink", rows, mode)
    # compat: "The answer is A" -> "the" (wrong); fixed: the robust extractor reads "a" (fix #7).
    assert s["incorrect"] == ([4] if mode == "compat" else [])
    if mode == "compat":
        assert s["csv_row"]["accuracy"] == 5 / 6
        assert s["csv_row"]["IQ_Test"] == str({"accuracy": 2 / 3, "total": 3})


MME01 = [("Yes", "Yes"), ("No", "No"), ("Yes.", "Yes"), ("Yes", "No"), ("No", "Yes"), ("No", "No")]
MME02 = [
    ("Yes", "Yes", "count"),
    ("No", "No", "count"),
    ("No", "Yes", "count"),
    ("No", "No", "count"),
    ("Yes", "Yes", "code_reasoning"),
    ("no.", "No", "code_reasoning"),
    ("Yes, it is", "Yes", "code_reasoning"),
    ("No", "No", "code_reasoning"),
]


def _mme_rows(spec: list[tuple]) -> list[dict]:
    return [
        {
            "question_id": f"{(t[2] if len(t) > 2 else 'existence')}/{i // 2}.png",
            "answer": t[0],
            "gt_answer": t[1],
            "category": t[2] if len(t) > 2 else "existence",
        }
        for i, t in enumerate(spec)
    ]


@pytest.mark.parametrize("mode", ["compat", "fixed"])
def test_gv_mme_01(mode: str) -> None:
    s = score_answers("mme", _mme_rows(MME01), mode)
    assert (s["total_score"], s["accuracy"], s["perception"], s["cognition"]) == (
        100.0,
        66.66666666666666,
        100.0,
        0.0,
    )
    ex = s["categories"]["existence"]
    assert {k: ex[k] for k in ("acc_score", "acc_plus_score", "score", "size")} == {
        "acc_score": 66.66666666666666,
        "acc_plus_score": 33.33333333333333,
        "score": 100.0,
        "size": 6.0,
    }
    assert s["overall"] == 100.0


def test_gv_mme_02_compat() -> None:
    s = score_answers("mme", _mme_rows(MME02), "compat")
    assert list(s["csv_row"]) == [
        "total_score",
        "accuracy",
        "Perception",
        "Cognition",
        "count",
        "code_reasoning",
    ]
    assert (s["total_score"], s["accuracy"], s["perception"], s["cognition"]) == (250.0, 75.0, 125.0, 125.0)
    d = "{'acc_score': 75.0, 'acc_plus_score': 50.0, 'score': 125.0, 'size': 4.0}"
    assert s["csv_row"]["count"] == d and s["csv_row"]["code_reasoning"] == d
    assert s["incorrect"] == [2, 6]


def test_mme_02_fixed() -> None:
    # fix #8: "Yes, it is" reads as yes -> code_reasoning 4/4 right, 2/2 images: 100 + 100 = 200.
    s = score_answers("mme", _mme_rows(MME02), "fixed")
    assert s["categories"]["code_reasoning"]["score"] == 200.0
    assert s["categories"]["count"]["score"] == 125.0
    assert (s["perception"], s["cognition"], s["incorrect"]) == (125.0, 200.0, [2])


def test_mme_odd_category_shifts_compat_only() -> None:
    # A 3-row category before a 2-row one: compat pairs across the boundary; fixed pairs by image id.
    rows = [
        {"question_id": "a.png", "answer": "Yes", "gt_answer": "Yes", "category": "color"},
        {"question_id": "a.png", "answer": "Yes", "gt_answer": "Yes", "category": "color"},
        {"question_id": "b.png", "answer": "No", "gt_answer": "No", "category": "color"},
        {"question_id": "c.png", "answer": "Yes", "gt_answer": "Yes", "category": "scene"},
        {"question_id": "c.png", "answer": "Yes", "gt_answer": "Yes", "category": "scene"},
    ]
    # compat, hand-run: color counter 1,2,3 (line 2 is even); scene line 3 (odd) with scene counter 0 -> stays 0,
    # line 4 -> 1. So scene acc+ = 1/2 = 50 although both of its answers are right.
    assert score_answers("mme", rows, "compat")["categories"]["scene"]["acc_plus_score"] == 50.0
    with pytest.raises(ValueError, match="pair"):  # b.png has one question: fixed refuses to guess
        score_answers("mme", rows, "fixed")
    assert (
        score_answers("mme", rows[:2] + rows[3:], "fixed")["categories"]["scene"]["acc_plus_score"] == 100.0
    )


def test_mme_unknown_category() -> None:
    with pytest.raises(ValueError, match="unknown category"):
        score_answers(
            "mme", [{"question_id": "x", "answer": "Yes", "gt_answer": "Yes", "category": "nope"}] * 2
        )


def _token_rows(pairs: list[tuple[str, str]], category: str = "c") -> list[dict]:
    return [
        {"question_id": i, "answer": a, "gt_answer": g, "category": category}
        for i, (a, g) in enumerate(pairs)
    ]


def test_gv_mmstar_scorer() -> None:
    rows = _token_rows([("A", "A"), ("A.", "A"), ("(A)", "A"), ("a", "A"), ("B, because", "B")])
    s = score_answers("mmstar", rows, "compat")
    assert s["csv_row"] == {"total": 5.0, "correct": 4.0, "accuracy": 80.0}
    assert s["incorrect"] == [2]
    assert score_answers("mmstar", rows, "fixed")["overall"] == 100.0  # fix #9: "(A)" reads as a


@pytest.mark.parametrize("bench", ["mmstar", "pope"])
def test_empty_answer_crashes_compat_only(bench: str) -> None:
    rows = _token_rows([("", "A" if bench == "mmstar" else "yes"), ("  ", "no")])
    with pytest.raises(IndexError):
        score_answers(bench, rows, "compat")  # GV-MMSTAR-06: the reference raises IndexError
    s = score_answers(bench, rows, "fixed")
    assert (s["overall"], s["unparseable"], s["unparseable_rate"]) == (0.0, 2, 1.0)


def test_gv_pope_scorer() -> None:
    rows = _token_rows(
        [("Yes", "yes"), ("Yes, there is a dog.", "yes"), ("no", "no"), ("There is no dog", "no")],
        "adversarial",
    )
    c, f = score_answers("pope", rows, "compat"), score_answers("pope", rows, "fixed")
    assert c["overall"] == 75.0 and c["incorrect"] == [3]
    assert f["overall"] == 75.0 and f["unparseable"] == 1
    # fix #10: tp=2, fp=0, fn=0 -> precision = recall = F1 = 100; yes-ratio 2/4.
    assert f["pope"]["all"] == {"precision": 100.0, "recall": 100.0, "f1": 100.0, "yes_ratio": 50.0}
    assert set(f["pope"]) == {"all", "adversarial"}


def test_pope_stats_hand_computed() -> None:
    rows = _token_rows([("yes", "yes"), ("yes", "no"), ("no", "yes"), ("no", "no"), ("yes", "yes")])
    st = score_answers("pope", rows)["pope"]["all"]
    # tp=2 fp=1 fn=1: P = R = 2/3, F1 = 2/3, yes-ratio 3/5.
    assert st["precision"] == pytest.approx(200 / 3) and st["recall"] == pytest.approx(200 / 3)
    assert st["f1"] == pytest.approx(200 / 3) and st["yes_ratio"] == pytest.approx(60.0)


def test_gqa_modes() -> None:
    rows = _token_rows([("Dog.", "dog"), ("The dog", "dog"), ("red", "blue"), ("", "left")])
    c, f = score_answers("gqa", rows, "compat"), score_answers("gqa", rows, "fixed")
    assert (c["overall"], c["incorrect"]) == (25.0, [1, 2, 3])
    assert (f["overall"], f["incorrect"], f["unparseable"]) == (50.0, [2, 3], 1)


@pytest.mark.parametrize("mode", ["compat", "fixed"])
def test_malformed_mcq_answers(mode: str) -> None:
    """Empty, long free text and a wrong letter format: scored wrong, never a crash (ade)."""
    spec = [
        ("", "(A)", "Count", ["3", "2"]),
        ("I think that there are many objects " * 40, "(B)", "Count", ["3", "2"]),
        ("Option-B", "(B)", "Count", ["3", "2"]),
        ("[B]", "(B)", "Count", ["3", "2"]),
    ]
    s = score_answers("ade", _mcq_rows(spec), mode)
    assert s["overall"] == 0.0 and s["incorrect"] == [0, 1, 2, 3]
    assert s["unparseable"] == 4  # none of them names a letter by the robust rules


def test_bad_inputs_fail_loudly() -> None:
    with pytest.raises(ValueError, match="unknown benchmark"):
        score_answers("nope", [{"answer": "a"}])
    with pytest.raises(ValueError, match="mode"):
        score_answers("ade", _mcq_rows(CV2D_ROWS), mode="strict")
    with pytest.raises(ValueError, match="no answer rows"):
        score_answers("ade", [])
    with pytest.raises(ValueError, match="'gt_answer'"):
        score_answers("ade", [{"answer": "A"}])


def _cv2d_questions(root, spec: list[tuple]) -> None:
    """A CV-Bench ``test_2d.jsonl`` holding the questions of ``spec`` (ADE20K), for ``jarvis score --questions``."""
    task = {"Count": "Count", "Relative location": "Relation"}
    lines = [
        {"idx": i, "filename": f"img/2D/{i}.png", "task": task[c], "prompt": "?", "answer": g, "choices": o,
         "source": "ADE20K", "type": "2D"}
        for i, (_, g, c, o) in enumerate(spec)
    ]  # fmt: skip
    (root / "test_2d.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))


def test_cli_prints_scores_json(tmp_path, capsys) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _mcq_rows(CV2D_ROWS, source="ADE20K")))
    _cv2d_questions(tmp_path, CV2D_ROWS)
    assert read_answers(path)[2]["answer"] == "(B) below"
    assert main_score(["--benchmark", "ade", "--questions", str(tmp_path), "--mode", "compat", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["overall"], out["mode"], out["benchmark"]) == (50.0, "compat", "ade")
    assert out["coverage"] == {"answered": 4, "total": 4, "fraction": 1.0, "partial": False}


@pytest.mark.slow
def test_cli_subprocess(tmp_path) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _mcq_rows(CV2D_ROWS, source="ADE20K")))
    _cv2d_questions(tmp_path, CV2D_ROWS)
    code = "import sys; from jarvis.eval.scorers import main_score; sys.exit(main_score(sys.argv[1:]))"
    res = subprocess.run(
        [sys.executable, "-c", code, "--benchmark", "ade", "--questions", str(tmp_path), str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(res.stdout)["overall"] == 75.0


def test_mcq_ground_truth_must_name_an_option() -> None:
    # Before: compat omni/mmvp indexed the options with the gt letter: IndexError, or a silent wrap-around.
    rows = _mcq_rows([("A", "(C)", "Depth", ["lamp", "pillow"])])
    with pytest.raises(ValueError, match=r"line 1: gt_answer '\(C\)' does not name one of the 2 options"):
        score_answers("omni", rows, "compat")
    with pytest.raises(ValueError, match=r"line 2: 'text_options' must be a non-empty list of strings"):
        score_answers("mmvp", [_mmvp_rows([("a", "(a)")])[0], {"answer": "a", "gt_answer": "(b)"}], "compat")
