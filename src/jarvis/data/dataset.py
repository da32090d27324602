"""LLaVA annotation loading, validation with counted drops, the feature-cache format, and ``LlavaDataset``.

Formats: benchmarks-spec §5 (558K stage-1 pairs, 665K stage-2 mix; a JSON array, or JSONL). Unlike the reference,
which silently substitutes a black placeholder for a missing image and trains on all -100 labels (paper-spec §11.2),
every problem is found up front, counted by reason, and the run fails when the dropped share exceeds a threshold
(style rule 8). The report is a JSON-able dict, meant to be written as the prepare stage's manifest.

Per sample, ``LlavaDataset`` returns ``input_ids``/``labels`` with the single ``<image>`` id expanded to
``num_image_tokens`` copies (labels -100 there; design.md "Images in a batch") and either pixels or cached features.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from array import array
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from safetensors import safe_open
from torch.utils.data import Dataset
from transformers import PreTrainedTokenizerBase

from jarvis.data.conversation import (
    IGNORE_INDEX,
    ConversationError,
    encode_conversation,
    expand_image_token,
    image_token_id,
    to_messages,
)
from jarvis.data.images import ContextTargetTransform, ImageProblem, ImageTransform, check_size, load_rgb
from jarvis.data.templates import IMAGE_TOKEN
from jarvis.io import StageFailed, save_safetensors_atomic, write_bytes_atomic

DROP_REASONS = (
    "bad_json",
    "malformed_record",
    "duplicate_id",
    "malformed_conversation",
    "empty_turn",
    "image_token_misplaced",
    "image_token_mismatch",
    "unsafe_image_path",
    "missing_image",
    "corrupt_image",
    "empty_image",
    "image_too_large",
    "extreme_aspect_ratio",
    "unsupported_image_mode",
    "image_span_truncated",
    "no_supervised_tokens",
)
_EXAMPLES_PER_REASON = 5


# --------------------------------------------------------------------------------------------- drop accounting
class DataRefused(StageFailed, ValueError):
    """Too many samples dropped or too much supervision truncated, or nothing left: the stage fails (exit 1)."""


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
            raise DataRefused(
                f"{source}: dropped {dropped}/{total} = {frac:.4%} > max_dropped_fraction "
                f"{max_dropped_fraction:.4%}; counts {rep['counts']}; first ids {rep['examples']}"
            )
        return rep


def drop_metrics(report: dict[str, Any], prefix: str) -> dict[str, float]:
    """Flat numeric metrics of a ``DropLog.report`` dict, for metrics.json and MLflow (``prefix/dropped`` ...)."""
    out = {f"{prefix}/{k}": float(report[k]) for k in ("total", "kept", "dropped", "dropped_fraction")}
    out.update({f"{prefix}/dropped/{r}": float(n) for r, n in report.get("counts", {}).items()})
    return out


class TruncationLog:
    """Supervised tokens that right-truncation at ``max_length`` removes, per sample (style rule 8)."""

    def __init__(self, max_length: int | None) -> None:
        self.max_length = max_length
        self.supervised = 0  # supervised tokens of the kept samples, before truncation
        self.lost: dict[str, int] = {}  # sample id -> supervised tokens lost, for every truncated sample

    def add(self, sample_id: object, labels: Sequence[int]) -> None:
        n = sum(t != IGNORE_INDEX for t in labels)
        self.supervised += n
        if self.max_length is not None and len(labels) > self.max_length:
            kept = sum(t != IGNORE_INDEX for t in labels[: self.max_length])
            self.lost[str(sample_id)] = n - kept

    def report(self, source: str, max_truncated_fraction: float) -> dict[str, Any]:
        """Counts and the worst samples; raises ``ValueError`` when the lost share exceeds the threshold."""
        lost = sum(self.lost.values())
        frac = lost / self.supervised if self.supervised else 0.0
        worst = sorted(self.lost.items(), key=lambda kv: -kv[1])[:_EXAMPLES_PER_REASON]
        rep = {
            "max_length": self.max_length,
            "truncated_samples": len(self.lost),
            "samples_losing_supervision": sum(1 for v in self.lost.values() if v),
            "supervised_tokens": self.supervised,
            "supervised_tokens_lost": lost,
            "truncated_fraction": frac,
            "max_truncated_fraction": max_truncated_fraction,
            "examples": {k: v for k, v in worst},
        }
        if frac > max_truncated_fraction:
            raise DataRefused(
                f"{source}: max_length={self.max_length} truncates {len(self.lost)} samples and removes "
                f"{lost}/{self.supervised} = {frac:.4%} of the supervised tokens > max_truncated_fraction "
                f"{max_truncated_fraction:.4%}; most truncated (id: tokens lost) {rep['examples']}"
            )
        return rep


# --------------------------------------------------------------------------------------------- loading
def load_records(path: str | os.PathLike[str], drops: DropLog | None = None,
                 raw: bytes | None = None) -> tuple[list[Any], int]:
    """Read a JSON array (``.json``) or JSON lines (anything else). Returns (records, total).

    A bad JSONL line is dropped as ``bad_json`` (its id is ``line:<n>``); a bad JSON array file raises, since there is
    no partial recovery from it. ``raw``: the file's bytes, when the caller already read them.
    """
    path = Path(path)
    drops = drops if drops is not None else DropLog()
    raw = path.read_bytes() if raw is None else raw
    try:
        text = raw.decode("utf-8-sig")  # a leading BOM is not part of the first record
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}: line {line}: not UTF-8 ({e.reason} at byte {e.start})") from e
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
    try:
        full = (root / rel).resolve()
    except (RuntimeError, OSError) as e:  # a symlink loop (RuntimeError before Python 3.13), a too-long name...
        raise ValueError(f"image path {rel!r} cannot be resolved: {e}") from e
    if not full.is_relative_to(root):
        raise ValueError(f"image path {rel!r} escapes the image root {root}")
    return full


def _check_image(path: Path, decode: bool) -> str | None:
    """None if the image is usable, else the drop reason.

    The size is checked from the header before anything is decoded (decompression bombs, empty and degenerate
    sizes); with ``decode`` the image is decoded and converted to RGB exactly as training will (``load_rgb``).
    """
    if not path.is_file():
        return "missing_image"
    try:
        with Image.open(path) as im:
            check_size(im.size)  # from the header: nothing is decoded yet
            im.verify()  # structure check; verify() leaves the image unusable, so reopen to decode
        if decode:
            load_rgb(path)
    except ImageProblem as e:
        return e.reason
    except Image.DecompressionBombError:  # over Pillow's own limit, raised by Image.open from the header
        return "image_too_large"
    except Exception:  # PIL raises many types (OSError, SyntaxError, ValueError...) for broken files
        return "corrupt_image"
    return None


def image_problem(image_root: str | os.PathLike[str], rel: str, decode: bool = True) -> str | None:
    """None if the record's ``image`` string names a usable image under ``image_root``, else the drop reason."""
    try:
        path = safe_image_path(image_root, rel)
    except ValueError:
        return "unsafe_image_path"
    return _check_image(path, decode)


ImageCheck = Callable[[str], "str | None"]  # a record's ``image`` string -> drop reason or None


def _record_problem(rec: Any, check_image: ImageCheck) -> str | None:
    if not isinstance(rec, dict) or not _valid_id(rec.get("id")):
        return "malformed_record"
    image = rec.get("image")
    if image is not None and not isinstance(image, str):  # e.g. a list: multi-image samples are not supported
        return "malformed_record"
    try:
        to_messages(rec.get("conversations"), IMAGE_TOKEN, rec["id"])
    except ConversationError as e:
        return e.reason
    n_placeholders = sum(t["value"].count(IMAGE_TOKEN) for t in rec["conversations"])
    has_image = image is not None
    if n_placeholders != (1 if has_image else 0):
        return "image_token_mismatch"
    if not has_image:
        return None
    return check_image(image)


def _valid_id(sample_id: object) -> bool:
    """A non-empty string or an integer (LLaVA's ids; not a bool, which json gives for true/false)."""
    if isinstance(sample_id, bool):
        return False
    return isinstance(sample_id, int) or (isinstance(sample_id, str) and bool(sample_id.strip()))


def validate_records(
    records: Sequence[Any],
    image_root: str | os.PathLike[str],
    drops: DropLog | None = None,
    decode_images: bool = True,
    image_problems: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Keep the records that pass every check; count the others in ``drops`` by reason.

    Ids are compared as strings (the feature cache keys samples by ``str(id)``, so ``17`` and ``"17"`` collide):
    every occurrence after the first is dropped as ``duplicate_id`` and named in the report's examples.
    ``image_problems``: the verdicts of a validation manifest (jarvis.data.manifest) for these very records, image
    string -> reason for the bad ones; then no image file is opened (or even stat'ed) here.
    """
    drops = drops if drops is not None else DropLog()
    if image_problems is None:
        def check_image(rel: str) -> str | None:
            return image_problem(image_root, rel, decode_images)
    else:
        check_image = image_problems.get
    kept, seen = [], set()
    for i, rec in enumerate(records):
        if isinstance(rec, dict) and _valid_id(rec.get("id")):
            key = str(rec["id"])
            if key in seen:
                drops.drop("duplicate_id", rec["id"])
                continue
            seen.add(key)
        reason = _record_problem(rec, check_image)
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
    """Load + validate one annotation file. Returns (kept samples, report); raises over the threshold.

    With a validation manifest beside the file (written by the download stage, jarvis.data.manifest) the images are
    not opened again: its verdicts apply, after checking that the file is byte-for-byte the one it validated. The
    records' own checks (ids, conversations, placeholders) run either way; they cost no I/O.
    """
    from jarvis.data import manifest

    drops = DropLog()
    raw = Path(path).read_bytes()
    verdicts = manifest.verdicts(path, raw)
    records, total = load_records(path, drops, raw)
    kept = validate_records(records, image_root, drops, decode_images, image_problems=verdicts)
    report = drops.report(str(path), total, max_dropped_fraction)
    report["images_checked"] = "manifest" if verdicts is not None else ("decoded" if decode_images else "header")
    if not kept:  # an empty file, or max_dropped_fraction 1.0 with everything dropped: nothing to train on
        raise ValueError(f"{path}: no usable sample among {total} records; drops {report['counts']}")
    return kept, report


# --------------------------------------------------------------------------------------------- feature cache
class FeatureCacheError(StageFailed, ValueError):
    """A feature cache that is corrupt, inconsistent with its index, or made by other settings."""


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def file_sha256(path: str | os.PathLike[str]) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def write_feature_shard(
    cache_dir: str | os.PathLike[str],
    shard_index: int,
    start: int,
    context: torch.Tensor,
    target: torch.Tensor | None = None,
) -> dict[str, Any]:
    """Write ``shard-{shard_index:05d}.safetensors`` holding ``context`` [n,N,Dv] (and ``target`` [n,Nt,Dt]).

    Rows are the samples ``ids[start:start+n]`` of the index. Non-finite features are refused. Returns the shard
    entry for ``write_feature_index``: file, rows, dtype and shapes, and the sha256 of the file as written.
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
    for key, t in tensors.items():
        if not bool(torch.isfinite(t).all()):
            raise FeatureCacheError(f"refusing to cache non-finite {key} features in {name} (rows from {start})")
    save_safetensors_atomic(tensors, cache_dir / name)
    digest = file_sha256(cache_dir / name)
    entry: dict[str, Any] = {"file": name, "start": int(start), "count": int(context.shape[0]), "sha256": digest,
                             "dtype": _dtype_name(context.dtype), "context_shape": list(context.shape)}
    if target is not None:
        entry["target_shape"] = list(target.shape)
    return entry


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


_VERIFY_ROWS = 256  # rows per finiteness check: bounded memory on 1024-row shards of 576x1024 features


_SHARD_FILE = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*\.safetensors$")  # a plain file name in the cache dir


def _check_index_layout(index: Any, path: Path) -> None:
    """The fields the reader uses, with their types: a truncated or hand-edited index fails naming the field,
    and a shard ``file`` must be a plain file name (it never leaves the cache directory)."""
    where = f"feature cache index {path}"
    if not isinstance(index, dict):
        raise FeatureCacheError(f"{where}: expected a JSON object, got {type(index).__name__}")
    for key in ("ids", "shards"):
        if not isinstance(index.get(key), list):
            raise FeatureCacheError(f"{where}: {key!r} must be a list, got {json.dumps(index.get(key))[:60]}")
    if not index["shards"]:
        raise FeatureCacheError(f"{where}: no shards")
    for n, entry in enumerate(index["shards"]):
        if not isinstance(entry, dict):
            raise FeatureCacheError(f"{where}: shards[{n}] must be an object")
        file = entry.get("file")
        if not isinstance(file, str) or not _SHARD_FILE.match(file):
            raise FeatureCacheError(f"{where}: shards[{n}].file {json.dumps(file)[:80]} is not a shard file name"
                                    " inside the cache directory")
        for key in ("start", "count"):
            v = entry.get(key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise FeatureCacheError(f"{where}: shards[{n}].{key} must be a non-negative integer, got "
                                        f"{json.dumps(v)[:40]}")


def verify_feature_shard(root: Path, entry: Mapping[str, Any], dtype: str | None = None) -> None:
    """Content hash, tensor names, dtype, shapes and finiteness of one shard against its index entry."""
    path = root / entry["file"]
    where = f"feature cache {root}: shard {entry['file']}"
    remedy = "delete the cache directory and rerun cache-features"
    if not path.is_file():
        raise FeatureCacheError(f"{where} is missing; {remedy}")
    if "sha256" not in entry:
        raise FeatureCacheError(f"{where} has no content hash in index.json (an older format); {remedy}")
    digest = file_sha256(path)
    if digest != entry["sha256"]:
        raise FeatureCacheError(f"{where} is corrupt: sha256 {digest[:16]}… != {entry['sha256'][:16]}… recorded"
                                f" in index.json; {remedy}")
    want = {"context": entry.get("context_shape")}
    if entry.get("target_shape") is not None:
        want["target"] = entry["target_shape"]
    try:
        with safe_open(str(path), framework="pt") as h:
            if set(h.keys()) != set(want):
                raise FeatureCacheError(f"{where} holds tensors {sorted(h.keys())}, the index says {sorted(want)}")
            for key, shape in want.items():
                sl = h.get_slice(key)
                got = list(sl.get_shape())
                if shape is None or got != list(shape) or got[0] != entry["count"]:
                    raise FeatureCacheError(f"{where}: {key} has shape {got}, the index says {shape} with"
                                            f" {entry['count']} rows")
                for a in range(0, got[0], _VERIFY_ROWS):
                    rows = sl[a : a + _VERIFY_ROWS]
                    for name in filter(None, (dtype, entry.get("dtype"))):
                        if _dtype_name(rows.dtype) != name:
                            raise FeatureCacheError(f"{where}: {key} is {_dtype_name(rows.dtype)}, the index"
                                                    f" says {name}")
                    if not bool(torch.isfinite(rows).all()):
                        raise FeatureCacheError(f"{where}: non-finite {key} features in rows {a}..")
    except FeatureCacheError:
        raise
    except Exception as err:  # safetensors raises its own error types for a broken header or a short file
        raise FeatureCacheError(f"{where} is unreadable ({err}); {remedy}") from err


class FeatureCache:
    """Reader for a feature cache directory (``index.json`` + safetensors shards), keyed by sample id.

    With ``verify`` (the default) every shard is checked at construction -- content hash, tensor names, dtype,
    shapes, finite values (:func:`verify_feature_shard`) -- and the per-row shapes must agree across shards, so a
    corrupt cache fails before training instead of turning into NaN losses. ``expect`` names index entries
    (e.g. ``{"dtype": "float16", "producer": "<digest>"}``) that must hold the given values.
    """

    def __init__(self, cache_dir: str | os.PathLike[str], verify: bool = True,
                 expect: Mapping[str, Any] | None = None) -> None:
        self.root = Path(cache_dir)
        index_path = self.root / "index.json"
        if not index_path.is_file():
            raise FileNotFoundError(f"feature cache index not found: {index_path}")
        try:
            self.index = json.loads(index_path.read_text())
        except ValueError as err:
            raise FeatureCacheError(f"feature cache index {index_path} is not valid JSON ({err})") from err
        _check_index_layout(self.index, index_path)
        for key, value in (expect or {}).items():
            if self.index.get(key) != value:
                raise FeatureCacheError(f"feature cache {self.root} was made with {key}={self.index.get(key)!r},"
                                        f" expected {value!r}; rerun cache-features")
        ids = [str(i) for i in self.index["ids"]]
        shards = self.index["shards"]
        _check_tiling(ids, shards)
        if verify:
            rows = {tuple(tuple(s.get(k) or ())[1:] for k in ("context_shape", "target_shape")) for s in shards}
            if len(rows) > 1:
                raise FeatureCacheError(f"feature cache {self.root}: shards disagree on per-row shapes {rows}")
            for s in shards:
                verify_feature_shard(self.root, s, self.index.get("dtype"))
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
        max_truncated_fraction: float = 1.0,
        validation_report: dict[str, Any] | None = None,
    ) -> None:
        if (transform is None) == (feature_cache is None) and any(
            s.get("image") is not None for s in samples
        ):
            raise ValueError("give exactly one of transform / feature_cache for samples with images")
        dupes = [k for k, n in Counter(str(s["id"]) for s in samples).items() if n > 1]
        if dupes:
            raise ValueError(
                f"{len(dupes)} duplicated sample ids, e.g. {dupes[:_EXAMPLES_PER_REASON]}; "
                "validate_records drops them (duplicate_id)"
            )
        self.tokenizer, self.image_root = tokenizer, image_root
        self.num_image_tokens, self.max_length, self.image_token = num_image_tokens, max_length, image_token
        self.transform, self.feature_cache = transform, feature_cache
        self.image_token_id = image_token_id(tokenizer, image_token)
        self.validation_report = validation_report  # the load_and_validate report, reported in ``stats``
        drops, truncation = DropLog(), TruncationLog(max_length)
        self.samples: list[dict[str, Any]] = []
        self.lengths: list[int] = []  # expanded, truncated lengths (for length-grouped samplers)
        # Each sample is tokenised once, here; __getitem__ expands the kept encoding (int32 arrays: 4 bytes a token).
        self._encoded: list[tuple[array[int], array[int]]] = []
        for s in samples:
            raw_ids, raw_labels = self._tokenise(s)
            ids, labels = self._expand(raw_ids, raw_labels)
            reason = self._length_problem(ids, labels)
            if reason:
                drops.drop(reason, s["id"])
                continue
            if feature_cache is not None and s.get("image") is not None and s["id"] not in feature_cache:
                raise KeyError(f"sample {s['id']!r} has an image but no entry in the feature cache")
            truncation.add(s["id"], labels)
            self.samples.append(s)
            self._encoded.append((array("i", raw_ids), array("i", raw_labels)))
            self.lengths.append(min(len(ids), max_length or len(ids)))
        self.report = drops.report("LlavaDataset", len(samples), max_dropped_fraction)
        from jarvis.data.sampler import modality_lengths

        self.modality_lengths = modality_lengths(self.samples)  # LLaVA's: word counts, negative without image
        if not self.samples:  # even under max_dropped_fraction 1.0: a stage with nothing to train on is no success
            raise DataRefused(f"LlavaDataset: no sample left to train on ({len(samples)} given; drops "
                             f"{self.report['counts']}, first ids {self.report['examples']})")
        self.truncation = truncation.report("LlavaDataset", max_truncated_fraction)

    @property
    def stats(self) -> dict[str, float]:
        """Drop and truncation counts as flat numbers (metrics.json, MLflow): ``validation/...`` (the annotation
        file, when ``validation_report`` was given), ``encode/...`` (this dataset's drops), ``truncation/...``,
        ``tokens/...`` (sequence lengths: mean, p50, p95, max)."""
        out = drop_metrics(self.validation_report, "validation") if self.validation_report else {}
        out.update(drop_metrics(self.report, "encode"))
        t = self.truncation
        out.update(
            {
                "truncation/samples": float(t["truncated_samples"]),
                "truncation/samples_losing_supervision": float(t["samples_losing_supervision"]),
                "truncation/supervised_tokens": float(t["supervised_tokens"]),
                "truncation/supervised_tokens_lost": float(t["supervised_tokens_lost"]),
                "truncation/fraction": float(t["truncated_fraction"]),
            }
        )
        # token lengths as the model sees them (image span expanded, truncated at max_length): the sequence-length
        # statistics of this corpus under this tokenizer, measured on the one tokenisation
        n = sorted(self.lengths)
        out.update({"tokens/mean": sum(n) / len(n), "tokens/p50": float(n[len(n) // 2]),
                    "tokens/p95": float(n[min(len(n) - 1, (95 * len(n)) // 100)]), "tokens/max": float(n[-1])})
        return out

    def _tokenise(self, s: dict[str, Any]) -> tuple[list[int], list[int]]:
        return encode_conversation(self.tokenizer, s["conversations"], self.image_token, None, s["id"])

    def _expand(self, ids: Sequence[int], labels: Sequence[int]) -> tuple[list[int], list[int]]:
        out, lab = expand_image_token(ids, labels, self.image_token_id, self.num_image_tokens)
        assert lab is not None
        return out, lab

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
        ids, labels = self._expand(*self._encoded[i])
        if self.max_length is not None:
            ids, labels = ids[: self.max_length], labels[: self.max_length]
        out: dict[str, Any] = {
            "id": str(s["id"]),
            "index": i,  # keys the JEPA masks of its micro-batch (jarvis.data.collate.JepaMaskCollator)
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
        image = load_rgb(safe_image_path(self.image_root, s["image"]))
        if isinstance(self.transform, ContextTargetTransform):
            out["pixel_values"], out["pixel_values_target"] = self.transform(image)
        else:
            assert self.transform is not None
            out["pixel_values"] = self.transform(image)
        return out
