# ruff: noqa: E741 -- the reference port keeps its names
"""Modality-length grouping (jarvis.data.sampler) against the reference's code (haotian-liu/LLaVA c121f04,
``llava/train/llava_trainer.py``), ported below with its draws taken from one generator (the reference uses torch's
global RNG; ours seeds a generator so that ranks, resumes and reruns agree)."""

from __future__ import annotations

import torch

from jarvis.data.sampler import (
    ModalityLengthGroupedSampler,
    modality_length_grouped_indices,
    modality_lengths,
)


# ---- the reference, as written there, except `generator` passed to every randperm
def ref_split_to_even_chunks(indices, lengths, num_chunks):
    if len(indices) % num_chunks != 0:
        return [indices[i::num_chunks] for i in range(num_chunks)]
    num_indices_per_chunk = len(indices) // num_chunks
    chunks = [[] for _ in range(num_chunks)]
    chunks_lengths = [0 for _ in range(num_chunks)]
    for index in indices:
        shortest_chunk = chunks_lengths.index(min(chunks_lengths))
        chunks[shortest_chunk].append(index)
        chunks_lengths[shortest_chunk] += lengths[index]
        if len(chunks[shortest_chunk]) == num_indices_per_chunk:
            chunks_lengths[shortest_chunk] = float("inf")
    return chunks


def ref_get_length_grouped_indices(lengths, batch_size, world_size, generator=None):
    indices = torch.randperm(len(lengths), generator=generator)
    megabatch_size = world_size * batch_size
    megabatches = [indices[i : i + megabatch_size].tolist() for i in range(0, len(lengths), megabatch_size)]
    megabatches = [sorted(megabatch, key=lambda i: lengths[i], reverse=True) for megabatch in megabatches]
    megabatches = [ref_split_to_even_chunks(megabatch, lengths, world_size) for megabatch in megabatches]
    return [i for megabatch in megabatches for batch in megabatch for i in batch]


def ref_get_modality_length_grouped_indices(lengths, batch_size, world_size, generator=None):
    assert all(l != 0 for l in lengths), "Should not have zero length."
    if all(l > 0 for l in lengths) or all(l < 0 for l in lengths):
        return ref_get_length_grouped_indices(lengths, batch_size, world_size, generator=generator)
    mm_indices, mm_lengths = zip(*[(i, l) for i, l in enumerate(lengths) if l > 0], strict=True)
    lang_indices, lang_lengths = zip(*[(i, -l) for i, l in enumerate(lengths) if l < 0], strict=True)
    mm_shuffle = [mm_indices[i] for i in ref_get_length_grouped_indices(mm_lengths, batch_size, world_size,
                                                                        generator=generator)]
    lang_shuffle = [lang_indices[i] for i in ref_get_length_grouped_indices(lang_lengths, batch_size, world_size,
                                                                            generator=generator)]
    megabatch_size = world_size * batch_size
    mm_megabatches = [mm_shuffle[i : i + megabatch_size] for i in range(0, len(mm_shuffle), megabatch_size)]
    lang_megabatches = [lang_shuffle[i : i + megabatch_size] for i in range(0, len(lang_shuffle), megabatch_size)]
    last_mm = mm_megabatches[-1]
    last_lang = lang_megabatches[-1]
    additional_batch = last_mm + last_lang
    megabatches = mm_megabatches[:-1] + lang_megabatches[:-1]
    megabatch_indices = torch.randperm(len(megabatches), generator=generator)
    megabatches = [megabatches[i] for i in megabatch_indices]
    if len(additional_batch) > 0:
        megabatches.append(sorted(additional_batch))
    return [i for megabatch in megabatches for i in megabatch]


def lengths_of(n: int, seed: int) -> list[int]:
    g = torch.Generator().manual_seed(seed)
    words = torch.randint(1, 300, (n,), generator=g).tolist()
    text = torch.rand(n, generator=g) < 0.15
    return [-w if t else w for w, t in zip(words, text.tolist(), strict=True)]


def test_the_order_is_the_references() -> None:
    for n, batch, world, seed in ((72, 4, 2, 0), (1000, 16, 8, 1), (37, 3, 2, 2), (50, 5, 1, 3)):
        lengths = lengths_of(n, seed)
        ours = modality_length_grouped_indices(lengths, batch, world, torch.Generator().manual_seed(9))
        ref = ref_get_modality_length_grouped_indices(lengths, batch, world, torch.Generator().manual_seed(9))
        assert ours == ref, (n, batch, world)
        assert sorted(ours) == list(range(n))
    only_mm = [abs(n) for n in lengths_of(40, 4)]  # one modality: plain length grouping
    assert modality_length_grouped_indices(only_mm, 4, 2, torch.Generator().manual_seed(1)) == \
        ref_get_modality_length_grouped_indices(only_mm, 4, 2, torch.Generator().manual_seed(1))


def test_each_full_megabatch_holds_one_modality() -> None:
    lengths = lengths_of(400, 5)
    order = list(ModalityLengthGroupedSampler(lengths, batch_size=8, world_size=2, seed=0))
    groups = [order[i:i + 16] for i in range(0, len(order), 16)]
    n_mm, n_text = sum(n > 0 for n in lengths), sum(n < 0 for n in lengths)
    mixed = [g for g in groups if len({lengths[i] > 0 for i in g}) > 1]
    assert len(mixed) <= 1 and (not mixed or mixed[0] in groups[-2:])
    assert n_mm % 16 or n_text % 16 or not mixed


def test_sampler_is_seeded_per_epoch_and_the_same_on_every_rank() -> None:
    lengths = lengths_of(64, 6)
    a, b = ModalityLengthGroupedSampler(lengths, 4, 2, seed=3), ModalityLengthGroupedSampler(lengths, 4, 2, seed=3)
    assert list(a) == list(b) and len(a) == 64
    first = list(a)
    a.set_epoch(1)
    assert list(a) != first and sorted(a) == sorted(first)
    assert list(ModalityLengthGroupedSampler(lengths, 4, 2, seed=4)) != first


def test_modality_lengths_are_word_counts_negative_without_image() -> None:
    samples = [{"image": "a.jpg", "conversations": [{"value": "<image>\nWhat is it?"}, {"value": "A red cube."}]},
               {"conversations": [{"value": "What is 2 plus 3?"}, {"value": "5"}]},
               {"image": "b.jpg", "conversations": [{"value": ""}, {"value": ""}]}]
    assert modality_lengths(samples) == [7, -6, 1]  # "<image>" counts as a word, as in the reference
