"""Batch assembly: pad text, stack images (or cached features) of the samples that have one.

Contract (design.md "Images in a batch"): ``pixel_values`` is ``Float[B_img, 3, H, W]`` holding only the samples that
have an image, in batch order; likewise ``pixel_values_target`` / ``context_features`` / ``target_features``. The image
placeholder has already been expanded to N ids by ``LlavaDataset``. A JEPA stage's batches also carry the multiblock
masks (``jepa_context``, ``jepa_targets``): :class:`JepaMaskCollator` draws them where the batch is assembled, in a
DataLoader worker when there are workers, so the training step runs no Python sampler (design.md "Masks").

Right padding for training; left padding for batched greedy generation (``generate_greedy`` takes a left-padded batch).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch

from jarvis.data.conversation import IGNORE_INDEX
from jarvis.masking import MaskSpec, sample_block_masks
from jarvis.seeding import make_generator

_IMAGE_KEYS = ("pixel_values", "pixel_values_target", "context_features", "target_features")
# A target row belongs to the context row at the same index, so both must come from the same samples.
_PAIRED_KEYS = (("pixel_values", "pixel_values_target"), ("context_features", "target_features"))


class Collator:
    """``list[sample dict] -> batch dict`` with ``input_ids``, ``attention_mask``, ``labels`` and image tensors."""

    def __init__(
        self, pad_token_id: int, padding_side: Literal["right", "left"] = "right", keep_ids: bool = False
    ) -> None:
        if padding_side not in ("right", "left"):
            raise ValueError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        self.pad_token_id, self.padding_side = int(pad_token_id), padding_side
        # Sample ids are for evaluation bookkeeping; off by default because the model's forward takes no `ids`.
        self.keep_ids = keep_ids

    def _pad(self, seqs: Sequence[torch.Tensor], value: int) -> torch.Tensor:
        width = max(len(s) for s in seqs)
        out = torch.full((len(seqs), width), value, dtype=torch.long)
        for b, s in enumerate(seqs):
            if self.padding_side == "right":
                out[b, : len(s)] = s
            else:
                out[b, width - len(s) :] = s
        return out

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        if not samples:
            raise ValueError("cannot collate an empty batch")
        ids = [s["input_ids"] for s in samples]
        self._check(samples)
        batch: dict[str, Any] = {
            "input_ids": self._pad(ids, self.pad_token_id),  # (B, T)
            "attention_mask": self._pad([torch.ones_like(t) for t in ids], 0),  # (B, T)
        }
        if all("labels" in s for s in samples):
            batch["labels"] = self._pad([s["labels"] for s in samples], IGNORE_INDEX)
            # (n, 2) [row, position] of every supervised next-token prediction, found here on the CPU so the model
            # can gather exactly those hidden states without a device->host sync (see JarvisForCausalLM.ntp).
            batch["label_positions"] = (batch["labels"][:, 1:] != IGNORE_INDEX).nonzero()
        elif any("labels" in s for s in samples):
            raise ValueError("some samples have labels and some do not")
        for key in _IMAGE_KEYS:
            present = [s[key] for s in samples if key in s]
            if present:
                shapes = {tuple(t.shape) for t in present}
                if len(shapes) > 1:
                    raise ValueError(f"{key} of different shapes in one batch: {sorted(shapes)} ({_names(samples)})")
                batch[key] = torch.stack(present)  # (B_img, ...)
        if "pixel_values" in batch and "context_features" in batch:
            raise ValueError("a batch mixes pixel_values and context_features")
        if self.keep_ids:
            batch["ids"] = [s["id"] for s in samples]
        return batch

    @staticmethod
    def _check(samples: Sequence[dict[str, Any]]) -> None:
        """Labels as long as the ids, non-empty ids, and targets only beside their context (else rows misalign)."""
        for i, s in enumerate(samples):
            n = len(s["input_ids"])
            if n == 0:
                raise ValueError(f"sample {s.get('id', i)!r} has no input ids")
            if "labels" in s and len(s["labels"]) != n:
                raise ValueError(f"sample {s.get('id', i)!r}: {len(s['labels'])} labels for {n} input ids")
        for ctx, tgt in _PAIRED_KEYS:
            odd = [s.get("id", i) for i, s in enumerate(samples) if (tgt in s) and (ctx not in s)]
            if any(tgt in s for s in samples):
                odd += [s.get("id", i) for i, s in enumerate(samples) if (ctx in s) and (tgt not in s)]
            if odd:
                raise ValueError(f"samples {odd} have only one of {ctx}/{tgt}; target rows would misalign")


def num_images(batch: dict[str, Any]) -> int:
    """Images in a collated batch (B_img): rows of ``pixel_values`` or of cached ``context_features``."""
    for key in ("pixel_values", "context_features"):
        value = batch.get(key)
        if value is not None:
            return int(value.shape[0])
    return 0


class JepaMaskCollator:
    """A :class:`Collator` whose batches also carry the micro-batch's multiblock masks (paper-spec §4.1).

    The masks of a micro-batch are a function of (seed, stage, epoch, the samples' dataset indices) only: the same in a
    worker or in the main process, with any number of workers, and replayed by a resumed run, which sees the same
    samples in the same micro-batches. Every sample must carry its dataset ``index`` (``LlavaDataset`` does). The
    trainer sets ``epoch`` before each epoch's workers start (``JarvisTrainer``), and draws the skip coin in the step;
    a skip step drops the masks.
    """

    def __init__(self, base: Collator, grid: tuple[int, int], spec: MaskSpec, seed: int, stage: str,
                 image_token_id: int | None = None) -> None:
        self.base, self.grid, self.spec, self.seed, self.stage = base, (int(grid[0]), int(grid[1])), spec, seed, stage
        self.image_token_id = image_token_id  # given: also the positions the step keeps (``jepa_keep``)
        self.epoch = 0

    def generator(self, indices: Sequence[int]) -> torch.Generator:
        return make_generator(self.seed, self.stage, "masks", self.epoch, tuple(indices))

    def __call__(self, samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
        batch = self.base(samples)
        n_img = num_images(batch)
        if n_img == 0:  # an image-less micro-batch is a plain NTP step (the model's loss_jepa is 0 by contract)
            return batch
        missing = [s.get("id", i) for i, s in enumerate(samples) if "index" not in s]
        if missing:
            raise ValueError(f"samples {missing} carry no dataset 'index'; the JEPA masks are keyed by it")
        masks = sample_block_masks(self.grid, self.spec, n_img, self.generator([int(s["index"]) for s in samples]))
        batch["jepa_context"], batch["jepa_targets"] = masks.context, masks.targets
        if self.image_token_id is not None:
            # The positions a JEPA step keeps (visual tokens neither context nor target are dropped, issue 13), found
            # here on host tensors: on a GPU the model would otherwise need a host sync and runs the full sequence.
            from jarvis.model.attention import kept_positions
            from jarvis.model.embedding import image_token_mask, visual_span

            span = visual_span(image_token_mask(batch["input_ids"], self.image_token_id))
            batch["jepa_keep"] = kept_positions(batch["attention_mask"], span, masks.context, masks.targets,
                                                span[:, 1] > span[:, 0], batch.get("labels"))
        return batch


def _names(samples: Sequence[dict[str, Any]]) -> str:
    return "samples " + ", ".join(repr(s.get("id", i)) for i, s in enumerate(samples))
