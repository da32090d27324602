"""LLaVA annotation loading, validation with counted drops, the feature-cache format, and ``LlavaDataset``.

Formats: benchmarks-spec §5 (558K stage-1 pairs, 665K stage-2 mix; a JSON array, or JSONL). Unlike the reference,
which silently substitutes a black placeholder for a missing image and trains on all -100 labels (paper-spec §11.2),
every problem is found up front, counted by reason, and the run fails when the dropped share exceeds a threshold
(style rule 8). The report is a JSON-able dict, meant to be written as the prepare stage's manifest.

Per sample, ``LlavaDataset`` returns ``input_ids``/``labels`` with the single ``<image>`` id expanded to
``num_image_tokens`` copies (labels -100 there; design.md "Images in a batch") and either pixels or cached features.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors import safe_open
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from jarvis.data.conversation import (
    IGNORE_INDEX,
    encode_conversation,
    expand_image_token,
    image_token_id,
    to_messages,
)
from jarvis.data.images import ContextTargetTransform, ImageTransform
from jarvis.data.templates import IMAGE_TOKEN
from jarvis.io import save_safetensors_atomic, write_bytes_atomic

DROP_REASONS = (
    "bad_json",
    "malformed_record",
    "malformed_conversation",
    "image_token_mismatch",
    "unsafe_image_path",
    "missing_image",
    "corrupt_image",
    "image_span_truncated",
    "no_supervised_tokens",
)
_EXAMPLES_PER_REASON = 5


# --------------------------------------------------------------------------------------------- drop accounting
class DropLog:
    """Counts dropped items by reason and keeps the first few offending ids per reason."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def drop(self, reason: str, sample_id: object) -> None:
        assert reason in DROP_REASONS, reason
        self.counts[reason] += 1
        ex = self.examples.setdefault(reason, [])
        if len(ex) < _EXAMPLES_PER_REASON:
            ex.append(str(sample_id))

    def report(self, source: str, total: int, max_dropped_fraction: float) -> dict[str, Any]:
        """The manifest dict; raises ``ValueError`` when the dropped share exceeds ``max_dropped_fraction``."""
        dropped = sum(self.counts.values())
        frac = dropped / total if total else 0.0
        rep = {
            "source": source,
            "total": total,
            "kept": total - dropped,
            "dropped": dropped,
            "dropped_fraction": frac,
            "max_dropped_fraction": max_dropped_fraction,
            "counts": {r: self.counts[r] for r in DROP_REASONS if self.counts[r]},
            "examples": {r: self.examples[r] for r in DROP_REASONS if r in self.examples},
        }
        if frac > max_dropped_fraction:
            raise ValueError(
                f"{source}: dropped {dropped}/{total} = {frac:.4%} > max_dropped_fraction "
                f"{max_dropped_fraction:.4%}; counts {rep['counts']}; first ids {rep['examples']}"
            )
        return rep


# --------------------------------------------------------------------------------------------- loading
def load_records(path: str | os.PathLike[str], drops: DropLog | None = None) -> tuple[list[Any], int]:
    """Read a JSON array (``.json``) or JSON lines (anything else). Returns (records, total).

    A bad JSONL line is dropped as ``bad_json`` (its id is ``line:<n>``); a bad JSON array file raises, since there is
    no partial recovery from it.
    """
    path = Path(path)
    drops = drops if drops is not None else DropLog()
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        try:
            records = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from e
        if not isinstance(records, list):
            raise ValueError(f"{path}: expected a JSON array of samples, got {type(records).__name__}")
        return records, len(records)
    records, total = [], 0
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        total += 1
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            drops.drop("bad_json", f"line:{lineno}")
    return records, total


def safe_image_path(image_root: str | os.PathLike[str], rel: str) -> Path:
    """``image_root / rel``, refusing absolute paths and anything that resolves outside ``image_root``."""
    if not isinstance(rel, str) or not rel or os.path.isabs(rel) or Path(rel).is_absolute():
        raise ValueError(f"image path {rel!r} must be a non-empty relative path")
    if ".." in Path(rel).parts:
        raise ValueError(f"image path {rel!r} contains '..'")
    root = Path(image_root).resolve()
    full = (root / rel).resolve()
    if not full.is_relative_to(root):
        raise ValueError(f"image path {rel!r} escapes the image root {root}")
    return full


def _check_image(path: Path, decode: bool) -> str | None:
    """None if the image is readable, else the drop reason."""
    if not path.is_file():
        return "missing_image"
    try:
        with Image.open(path) as im:
            im.verify()  # structure check; verify() leaves the image unusable, so reopen to decode
        if decode:
            with Image.open(path) as im:
                im.load()
    except Exception:  # PIL raises many types (OSError, SyntaxError, ValueError...) for broken files
        return "corrupt_image"
    return None


def _record_problem(rec: Any, image_root: str | os.PathLike[str], decode: bool) -> str | None:
    if not isinstance(rec, dict) or "id" not in rec or not isinstance(rec["id"], (str, int)):
        return "malformed_record"
    try:
        to_messages(rec.get("conversations"), IMAGE_TOKEN, rec["id"])
    except ValueError:
        return "malformed_conversation"
    n_placeholders = sum(t["value"].count(IMAGE_TOKEN) for t in rec["conversations"])
    has_image = rec.get("image") is not None
    if n_placeholders != (1 if has_image else 0):
        return "image_token_mismatch"
    if not has_image:
        return None
    try:
        path = safe_image_path(image_root, rec["image"])
    except ValueError:
        return "unsafe_image_path"
    return _check_image(path, decode)


def validate_records(
    records: Sequence[Any],
    image_root: str | os.PathLike[str],
    drops: DropLog | None = None,
    decode_images: bool = True,
) -> list[dict[str, Any]]:
    """Keep the records that pass every check; count the others in ``drops`` by reason."""
    drops = drops if drops is not None else DropLog()
    kept = []
    for i, rec in enumerate(records):
        reason = _record_problem(rec, image_root, decode_images)
        if reason is None:
            kept.append(rec)
        else:
            sid = rec.get("id", f"index:{i}") if isinstance(rec, dict) else f"index:{i}"
            drops.drop(reason, sid)
    return kept


def load_and_validate(
    path: str | os.PathLike[str],
    image_root: str | os.PathLike[str],
    max_dropped_fraction: float,
    decode_images: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Load + validate one annotation file. Returns (kept samples, report); raises over the threshold."""
    drops = DropLog()
    records, total = load_records(path, drops)
    kept = validate_records(records, image_root, drops, decode_images)
    return kept, drops.report(str(path), total, max_dropped_fraction)


# --------------------------------------------------------------------------------------------- feature cache
def write_feature_shard(
    cache_dir: str | os.PathLike[str],
    shard_index: int,
    start: int,
    context: torch.Tensor,
    target: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Write ``shard-{shard_index:05d}.safetensors`` holding ``context`` [n,N,Dv] (and ``target`` [n,Nt,Dt]).

    Rows are the samples ``ids[start:start+n]`` of the index. Returns the shard entry for ``write_feature_index``.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    if context.ndim != 3 or (
        target is not None and (target.ndim != 3 or target.shape[0] != context.shape[0])
    ):
        raise ValueError(
            f"expected context [n,N,Dv] and target [n,Nt,Dt], got {tuple(context.shape)}, "
            f"{None if target is None else tuple(target.shape)}"
        )
    name = f"shard-{shard_index:05d}.safetensors"
    tensors = {"context": context.contiguous().cpu()}
    if target is not None:
        tensors["target"] = target.contiguous().cpu()
    save_safetensors_atomic(tensors, cache_dir / name)
    return {"file": name, "start": int(start), "count": int(context.shape[0])}


def write_feature_index(
    cache_dir: str | os.PathLike[str],
    ids: Sequence[str | int],
    shards: Sequence[dict[str, Any]],
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write ``index.json`` = ``{"ids": [...], "shards": [...], **meta}`` after checking the shards tile the ids."""
    ids = [str(i) for i in ids]
    _check_tiling(ids, shards)
    path = Path(cache_dir) / "index.json"
    body = {"ids": ids, "shards": list(shards), **(meta or {})}
    write_bytes_atomic(path, json.dumps(body, indent=1).encode())
    return path


def _check_tiling(ids: Sequence[str], shards: Sequence[dict[str, Any]]) -> None:
    if len(set(ids)) != len(ids):
        raise ValueError("feature cache ids are not unique")
    pos = 0
    for s in sorted(shards, key=lambda s: s["start"]):
        if s["start"] != pos:
            raise ValueError(f"feature cache shard {s['file']} starts at {s['start']}, expected {pos}")
        pos += s["count"]
    if pos != len(ids):
        raise ValueError(f"feature cache shards cover {pos} rows but the index has {len(ids)} ids")


class FeatureCache:
    """Reader for a feature cache directory (``index.json`` + safetensors shards), keyed by sample id."""

    def __init__(self, cache_dir: str | os.PathLike[str]) -> None:
        self.root = Path(cache_dir)
        index_path = self.root / "index.json"
        if not index_path.is_file():
            raise FileNotFoundError(f"feature cache index not found: {index_path}")
        self.index = json.loads(index_path.read_text())
        ids = [str(i) for i in self.index["ids"]]
        shards = self.index["shards"]
        _check_tiling(ids, shards)
        self._where: dict[str, tuple[str, int]] = {}
        for s in shards:
            for k in range(s["count"]):
                self._where[ids[s["start"] + k]] = (s["file"], k)
        self._handles: dict[str, Any] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self._where)

    def __contains__(self, sample_id: object) -> bool:
        return str(sample_id) in self._where

    def _open(self, file: str) -> Any:
        if self._pid != os.getpid():  # DataLoader workers: do not share handles across fork
            self._handles, self._pid = {}, os.getpid()
        if file not in self._handles:
            self._handles[file] = safe_open(str(self.root / file), framework="pt")
        return self._handles[file]

    def get(self, sample_id: object) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(context [N,Dv], target [Nt,Dt] or None) for one sample id."""
        key = str(sample_id)
        if key not in self._where:
            raise KeyError(f"sample {key!r} is not in the feature cache {self.root}")
        file, row = self._where[key]
        h = self._open(file)
        context = h.get_slice("context")[row : row + 1][0]
        target = h.get_slice("target")[row : row + 1][0] if "target" in h.keys() else None
        return context, target


# --------------------------------------------------------------------------------------------- dataset
class LlavaDataset(Dataset):
    """Validated LLaVA samples → tensors for the collator.

    Exactly one image source is used: ``transform`` (an ``ImageTransform``, or a ``ContextTargetTransform`` for
    ``pixel_values_target`` too) or ``feature_cache``. All samples are tokenised once at construction so that
    template/label mismatches raise before training, and samples whose image span ``max_length`` would cut (or that
    keep no supervised token) are dropped and counted in ``self.report``.
    """

    def __init__(
        self,
        samples: Sequence[dict[str, Any]],
        tokenizer: PreTrainedTokenizerBase,
        image_root: str | os.PathLike[str] | None,
        num_image_tokens: int,
        transform: ImageTransform | ContextTargetTransform | None = None,
        feature_cache: FeatureCache | None = None,
        max_length: int | None = None,
        max_dropped_fraction: float = 0.0,
        image_token: str = IMAGE_TOKEN,
    ) -> None:
        if (transform is None) == (feature_cache is None) and any(
            s.get("image") is not None for s in samples
        ):
            raise ValueError("give exactly one of transform / feature_cache for samples with images")
        self.tokenizer, self.image_root = tokenizer, image_root
        self.num_image_tokens, self.max_length, self.image_token = num_image_tokens, max_length, image_token
        self.transform, self.feature_cache = transform, feature_cache
        self.image_token_id = image_token_id(tokenizer, image_token)
        drops = DropLog()
        self.samples: list[dict[str, Any]] = []
        self.lengths: list[int] = []  # expanded, truncated lengths (for length-grouped samplers)
        for s in samples:
            ids, labels = self._encode(s)
            reason = self._length_problem(ids, labels)
            if reason:
                drops.drop(reason, s["id"])
                continue
            if feature_cache is not None and s.get("image") is not None and s["id"] not in feature_cache:
                raise KeyError(f"sample {s['id']!r} has an image but no entry in the feature cache")
            self.samples.append(s)
            self.lengths.append(min(len(ids), max_length or len(ids)))
        self.report = drops.report("LlavaDataset", len(samples), max_dropped_fraction)

    def _encode(self, s: dict[str, Any]) -> tuple[list[int], list[int]]:
        ids, labels = encode_conversation(self.tokenizer, s["conversations"], self.image_token, None, s["id"])
        ids, lab = expand_image_token(ids, labels, self.image_token_id, self.num_image_tokens)
        assert lab is not None
        return ids, lab

    def _length_problem(self, ids: list[int], labels: list[int]) -> str | None:
        if self.max_length is None or len(ids) <= self.max_length:
            return None if any(t != IGNORE_INDEX for t in labels) else "no_supervised_tokens"
        if self.image_token_id in ids[self.max_length :]:
            return "image_span_truncated"
        if all(t == IGNORE_INDEX for t in labels[: self.max_length]):
            return "no_supervised_tokens"
        return None

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> dict[str, Any]:
        s = self.samples[i]
        ids, labels = self._encode(s)
        if self.max_length is not None:
            ids, labels = ids[: self.max_length], labels[: self.max_length]
        out: dict[str, Any] = {
            "id": str(s["id"]),
            "input_ids": torch.tensor(ids, dtype=torch.long),
            "labels": torch.tensor(labels, dtype=torch.long),
        }
        if s.get("image") is None:
            return out
        if self.feature_cache is not None:
            ctx, tgt = self.feature_cache.get(s["id"])
            out["context_features"] = ctx
            if tgt is not None:
                out["target_features"] = tgt
            return out
        assert self.image_root is not None, "image_root is required to load images"
        with Image.open(safe_image_path(self.image_root, s["image"])) as im:
            image = im.convert("RGB")
        if isinstance(self.transform, ContextTargetTransform):
            out["pixel_values"], out["pixel_values_target"] = self.transform(image)
        else:
            assert self.transform is not None
            out["pixel_values"] = self.transform(image)
        return out
