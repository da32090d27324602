"""Train a tiny tokenizer on a closed corpus, and attach our chat templates to any tokenizer.

The CPU experiments use a tokenizer trained on the synthetic world's texts (benchmarks-spec §6, "Language model"):
byte-level BPE by default (no unknown words ever), or WordLevel + Whitespace for a closed vocabulary. Special tokens
are ``<pad> <unk> <s> </s> <image>`` plus the markers the template needs (ChatML, ``[INST]``). ``<image>`` is a real
special token with its own embedding row (fixing the reference's id-0 substitution, paper-spec §11.2).

Saved with ``save_pretrained`` into a temporary sibling directory, then renamed into place (atomic for readers);
``AutoTokenizer.from_pretrained`` reloads it (as ``TokenizersBackend`` in transformers 5) with identical ids
(stack-facts §5).
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from jarvis.data.templates import FIXED_TEXTS, IMAGE_TOKEN, REQUIRED_TOKENS, get_template
from jarvis.io import atomic_dir

BASE_SPECIALS: tuple[str, ...] = ("<pad>", "<unk>", "<s>", "</s>", IMAGE_TOKEN)


def special_tokens_for(template_name: str) -> list[str]:
    """All special tokens of a tokenizer trained for ``template_name`` (base specials first, so ids 0..4 are fixed)."""
    get_template(template_name)  # validates the name
    return list(BASE_SPECIALS) + list(REQUIRED_TOKENS[template_name])


def _build_backend(
    kind: Literal["bpe", "wordlevel"], specials: list[str], vocab_size: int
) -> tuple[Tokenizer, object]:
    if kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token="<unk>"))
        # add_prefix_space=False: the rendered template text is tokenised exactly as written.
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        return tok, trainer
    if kind == "wordlevel":
        tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
        tok.pre_tokenizer = pre_tokenizers.Whitespace()
        trainer = trainers.WordLevelTrainer(
            vocab_size=vocab_size, special_tokens=specials, show_progress=False
        )
        return tok, trainer
    raise ValueError(f"unknown tokenizer kind {kind!r}; expected 'bpe' or 'wordlevel'")


def build_tokenizer(
    corpus: Iterable[str],
    vocab_size: int,
    template_name: str,
    kind: Literal["bpe", "wordlevel"] = "bpe",
) -> PreTrainedTokenizerFast:
    """Train a tokenizer in memory and wrap it as ``PreTrainedTokenizerFast`` with the chat template attached."""
    specials = special_tokens_for(template_name)
    backend, trainer = _build_backend(kind, specials, vocab_size)
    # The template's fixed strings go into the corpus so that they get compact ids too.
    fixed = [t for texts in FIXED_TEXTS.values() for t in texts]
    backend.train_from_iterator(_chain(fixed, corpus), trainer=trainer)
    for i, s in enumerate(specials):
        got = backend.token_to_id(s)
        if got != i:
            raise RuntimeError(f"special token {s!r} got id {got}, expected {i}")
    wrapped = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        additional_special_tokens=[IMAGE_TOKEN, *REQUIRED_TOKENS[template_name]],
    )
    wrapped.chat_template = get_template(template_name)
    return wrapped


def _chain(first: Iterable[str], second: Iterable[str]) -> Iterable[str]:
    yield from first
    yield from second


def train_tokenizer(
    corpus: Iterable[str],
    vocab_size: int,
    template_name: str,
    out_dir: str | os.PathLike[str],
    kind: Literal["bpe", "wordlevel"] = "bpe",
) -> PreTrainedTokenizerFast:
    """Train, attach the chat template and save atomically to ``out_dir`` (replacing an existing directory)."""
    tok = build_tokenizer(corpus, vocab_size, template_name, kind)
    save_atomic(tok, out_dir)
    return tok


def save_atomic(tokenizer: PreTrainedTokenizerBase, out_dir: str | os.PathLike[str]) -> Path:
    """``save_pretrained`` into a temp sibling directory, then rename it to ``out_dir``."""
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        tokenizer.save_pretrained(tmp)
    return out


def attach_chat_template(
    tokenizer: PreTrainedTokenizerBase, name: str, image_token: str = IMAGE_TOKEN
) -> int:
    """Give a real tokenizer (e.g. Vicuna's, which has none) our chat template ``name``.

    Adds ``image_token`` (and the template's marker tokens, if missing) as special tokens and returns how many tokens
    were added: the caller must resize the LM's embeddings when it is > 0. Sets ``pad = unk`` when the tokenizer has no
    pad token (the LLaVA-1.5 convention for Vicuna).
    """
    tokenizer.chat_template = get_template(name)
    vocab = tokenizer.get_vocab()
    missing = [t for t in (image_token, *REQUIRED_TOKENS[name]) if t not in vocab]
    added = tokenizer.add_special_tokens({"additional_special_tokens": missing}) if missing else 0
    if tokenizer.pad_token is None:
        if tokenizer.unk_token is None:
            raise ValueError("tokenizer has neither a pad nor an unk token; set a pad token explicitly")
        tokenizer.pad_token = tokenizer.unk_token
    if name in ("vicuna_v1", "mistral") and tokenizer.eos_token is None:
        raise ValueError(f"template {name!r} needs an eos_token; the tokenizer has none")
    for t in (image_token, *REQUIRED_TOKENS[name]):
        ids = tokenizer.encode(t, add_special_tokens=False)
        if len(ids) != 1:
            raise ValueError(f"token {t!r} encodes to {len(ids)} ids {ids}; it must be a single id")
    return int(added)
