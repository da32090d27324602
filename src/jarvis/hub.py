"""Hugging Face hub access for `download`: revisions resolved and locked, snapshots from the library's cache,
pickled ``.bin`` checkpoints converted to safetensors without executing code.

* Revisions: a floating ``revision`` (``main``, a tag) is resolved to its commit hash before anything is fetched —
  online through ``HfApi.repo_info``, offline (``HF_HUB_OFFLINE=1``) through the cache's ``refs/<revision>`` file,
  exactly where ``snapshot_download`` itself looks. The snapshot is then fetched *at that commit* into the
  standard cache (``models--org--name/snapshots/<sha>/``), so an interrupted transfer is resumed by the library.
* Lock: ``hub.lock.yaml`` at the project root maps ``(repo_type, repo_id, requested revision)`` to the commit that
  was downloaded. It is versioned with the results (git, not a DVC output: DVC and Snakemake delete a stage's
  outputs before rerunning it, which would erase the very record the check needs). A later download that
  resolves the same name to another commit stops, unless the user asks for the update (``--update-lock`` or
  ``JARVIS_UPDATE_LOCK=1``).
* ``.bin``: ``pytorch_model.bin`` or ``pytorch_model-XXXXX-of-YYYYY.bin`` shards (+ their index) are read with
  ``torch.load(weights_only=True)`` — the restricted unpickler that only rebuilds tensors and plain containers —
  and written once as safetensors with the same sharding and a ``model.safetensors.index.json``. Anything that
  loader refuses (custom classes, code) is refused here, naming the file.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from jarvis import yamlsafe
from jarvis.io import write_json_atomic, write_text_atomic

COMMIT = re.compile(r"^[0-9a-f]{40}$")
UPDATE_ENV = "JARVIS_UPDATE_LOCK"
BIN_INDEX = "pytorch_model.bin.index.json"
ST_INDEX = "model.safetensors.index.json"
_BIN_SHARD = re.compile(r"^pytorch_model(-\d{5}-of-\d{5})?\.bin$")
# What a model snapshot contributes besides weights: configs, tokenizer files, chat templates.
MODEL_FILES = ["*.json", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
# transformers' weight names (model.safetensors, model-00001-of-00004.safetensors); not e.g. Mistral's
# consolidated.safetensors, the same weights again in another layout.
ST_WEIGHTS = "model*.safetensors"


class LockConflict(RuntimeError):
    """The hub now serves another commit for a name that hub.lock.yaml pins."""


def truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in {"1", "true", "yes", "on"}


def offline() -> bool:
    """Read at call time (huggingface_hub reads its constant once, at import)."""
    from huggingface_hub import constants

    return (truthy(os.environ.get("HF_HUB_OFFLINE")) or truthy(os.environ.get("TRANSFORMERS_OFFLINE"))
            or bool(constants.HF_HUB_OFFLINE))


def cache_dir() -> Path:
    """The hub cache the library uses: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else the library default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_folder(repo_id: str, repo_type: str) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return cache_dir() / repo_folder_name(repo_id=repo_id, repo_type=repo_type)


# ------------------------------------------------------------------ revisions
def resolve(repo_id: str, revision: str, repo_type: str) -> str:
    """The commit hash ``revision`` names now (a commit hash names itself)."""
    if COMMIT.fullmatch(revision):
        return revision
    if offline():
        ref = repo_folder(repo_id, repo_type) / "refs" / revision
        if not ref.is_file():
            raise FileNotFoundError(f"{repo_type} {repo_id}@{revision}: offline (HF_HUB_OFFLINE=1) and the hub cache "
                                    f"{cache_dir()} has no {ref.relative_to(cache_dir())}")
        commit = ref.read_text().strip()
    else:
        from huggingface_hub import HfApi

        try:
            commit = HfApi().repo_info(repo_id, repo_type=repo_type, revision=revision).sha or ""
        except Exception as err:  # the client's errors are many; name the repo
            raise RuntimeError(f"cannot resolve {repo_type} {repo_id}@{revision}: {err}") from err
    if not COMMIT.fullmatch(commit):
        raise RuntimeError(f"{repo_type} {repo_id}@{revision} resolved to {commit!r}, not a commit hash")
    return commit


@dataclasses.dataclass(frozen=True)
class Snapshot:
    repo_id: str
    repo_type: str
    revision: str  # as requested in params.yaml
    commit: str
    path: Path  # the read-only snapshot folder in the hub cache

    def record(self) -> dict[str, str]:
        return {"repo_id": self.repo_id, "repo_type": self.repo_type, "revision": self.revision,
                "commit": self.commit}


def snapshot(repo_id: str, revision: str, repo_type: str, *, allow_patterns: list[str] | None = None,
             update_lock: bool = False) -> Snapshot:
    """Resolve, check the lock, fetch the snapshot at that commit into the hub cache (resumable), return it.

    Call :func:`lock` once the artifact built from it is in place.
    """
    commit = resolve(repo_id, revision, repo_type)
    check_lock(repo_type, repo_id, revision, commit, update_lock)
    expected = repo_folder(repo_id, repo_type) / "snapshots" / commit  # where the library will put it
    return fetch(Snapshot(repo_id, repo_type, revision, commit, expected), allow_patterns)


def fetch(snap: Snapshot, allow_patterns: list[str] | None) -> Snapshot:
    """(More) files of an already resolved snapshot, at its commit."""
    from huggingface_hub import snapshot_download

    from jarvis.progress import Progress

    try:
        path = snapshot_download(repo_id=snap.repo_id, revision=snap.commit, repo_type=snap.repo_type,
                                 cache_dir=cache_dir(), allow_patterns=allow_patterns, local_files_only=offline(),
                                 tqdm_class=Progress)  # the overall bar; plain lines in log files
    except Exception as err:  # name the artifact; the cache keeps what was fetched
        raise RuntimeError(f"download of {snap.repo_type} {snap.repo_id}@{snap.revision} ({snap.commit}) "
                           f"failed: {err}") from err
    return dataclasses.replace(snap, path=Path(path))


# ------------------------------------------------------------------ lock file
def lock_path() -> Path:
    from jarvis import paths

    return paths.hub_lock()


def update_requested(flag: bool = False) -> bool:
    return flag or truthy(os.environ.get(UPDATE_ENV))


def read_lock() -> dict[str, Any]:
    path = lock_path()
    if not path.is_file():
        return {}
    data = yamlsafe.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping")
    return data


def locked(section: str, name: str, key: str) -> str | None:
    return (read_lock().get(section) or {}).get(name, {}).get(key)


def check_lock(section: str, name: str, key: str, value: str, update: bool = False) -> None:
    old = locked(section, name, key)
    if old is not None and old != value and not update_requested(update):
        raise LockConflict(
            f"{section} {name}@{key} is now {value}, but {lock_path()} pins {old}. To keep the locked one, set "
            f"revision: {old} in params.yaml; to move to the new one, rerun with `jarvis download --update-lock` "
            f"(or {UPDATE_ENV}=1) and commit the changed {lock_path().name}.")


_LOCK_HEADER = ("# Written by `jarvis download`: the commit (or checksum) each floating name resolved to.\n"
                "# Commit it with the results. A download that finds another value stops; see README, Pinning.\n")


def lock(section: str, name: str, key: str, value: str) -> None:
    """Record ``section.name.key = value`` (read-modify-write under a file lock: download stages run in parallel)."""
    from filelock import FileLock

    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(path.with_name(f".{path.name}.flock"))):
        data = read_lock()
        data.setdefault(section, {}).setdefault(name, {})[key] = value
        write_text_atomic(path, _LOCK_HEADER + yaml.safe_dump(data, sort_keys=True))


def lock_snapshot(snap: Snapshot) -> None:
    lock(snap.repo_type, snap.repo_id, snap.revision, snap.commit)


# ------------------------------------------------------------------ materialising a snapshot
def place(src: Path, dst: Path) -> None:
    """Copy one snapshot file out of the cache. Safetensors weights are hard-linked when possible (same disk, no
    double storage); they are never written to afterwards. Everything else is copied, because later steps rewrite
    files such as the tokenizer in place, which through a hard link would corrupt the cache's blob."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    real = src.resolve()
    if dst.suffix == ".safetensors":
        try:
            os.link(real, dst)
            return
        except OSError:
            pass
    shutil.copyfile(real, dst)


def snapshot_files(snap: Path, patterns: Iterable[str] | None = None) -> list[str]:
    """Relative paths in a snapshot folder (optionally filtered by fnmatch patterns on the file name)."""
    import fnmatch

    pats = list(patterns) if patterns is not None else None
    out = []
    for f in sorted(snap.rglob("*")):
        if f.is_dir() or (pats is not None and not any(fnmatch.fnmatch(f.name, p) for p in pats)):
            continue
        out.append(f.relative_to(snap).as_posix())
    return out


# ------------------------------------------------------------------ .bin -> safetensors
def bin_shards(snap: Path) -> list[str]:
    """The pickled weight files of a transformers checkpoint: the index's shards, or ``pytorch_model.bin``."""
    if (snap / BIN_INDEX).is_file():
        shards = sorted(set(json.loads((snap / BIN_INDEX).read_text())["weight_map"].values()))
    elif (snap / "pytorch_model.bin").is_file():
        shards = ["pytorch_model.bin"]
    else:
        return []
    for s in shards:  # names from a downloaded file reach paths: only the standard shard names
        if not _BIN_SHARD.fullmatch(s):
            raise ValueError(f"{BIN_INDEX}: shard name {s!r} is not pytorch_model[-NNNNN-of-NNNNN].bin")
    return shards


def load_bin(path: Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)``: tensors and plain containers only, no code executed; else refused."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{path.name}: refused, it cannot be loaded with torch.load(weights_only=True) "
                         f"({type(err).__name__}: {first})") from None
    if not isinstance(obj, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                            for k, v in obj.items()):
        raise ValueError(f"{path.name}: refused, it is not a flat state dict of named tensors")
    return obj


def _unshare(state: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Safetensors stores each tensor once and refuses aliases (tied embeddings, views of one storage): every key is
    kept, a tensor whose storage an earlier key already holds is cloned, and anything non-contiguous or a slice of a
    larger storage is compacted. Returns the tensors and the names that were aliases."""
    seen: set[int] = set()
    out, shared = {}, []
    for name, t in state.items():
        storage = t.untyped_storage()
        ptr = storage.data_ptr()
        alias = t.numel() > 0 and ptr in seen
        if alias:
            shared.append(name)
        if alias or not t.is_contiguous() or storage.nbytes() != t.nbytes:
            t = t.contiguous().clone()
        elif t.numel() > 0:
            seen.add(ptr)
        out[name] = t
    return out, shared


def convert_bin(snap: Path, dst: Path) -> dict[str, Any]:
    """Write ``snap``'s pickled shards as safetensors into ``dst`` (same sharding, with an index when sharded).

    ``dst`` is a temp directory that jarvis.io.atomic_dir publishes in one rename (the download stage's), so the
    files are written in place: no second temp-and-rename here."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    shards = bin_shards(snap)
    if not shards:
        raise FileNotFoundError(f"{snap}: no pytorch_model*.bin weights")
    expected = json.loads((snap / BIN_INDEX).read_text())["weight_map"] if (snap / BIN_INDEX).is_file() else None
    weight_map: dict[str, str] = {}
    total, shared, written = 0, [], []
    for shard in shards:
        state = load_bin(snap / shard)
        if expected is not None:
            want = {k for k, v in expected.items() if v == shard}
            if want != set(state):
                raise ValueError(f"{shard}: its tensors do not match {BIN_INDEX} "
                                 f"(missing {sorted(want - set(state))[:3]}, extra {sorted(set(state) - want)[:3]})")
        tensors, aliases = _unshare(state)
        shared += aliases
        name = shard.removeprefix("pytorch_").removesuffix(".bin") + ".safetensors"
        path = dst / name  # dst is the download's temp directory: a failed check below publishes nothing
        save_file(tensors, str(path), metadata={"format": "pt"})
        with safe_open(str(path), framework="pt") as fh:  # verify: same names, shapes and dtypes came back
            for k in fh.keys():
                sl = fh.get_slice(k)
                if list(sl.get_shape()) != list(tensors[k].shape):
                    raise ValueError(f"{name}: tensor {k} changed shape in conversion")
            if set(fh.keys()) != set(tensors):
                raise ValueError(f"{name}: tensors lost in conversion")
        written.append(name)
        weight_map.update(dict.fromkeys(tensors, name))
        total += sum(t.numel() * t.element_size() for t in tensors.values())
        del state, tensors
    if expected is not None or len(shards) > 1:
        write_json_atomic(dst / ST_INDEX, {"metadata": {"total_size": total}, "weight_map": weight_map})
    return {"from": shards, "to": written, "tensors": len(weight_map), "shared_cloned": sorted(shared),
            "loader": "torch.load(weights_only=True)"}


# ------------------------------------------------------------------ an offline cache, in the library's layout
def seed_cache(repo_id: str, repo_type: str, commit: str, files: dict[str, bytes | Path], ref: str = "main",
               cache: Path | None = None) -> Path:
    """Write ``files`` as one snapshot of ``repo_id`` in the standard cache layout (blobs + symlinked snapshot +
    ``refs/<ref>``), e.g. to prepare an air-gapped cluster or a test. Returns the snapshot folder."""
    import hashlib

    if not COMMIT.fullmatch(commit):
        raise ValueError(f"commit {commit!r} is not a 40-hex commit hash")
    from huggingface_hub.file_download import repo_folder_name

    root = (cache or cache_dir()) / repo_folder_name(repo_id=repo_id, repo_type=repo_type)
    snap = root / "snapshots" / commit
    for rel, content in files.items():
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            raise ValueError(f"snapshot path {rel!r} escapes the snapshot")
        data = content.read_bytes() if isinstance(content, Path) else content
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.write_bytes(data)
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    if ref:
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / ref).write_text(commit)
    return snap
