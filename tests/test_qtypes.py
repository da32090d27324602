"""Question types (jarvis.eval.qtypes, issue 12): types and chance levels from hand-made answer rows, verdicts from
the real scorers; every expected number is counted by hand in the comments."""

from __future__ import annotations

import pytest

from jarvis.eval.qtypes import chance, question_type, question_types
from jarvis.eval.scorers import score_answers


def _cv(i: int, source: str, category: str, n_options: int, answer: str, gt: str = "(A)") -> dict:
    return {"questionId": i, "prompt": "q", "answer": answer, "gt_answer": gt, "category": category,
            "options": [f"o{k}" for k in range(n_options)], "source": source}


def test_cvbench_types_and_chance_from_the_options() -> None:
    rows = [_cv(0, "SynthFlat", "Count", 4, "A"), _cv(1, "SynthFlat", "Count", 6, "B"),
            _cv(2, "SynthClutter", "Relative location", 2, "A"), _cv(3, "SynthClutter", "Count", 4, "A")]
    types = question_types("cvbench_2d", rows, score_answers("cvbench_2d", rows, "fixed"))
    # count: rows 0, 1, 3; right: 0 and 3 -> 2/3; chance (1/4 + 1/6 + 1/4) / 3 = 2/9
    assert types["count"]["correct"] == 2 and types["count"]["total"] == 3
    assert types["count"]["accuracy"] == pytest.approx(200 / 3)
    assert types["count"]["chance"] == pytest.approx(100 * 2 / 9)
    assert types["relation"] == {"correct": 1, "total": 1, "accuracy": 100.0, "chance": 50.0}


def test_yes_no_is_one_half_and_open_questions_have_no_chance() -> None:
    assert chance({"gt_answer": "Yes"}) == 0.5 and chance({"gt_answer": "no"}) == 0.5
    assert chance({"gt_answer": "red"}) is None  # open-ended: no chance level
    assert chance({"gt_answer": "(B)", "text_options": ["open", "closed"]}) == 0.5
    gqa = [{"question_id": "a", "prompt": "What color is the cube?\nAnswer", "answer": "red", "gt_answer": "red"},
           {"question_id": "b", "prompt": "What shape is the red object?\nAnswer", "answer": "cube",
            "gt_answer": "sphere"},
           {"question_id": "c", "prompt": "Is the cube red?\nAnswer", "answer": "yes", "gt_answer": "yes"}]
    types = question_types("gqa", gqa, score_answers("gqa", gqa, "fixed"))
    # the yes/no question is of no listed type; the open ones are kept apart, with chance None
    assert types == {"colour (open)": {"correct": 1, "total": 1, "accuracy": 100.0, "chance": None},
                     "shape (open)": {"correct": 0, "total": 1, "accuracy": 0.0, "chance": None}}


def test_presence_and_colour_across_pope_and_mme() -> None:
    pope = [{"question_id": i, "prompt": "Is there a cube?", "answer": a, "gt_answer": g, "category": "random"}
            for i, (a, g) in enumerate([("yes", "yes"), ("yes", "no"), ("no", "no"), ("yes", "yes")])]
    assert question_types("pope", pope, score_answers("pope", pope, "fixed")) == {
        "presence": {"correct": 3, "total": 4, "accuracy": 75.0, "chance": 50.0}}
    mme = [{"question_id": f"{c}/0.png", "pair_id": f"{c}/0.png", "prompt": "p", "answer": a, "gt_answer": g,
            "category": c} for c, a, g in [("existence", "Yes", "Yes"), ("existence", "Yes", "No"),
                                           ("color", "No", "No"), ("color", "No", "No"),
                                           ("count", "Yes", "Yes"), ("count", "No", "Yes")]]
    types = question_types("mme", mme, score_answers("mme", mme, "fixed"))
    assert types == {"presence": {"correct": 1, "total": 2, "accuracy": 50.0, "chance": 50.0},
                     "colour": {"correct": 2, "total": 2, "accuracy": 100.0, "chance": 50.0}}  # count: no type
    assert question_type("mme", {"category": "count"}) is None


def test_mmvp_is_scored_per_question() -> None:
    rows = [{"question_id": i, "pair_id": 0, "prompt": "p", "answer": a, "gt_answer": "(a)",
             "text_options": ["open", "closed"]} for i, a in enumerate(["A", "B"])]
    scores = score_answers("mmvp", rows, "fixed")
    assert scores["overall"] == 0.0  # the pair fails...
    assert question_types("mmvp", rows, scores) == {  # ...one of its two questions is right
        "mmvp": {"correct": 1, "total": 2, "accuracy": 50.0, "chance": 50.0}}
