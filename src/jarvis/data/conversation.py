"""Encode LLaVA conversations into (input_ids, labels) through the tokenizer's chat template.

The label mask comes from the template's ``{% generation %}`` blocks (``return_assistant_tokens_mask=True``), never from
searching separator tokens in the ids as the reference does (benchmarks-spec §5.3). A conversation with assistant
turns whose mask comes back all zero raises, instead of training on loss 0 the way LLaVA's "(ignored)" branch does
(style rule 8).

Image placeholder handling follows the reference's stage-2 preprocessing: in a human turn containing ``<image>`` the
token is removed and re-prefixed as ``<image>\\n`` (benchmarks-spec §5.3); evaluation prompts prepend ``<image>\\n``
as the Cambrian harness does (benchmarks-spec §1).

Supervision starts where the *generation prompt* ends. Templates put a separator between the assistant role and its
answer (vicuna's ``ASSISTANT: {a}``, mistral's ``[/INST] {a}``) that the generation prompt of evaluation leaves out
(``ASSISTANT:``, as LLaVA and the Cambrian harness render it). With SentencePiece the space goes into the answer's
first token (``▁Yes``); a byte-level BPE trained on a small corpus often has ``ĠYes`` but not ``ĠPurple`` and emits
the space as a token of its own, outside the generation block. That token was unsupervised, so at evaluation, right
after ``ASSISTANT:``, the model had never been trained to start such an answer: every answer whose first word the
tokenizer does not merge with the space was out of reach (issue 12: the image-reaches-the-logits test found it).
Such whitespace tokens between the generation prompt and the answer are supervised now; answers whose first token
already carries the space are encoded exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from jarvis.data.templates import IMAGE_TOKEN

IGNORE_INDEX = -100
_ROLES = {"human": "user", "gpt": "assistant"}


def image_token_id(tokenizer: PreTrainedTokenizerBase, image_token: str = IMAGE_TOKEN) -> int:
    """The id of ``image_token``; raises if it is unknown or not a single id."""
    ids = tokenizer.encode(image_token, add_special_tokens=False)
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise ValueError(
            f"{image_token!r} must be one known token id, got {ids}; add it as a special token "
            "(jarvis.data.tokenizer.attach_chat_template does)"
        )
    return int(ids[0])


class ConversationError(ValueError):
    """A conversation that cannot be trained on, with its drop reason (``jarvis.data.dataset.DROP_REASONS``)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def to_messages(
    turns: Sequence[dict[str, Any]], image_token: str = IMAGE_TOKEN, sample_id: object = None
) -> list[dict[str, str]]:
    """Validate LLaVA turns and map them to chat messages (``human``→user, ``gpt``→assistant).

    Raises ``ConversationError`` (a ``ValueError``) naming the sample and the turn (0-based, as in the JSON list)
    when the conversation is empty, a turn is malformed, the roles do not alternate starting with ``human`` and
    ending with ``gpt``, an assistant answer is empty, or ``<image>`` is anywhere but the first human turn (at most
    once). LLaVA-1.5 data places it there (benchmarks-spec §5); elsewhere it would be tokenised as an image slot in
    the middle of the text or, in an answer, supervised as a label.
    """
    where = f"sample {sample_id!r}: " if sample_id is not None else ""
    if not isinstance(turns, (list, tuple)) or len(turns) == 0:
        raise ConversationError("malformed_conversation", f"{where}empty conversation")
    messages = []
    for i, turn in enumerate(turns):
        if (
            not isinstance(turn, dict)
            or not isinstance(turn.get("value"), str)
            or turn.get("from") not in _ROLES
        ):
            raise ConversationError("malformed_conversation", f"{where}turn {i} is malformed: {turn!r:.120}")
        expected = "human" if i % 2 == 0 else "gpt"
        if turn["from"] != expected:
            raise ConversationError(
                "malformed_conversation",
                f"{where}turn {i} is from {turn['from']!r}, expected {expected!r} (roles must alternate)",
            )
        value = turn["value"]
        n_img = value.count(image_token)
        if n_img > 1:
            raise ConversationError(
                "image_token_misplaced",
                f"{where}turn {i} holds {n_img} {image_token!r}; at most one is allowed",
            )
        if n_img and i != 0:
            raise ConversationError(
                "image_token_misplaced",
                f"{where}turn {i} ({turn['from']}) holds {image_token!r}; only the first human turn may",
            )
        if turn["from"] == "gpt" and not value.strip():
            raise ConversationError("empty_turn", f"{where}turn {i} is an empty answer")
        if turn["from"] == "human" and image_token in value:
            value = image_token + "\n" + value.replace(image_token, "").strip()
        messages.append({"role": _ROLES[turn["from"]], "content": value})
    if turns[-1]["from"] != "gpt":
        raise ConversationError(
            "malformed_conversation",
            f"{where}the last turn ({len(turns) - 1}) is a question without an answer",
        )
    return messages


def encode_conversation(
    tokenizer: PreTrainedTokenizerBase,
    turns: Sequence[dict[str, Any]],
    image_token: str = IMAGE_TOKEN,
    max_length: int | None = None,
    sample_id: object = None,
) -> tuple[list[int], list[int]]:
    """Tokenise one LLaVA conversation; labels are ``-100`` outside the assistant spans.

    ``max_length`` truncates on the right; it is refused (``ValueError``) if it would cut the image token. Each
    ``<image>`` in the text must come out as exactly one ``image_token`` id.
    """
    where = f"sample {sample_id!r}: " if sample_id is not None else ""
    messages = to_messages(turns, image_token, sample_id)
    if tokenizer.chat_template is None:
        raise ValueError("tokenizer has no chat_template; use jarvis.data.tokenizer.attach_chat_template")
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    ids = [int(i) for i in out["input_ids"]]
    mask = [int(m) for m in out["assistant_masks"]]
    if any(m["role"] == "assistant" for m in messages) and not any(mask):
        raise ValueError(
            f"{where}the chat template marked no assistant tokens; template and tokenizer do not match "
            "(the template needs {% generation %} blocks)"
        )
    img_id = image_token_id(tokenizer, image_token)
    n_text = sum(m["content"].count(image_token) for m in messages if m["role"] == "user")
    n_ids = ids.count(img_id)
    if n_text > 1:  # LLaVA-1.5 data has at most one image per sample (design.md, "Images in a batch")
        raise ValueError(
            f"{where}{n_text} {image_token!r} placeholders; at most one image per sample is supported"
        )
    if n_ids != n_text:
        raise ValueError(
            f"{where}{n_text} {image_token!r} in the text but {n_ids} image ids after tokenisation"
        )
    mask = _supervise_answer_gap(tokenizer, ids, mask)
    labels = [t if m else IGNORE_INDEX for t, m in zip(ids, mask, strict=True)]
    if max_length is not None and len(ids) > max_length:
        if img_id in ids[max_length:]:
            raise ValueError(f"{where}max_length={max_length} would cut the image token")
        ids, labels = ids[:max_length], labels[:max_length]
    return ids, labels


_GAPS: dict[str, str] = {}


def answer_gap(tokenizer: PreTrainedTokenizerBase) -> str:
    """The text a template puts between its generation prompt and an answer (vicuna: ``" "``; qwen2: ``""``).

    Rendered once per template: a one-turn conversation against its generation prompt. A template whose rendered
    conversation does not start with its generation prompt, or puts anything but whitespace in between, is refused:
    evaluation could not reproduce the context the model was trained in."""
    template = tokenizer.chat_template
    if template not in _GAPS:
        user = [{"role": "user", "content": "q"}]
        prompt = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        whole = tokenizer.apply_chat_template([*user, {"role": "assistant", "content": "a"}], tokenize=False)
        cut = whole.find("a", len(prompt))
        gap = whole[len(prompt):cut] if whole.startswith(prompt) and cut >= 0 else None
        if gap is None or gap.strip():
            raise ValueError(f"chat template: the generation prompt {prompt[-40:]!r} is not followed by the answer "
                             f"(up to whitespace) in a rendered conversation {whole[-60:]!r}")
        _GAPS[template] = gap
    return _GAPS[template]


def _supervise_answer_gap(tokenizer: PreTrainedTokenizerBase, ids: list[int], mask: list[int]) -> list[int]:
    """Mark the whitespace-only tokens right before each assistant span, when the template's gap is whitespace."""
    if not answer_gap(tokenizer):
        return mask
    out = list(mask)
    for i in range(len(ids) - 1, 0, -1):
        if out[i] and not out[i - 1] and tokenizer.decode([ids[i - 1]]).isspace():
            out[i - 1] = 1  # the separator token the generation prompt leaves out: the model must emit it
    return out


def build_prompt(
    tokenizer: PreTrainedTokenizerBase,
    question: str,
    image_token: str = IMAGE_TOKEN,
    with_image: bool = True,
) -> list[int]:
    """Evaluation prompt ids: ``<image>\\n{question}`` as one user turn plus the generation prompt (benchmarks-spec §1)."""
    content = f"{image_token}\n{question}" if with_image else question
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": content}], tokenize=True, add_generation_prompt=True, return_dict=True
    )["input_ids"]
    ids = [int(i) for i in ids]
    if with_image and ids.count(image_token_id(tokenizer, image_token)) != 1:
        raise ValueError(f"prompt must contain exactly one {image_token!r} id: {ids}")
    return ids


def expand_image_token(
    input_ids: Sequence[int], labels: Sequence[int] | None, image_token_id: int, num_image_tokens: int
) -> tuple[list[int], list[int] | None]:
    """Replace the (at most one) image token id by ``num_image_tokens`` copies; labels there become ``-100``."""
    positions = [i for i, t in enumerate(input_ids) if t == image_token_id]
    if not positions:
        return list(input_ids), None if labels is None else list(labels)
    if len(positions) > 1:
        raise ValueError(f"expected at most one image token, found {len(positions)} at {positions}")
    p = positions[0]
    ids = list(input_ids[:p]) + [image_token_id] * num_image_tokens + list(input_ids[p + 1 :])
    if labels is None:
        return ids, None
    lab = list(labels[:p]) + [IGNORE_INDEX] * num_image_tokens + list(labels[p + 1 :])
    return ids, lab
