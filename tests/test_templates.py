"""Chat templates render the exact reference strings; the assistant mask covers only answers; tokenizers round-trip."""

from __future__ import annotations

import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from jarvis.data.templates import QWEN2_SYSTEM, TEMPLATES, VICUNA_SYSTEM, template_name
from jarvis.data.tokenizer import attach_chat_template, build_tokenizer, train_tokenizer

CORPUS = ["a red cube and two blue balls on a checkered floor", "How many cubes are there?", "Two", "Red",
          "What color is the ball?", "Is the door open?"] * 5  # fmt: skip
MSGS = [
    {"role": "user", "content": "<image>\nHow many cubes are there?"},
    {"role": "assistant", "content": "Two"},
    {"role": "user", "content": "What color is the ball?"},
    {"role": "assistant", "content": "Red"},
]
QS = "Is the door open?\nAnswer with the option's letter from the given choices directly."


@pytest.fixture(scope="module", params=["bpe", "wordlevel"])
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


def render(name: str, kind: str = "bpe", **kw: object) -> str:
    tok = build_tokenizer(CORPUS, 300, name, kind)
    return tok.apply_chat_template(MSGS if not kw.pop("gen", False) else MSGS[:1], tokenize=False, **kw)


def test_vicuna_multi_turn_exact() -> None:
    expected = ("<s>" + VICUNA_SYSTEM + " USER: <image>\u2581\nHow many cubes are there? ASSISTANT: Two</s>"
                "USER: What color is the ball? ASSISTANT: Red</s>")  # fmt: skip
    assert render("vicuna_v1") == expected


def test_qwen2_multi_turn_exact() -> None:
    expected = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                "<|im_start|>user\n<image>\nHow many cubes are there?<|im_end|>\n<|im_start|>assistant\nTwo<|im_end|>\n"
                "<|im_start|>user\nWhat color is the ball?<|im_end|>\n<|im_start|>assistant\nRed<|im_end|>\n")  # fmt: skip
    assert render("qwen2") == expected


def test_mistral_and_plain_exact() -> None:
    assert render("mistral") == (
        "<s>[INST] <image>\nHow many cubes are there? [/INST] Two</s>[INST] What color is the ball? [/INST] Red</s>"
    )
    # plain: `<image>` + caption, no BOS/EOS/separator, instruction dropped (paper-spec §5)
    tok = build_tokenizer(CORPUS, 300, "plain")
    msgs = [
        {"role": "user", "content": "Describe the image concisely.\n<image>"},
        {"role": "assistant", "content": "a red cube"},
    ]
    assert tok.apply_chat_template(msgs, tokenize=False) == "<image>a red cube"


def test_cambrian_generation_prompts() -> None:
    """benchmarks-spec §1 rendered prompts (vicuna preceded by BOS, which the harness adds when tokenising)."""
    user = [{"role": "user", "content": "<image>\n" + QS}]
    vic = build_tokenizer(CORPUS, 300, "vicuna_v1")
    assert vic.apply_chat_template(user, tokenize=False, add_generation_prompt=True) == (
        "<s>A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
        "detailed, and polite answers to the user's questions. USER: <image>\u2581\n" + QS + " ASSISTANT:"
    )
    qwen = build_tokenizer(CORPUS, 300, "qwen2")
    assert qwen.apply_chat_template(user, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n<image>\n"
        + QS
        + "<|im_end|>\n<|im_start|>assistant\n"
    )
    assert QWEN2_SYSTEM == "You are a helpful assistant."


@pytest.mark.parametrize(
    ("name", "answer_tokens"),
    [("vicuna_v1", ["Two", "</s>", "Red", "</s>"]), ("qwen2", ["Two", "<|im_end|>", "Red", "<|im_end|>"]),
     ("mistral", ["Two", "</s>", "Red", "</s>"]), ("plain", ["Two"])],
)  # fmt: skip
def test_assistant_mask_marks_only_answers(name: str, answer_tokens: list[str]) -> None:
    # WordLevel: one token per word, so the masked tokens can be written down by hand.
    tok = build_tokenizer(CORPUS, 300, name, "wordlevel")
    out = tok.apply_chat_template(MSGS, return_assistant_tokens_mask=True, return_dict=True)
    toks = tok.convert_ids_to_tokens(out["input_ids"])
    assert [t for t, m in zip(toks, out["assistant_masks"], strict=True) if m] == answer_tokens


def test_assistant_mask_bpe_decodes_to_answers() -> None:
    tok = build_tokenizer(CORPUS, 300, "vicuna_v1", "bpe")
    out = tok.apply_chat_template(MSGS, return_assistant_tokens_mask=True, return_dict=True)
    picked = [i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tok.decode(picked) == "Two</s>Red</s>"


def test_save_load_same_ids(tmp_path, kind: str) -> None:
    tok = train_tokenizer(CORPUS, 300, "qwen2", tmp_path / "tok", kind=kind)
    again = AutoTokenizer.from_pretrained(tmp_path / "tok")
    text = tok.apply_chat_template(MSGS, tokenize=False)
    assert again.apply_chat_template(MSGS, tokenize=False) == text
    assert (
        again(text, add_special_tokens=False)["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]
    )
    assert again.convert_tokens_to_ids(["<pad>", "<unk>", "<s>", "</s>", "<image>"]) == [0, 1, 2, 3, 4]
    assert template_name(again.chat_template) == "qwen2"
    # overwrite in place (atomic swap of an existing directory)
    train_tokenizer(CORPUS, 300, "vicuna_v1", tmp_path / "tok", kind=kind)
    assert template_name(AutoTokenizer.from_pretrained(tmp_path / "tok").chat_template) == "vicuna_v1"
    assert [p.name for p in tmp_path.iterdir()] == ["tok"]  # no temp directories left behind


def test_attach_chat_template_to_foreign_tokenizer() -> None:
    vocab = {"<unk>": 0, "</s>": 1, "<s>": 2, "hello": 3}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", eos_token="</s>", bos_token="<s>"
    )
    added = attach_chat_template(tok, "vicuna_v1")
    assert added == 1 and tok.pad_token == "<unk>"
    assert len(tok.encode("<image>", add_special_tokens=False)) == 1
    assert template_name(tok.chat_template) == "vicuna_v1"
    assert attach_chat_template(tok, "vicuna_v1") == 0  # idempotent


def test_unknown_template_name() -> None:
    with pytest.raises(KeyError, match="known"):
        build_tokenizer(CORPUS, 300, "llama_3")
    assert set(TEMPLATES) == {"plain", "vicuna_v1", "qwen2", "mistral"}
