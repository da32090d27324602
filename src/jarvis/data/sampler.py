"""LLaVA's modality-length grouping (``--group_by_modality_length True`` in the reference's stage 2, paper-spec §9).

Each sample's length is its word count (the sum over its turns of ``len(value.split())``), negated when it has no
image (LLaVA's ``modality_lengths``). Multimodal and text-only samples are ordered separately: shuffled, cut into
megabatches of ``world_size x batch_size``, each sorted by length and dealt into ``world_size`` chunks of similar
total length; then the megabatches of both kinds are shuffled together, the two last (incomplete) ones joined into
a final megabatch. So every optimizer step sees one modality only (but the last), and similar lengths pad little.

Port of ``llava/train/llava_trainer.py`` (haotian-liu/LLaVA c121f04), with one deliberate change: every random draw
comes from one generator seeded by (seed, epoch), identical on every rank, where the reference draws from torch's
global RNG (and, inside each modality, even without a generator). The order is then the same on all ranks, on a
resume and in a rerun.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch.utils.data import Sampler


def modality_lengths(samples: Sequence[dict[str, Any]]) -> list[int]:
    """Word counts of the conversations, negative for text-only samples (never 0: an empty one counts 1)."""
    out = []
    for s in samples:
        n = max(1, sum(len(str(turn["value"]).split()) for turn in s["conversations"]))
        out.append(n if s.get("image") is not None else -n)
    return out


def _even_chunks(indices: list[int], lengths: Sequence[int], num_chunks: int) -> list[list[int]]:
    """Deal ``indices`` into ``num_chunks`` chunks of equal size, each time to the shortest so far."""
    if len(indices) % num_chunks:
        return [indices[i::num_chunks] for i in range(num_chunks)]
    per_chunk = len(indices) // num_chunks
    chunks: list[list[int]] = [[] for _ in range(num_chunks)]
    totals = [0.0] * num_chunks
    for index in indices:
        shortest = totals.index(min(totals))
        chunks[shortest].append(index)
        totals[shortest] += lengths[index]
        if len(chunks[shortest]) == per_chunk:
            totals[shortest] = float("inf")
    return chunks


def length_grouped_indices(lengths: Sequence[int], batch_size: int, world_size: int,
                           generator: torch.Generator) -> list[int]:
    megabatch = world_size * batch_size
    indices = torch.randperm(len(lengths), generator=generator).tolist()
    groups = [sorted(indices[i:i + megabatch], key=lambda j: lengths[j], reverse=True)
              for i in range(0, len(lengths), megabatch)]
    return [i for g in groups for chunk in _even_chunks(g, lengths, world_size) for i in chunk]


def modality_length_grouped_indices(lengths: Sequence[int], batch_size: int, world_size: int,
                                    generator: torch.Generator) -> list[int]:
    if any(n == 0 for n in lengths):
        raise ValueError("modality lengths must be non-zero (positive: with image, negative: text only)")
    if all(n > 0 for n in lengths) or all(n < 0 for n in lengths):
        return length_grouped_indices([abs(n) for n in lengths], batch_size, world_size, generator)
    mm = [(i, n) for i, n in enumerate(lengths) if n > 0]
    lang = [(i, -n) for i, n in enumerate(lengths) if n < 0]
    megabatch = world_size * batch_size
    kinds = []
    for pairs in (mm, lang):
        idx, lens = [p[0] for p in pairs], [p[1] for p in pairs]
        order = [idx[i] for i in length_grouped_indices(lens, batch_size, world_size, generator)]
        kinds.append([order[i:i + megabatch] for i in range(0, len(order), megabatch)])
    mm_groups, lang_groups = kinds
    last = mm_groups[-1] + lang_groups[-1]
    groups = mm_groups[:-1] + lang_groups[:-1]
    groups = [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
    if last:
        groups.append(sorted(last))
    return [i for g in groups for i in g]


class ModalityLengthGroupedSampler(Sampler[int]):
    """The global sample order (the Trainer's data loader shards it across ranks); ``set_epoch`` reshuffles."""

    def __init__(self, lengths: Sequence[int], batch_size: int, world_size: int, seed: int) -> None:
        self.lengths, self.batch_size, self.world_size, self.seed = list(lengths), batch_size, world_size, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(modality_length_grouped_indices(self.lengths, self.batch_size, self.world_size, gen))
