"""Stage 0 for from-scratch LMs: a short text-only instruction pretraining, run once inside `download --llm`.

Stage 1 freezes the LM (paper-spec §8), so a randomly initialised tiny LM would reach stage 2 knowing no language at
all; benchmarks-spec §6 ("Pretrain it on text only first") prescribes this step for the CPU world. Conversations of
the instruct corpus are rendered with the LM's chat template, `<image>` removed, and trained on their assistant
tokens with AdamW. Real (hub) LMs skip it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from jarvis.seeding import make_generator

log = logging.getLogger(__name__)


def _examples(tokenizer: Any, annotations: Path, max_length: int, max_dropped_fraction: float = 0.0,
              max_truncated_fraction: float = 1.0) -> tuple[list[tuple[list[int], list[int]]], dict[str, float]]:
    """Encoded conversations, right-truncated at ``max_length``, and their drop/truncation counts.

    As in the training stages (style rule 8): a conversation left without supervised tokens is dropped and
    counted (``no_supervised_tokens``) under ``max_dropped_fraction``, and the supervised tokens that truncation
    removes are counted per sample under ``max_truncated_fraction`` (jarvis.data.dataset.TruncationLog); either
    threshold exceeded fails the stage, naming the worst samples. The counts are the stage's ``text_data/...``
    metrics.
    """
    from jarvis.data.conversation import IGNORE_INDEX, encode_conversation
    from jarvis.data.dataset import DropLog, TruncationLog, drop_metrics

    source = f"text pretraining ({annotations})"
    out = []
    entries = json.loads(annotations.read_text())
    drops, truncation = DropLog(), TruncationLog(max_length)
    for entry in entries:
        turns = [{**t, "value": t["value"].replace("<image>", "").strip()} for t in entry["conversations"]]
        ids, labels = encode_conversation(tokenizer, turns, sample_id=entry.get("id"))
        if not any(t != IGNORE_INDEX for t in labels[:max_length]):
            drops.drop("no_supervised_tokens", entry.get("id"))
            continue
        truncation.add(entry.get("id"), labels)
        out.append((ids[:max_length], labels[:max_length]))
    report = drops.report(source, len(entries), max_dropped_fraction)
    if not out:
        raise ValueError(f"{annotations}: no conversation with assistant tokens to pretrain on")
    t = truncation.report(source, max_truncated_fraction)
    stats = {f"text_data/{k}": v for k, v in drop_metrics(report, "encode").items()}
    stats.update({
        "text_data/truncation/samples": float(t["truncated_samples"]),
        "text_data/truncation/samples_losing_supervision": float(t["samples_losing_supervision"]),
        "text_data/truncation/supervised_tokens": float(t["supervised_tokens"]),
        "text_data/truncation/supervised_tokens_lost": float(t["supervised_tokens_lost"]),
        "text_data/truncation/fraction": float(t["truncated_fraction"]),
    })
    if t["truncated_samples"]:
        log.warning("%s: max_length=%d truncates %d conversations (%d supervised tokens lost)", source, max_length,
                    t["truncated_samples"], t["supervised_tokens_lost"])
    return out, stats


def pretrain_text(model: Any, tokenizer: Any, annotations: Path, steps: int, batch_size: int, learning_rate: float,
                  seed: int, max_length: int = 256, max_dropped_fraction: float = 0.0,
                  max_truncated_fraction: float = 1.0) -> dict[str, float]:
    """Train ``model`` in place; returns the first and last loss and the data's drop/truncation counts (the
    thresholds: the text corpus data set's ``max_dropped_fraction`` / ``max_truncated_fraction``). A non-finite
    loss, gradient norm or weight raises :class:`jarvis.training.TrainingDiverged` naming the step (the LM would
    otherwise be saved as a component)."""
    from jarvis.training import TrainingDiverged

    examples, data_stats = _examples(tokenizer, annotations, max_length, max_dropped_fraction, max_truncated_fraction)
    gen = make_generator(seed, "text_pretrain")
    opt = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=learning_rate, total_steps=steps, pct_start=0.05)
    model.train()
    first = last = float("nan")
    for step in range(steps):
        pick = torch.randint(len(examples), (batch_size,), generator=gen).tolist()
        width = max(len(examples[i][0]) for i in pick)
        ids = torch.full((batch_size, width), tokenizer.pad_token_id, dtype=torch.long)
        labels = torch.full((batch_size, width), -100, dtype=torch.long)
        attn = torch.zeros((batch_size, width), dtype=torch.long)
        for b, i in enumerate(pick):
            x, y = examples[i]
            ids[b, : len(x)], labels[b, : len(y)], attn[b, : len(x)] = torch.tensor(x), torch.tensor(y), 1
        loss = model(input_ids=ids, attention_mask=attn, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        try:
            opt.step()
        except RuntimeError as err:  # AdamW's step size itself overflows float32 (a learning rate near 1e38)
            if "overflow" not in str(err):
                raise
            raise TrainingDiverged(f"text pretraining diverged at step {step + 1}: the optimizer update overflows"
                                   f" ({err})") from err
        sched.step()
        bad = [name for name, value in (("loss", loss.detach()), ("gradient norm", grad_norm)) if not torch.isfinite(value)]
        bad += [f"weight {n}" for n, p in model.named_parameters() if not bool(torch.isfinite(p.detach()).all())][:3]
        if bad:
            raise TrainingDiverged(f"text pretraining diverged at step {step + 1}: non-finite {', '.join(bad)}")
        if step == 0:
            first = float(loss.detach())
        if step % 50 == 0 or step == steps - 1:
            last = float(loss.detach())
            log.info("text pretraining step %d/%d: loss %.4f", step + 1, steps, last)
    model.eval()
    return {"text_loss_first": first, "text_loss_last": last, "text_steps": steps, **data_stats}
