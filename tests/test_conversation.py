"""encode_conversation: labels cover exactly the assistant answers; malformed inputs and mismatches raise."""

from __future__ import annotations

import pytest

from jarvis.data.conversation import IGNORE_INDEX, build_prompt, encode_conversation, expand_image_token
from jarvis.data.templates import VICUNA_SYSTEM
from jarvis.data.tokenizer import build_tokenizer

CORPUS = [
    "a red cube and two blue balls",
    "How many cubes are there?",
    "Two",
    "Red",
    "What color is the ball?",
] * 5
TURNS = [
    {"from": "human", "value": "How many cubes are there?\n<image>"},
    {"from": "gpt", "value": "Two"},
    {"from": "human", "value": "What color is the ball?"},
    {"from": "gpt", "value": "Red"},
]


@pytest.fixture(scope="module")
def vicuna():
    return build_tokenizer(CORPUS, 300, "vicuna_v1", "wordlevel")


def test_multi_turn_labels_hand_checked(vicuna) -> None:
    ids, labels = encode_conversation(vicuna, TURNS)
    toks = vicuna.convert_ids_to_tokens(ids)
    # `<image>` moved to the front of the human turn (reference stage-2 preprocessing) and rendered as `<image>▁`
    i = toks.index("<image>")
    assert toks[i : i + 3] == ["<image>", "\u2581", "How"]
    assert toks[0] == "<s>"
    supervised = [(t, lab) for t, lab, tid in zip(toks, labels, ids, strict=True) if lab != IGNORE_INDEX]
    assert [t for t, _ in supervised] == ["Two", "</s>", "Red", "</s>"]
    assert all(lab == tid for lab, tid in zip(labels, ids, strict=True) if lab != IGNORE_INDEX)
    # everything before the first answer (system, USER:, question, ASSISTANT:) is masked
    assert labels[: toks.index("Two")] == [IGNORE_INDEX] * toks.index("Two")


def test_plain_labels_are_caption_only() -> None:
    tok = build_tokenizer(CORPUS, 300, "plain", "wordlevel")
    turns = [
        {"from": "human", "value": "Describe the image concisely.\n<image>"},
        {"from": "gpt", "value": "a red cube"},
    ]
    ids, labels = encode_conversation(tok, turns)
    assert tok.convert_ids_to_tokens(ids) == ["<image>", "a", "red", "cube"]  # no BOS, no EOS (paper-spec §5)
    assert labels == [IGNORE_INDEX, *ids[1:]]


def test_template_without_generation_blocks_raises(vicuna) -> None:
    tok = build_tokenizer(CORPUS, 300, "vicuna_v1", "wordlevel")
    tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    with pytest.raises(ValueError, match="sample 'x7'.*no assistant tokens"):
        encode_conversation(tok, TURNS, sample_id="x7")


@pytest.mark.parametrize(
    ("turns", "match"),
    [
        ([], "empty conversation"),
        ([{"from": "gpt", "value": "Two"}], "expected 'human'"),
        ([{"from": "human", "value": "a"}, {"from": "human", "value": "b"}], "expected 'gpt'"),
        ([{"from": "human", "value": "a"}, {"from": "system", "value": "b"}], "malformed"),
        ([{"from": "human", "value": 3}], "malformed"),
        ([{"from": "human", "value": "<image> <image>"}, {"from": "gpt", "value": "b"}], "at most one"),
        # issue 9: these passed to_messages before (the first crashed later, the others trained on wrong labels)
        ([{"from": "human", "value": "a"}, {"from": "gpt", "value": "<image> b"}], r"turn 1 \(gpt\) holds '<image>'"),
        ([*TURNS[:2], {"from": "human", "value": "<image> c"}, TURNS[3]], r"turn 2 \(human\) holds '<image>'"),
        ([{"from": "human", "value": "a"}, {"from": "gpt", "value": " \n"}], "turn 1 is an empty answer"),
        (TURNS[:3], r"last turn \(2\) is a question without an answer"),
    ],
)
def test_malformed_conversations_raise(vicuna, turns, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        encode_conversation(vicuna, turns, sample_id="s1")


def test_max_length_truncates_but_never_cuts_the_image(vicuna) -> None:
    ids, labels = encode_conversation(vicuna, TURNS)
    short_ids, short_labels = encode_conversation(vicuna, TURNS, max_length=len(ids) - 2)
    assert short_ids == ids[:-2] and short_labels == labels[:-2]
    with pytest.raises(ValueError, match="cut the image token"):
        encode_conversation(vicuna, TURNS, max_length=3)


def test_build_prompt_matches_cambrian(vicuna) -> None:
    ids = build_prompt(vicuna, "How many cubes are there?")
    expected = vicuna("<s>" + VICUNA_SYSTEM + " USER: <image>\u2581\nHow many cubes are there? ASSISTANT:",
                      add_special_tokens=False)["input_ids"]  # fmt: skip
    assert ids == expected
    assert ids.count(vicuna.convert_tokens_to_ids("<image>")) == 1


def test_expand_image_token() -> None:
    ids, labels = expand_image_token([5, 9, 7], [-100, -100, 7], 9, 3)
    assert ids == [5, 9, 9, 9, 7] and labels == [-100, -100, -100, -100, 7]
    assert expand_image_token([1, 2], [1, 2], 9, 4) == ([1, 2], [1, 2])
    with pytest.raises(ValueError, match="at most one"):
        expand_image_token([9, 9], None, 9, 2)
