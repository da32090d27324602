"""Atomic artifact writes (house rule: temp file + rename), shared by every stage; the stage lock."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


class StageFailed(RuntimeError):
    """An expected runtime failure of a stage (divergence, a held lock, non-finite results): ``jarvis`` prints
    its message as one ``error:`` line and exits 1, the traceback only with ``--verbose``."""
LOCK_HEARTBEAT_S = 30.0  # the holder touches its lock file this often
LOCK_STALE_S = 300.0  # a lock not touched for this long is stale (its holder's node died or it was SIGKILLed)


@contextlib.contextmanager
def atomic_dir(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp sibling directory; on success it replaces ``out`` in one rename, on failure it is removed."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        yield tmp
        replace_dir(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(tmp: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Move the finished directory ``tmp`` onto ``out`` (same file system); an old ``out`` is moved aside first,
    because ``os.replace`` needs an empty target, and removed after."""
    tmp, out = Path(tmp), Path(out)
    if out.exists() or out.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
        os.replace(out, old / out.name)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)
    return out


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to a temp sibling, then rename it onto ``path``; the temp file never outlives a failure."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    return write_bytes_atomic(path, text.encode())


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    """Strict JSON: a NaN or infinity (``NaN``/``Infinity`` are not JSON; strict parsers reject them, and a NaN
    metric reads as a result) fails with :class:`StageFailed` naming the file, and nothing is written."""
    try:
        text = json.dumps(obj, indent=2, sort_keys=True, default=str, allow_nan=False)
    except ValueError as err:
        raise StageFailed(f"refusing to write {path}: it holds a non-finite number ({err})") from err
    return write_text_atomic(path, text + "\n")


def save_safetensors_atomic(tensors: dict[str, Any], path: str | os.PathLike[str],
                            metadata: dict[str, str] | None = None) -> Path:
    """Safetensors (never pickles) written through :func:`write_bytes_atomic`."""
    from safetensors.torch import save

    return write_bytes_atomic(path, save(tensors, metadata=metadata))


def read_json(path: str | os.PathLike[str]) -> Any:
    with Path(path).open() as fh:
        return json.load(fh)


# ---- partial work --------------------------------------------------------------------------------------------------

PARTIAL_RECORD = ".jarvis-producer.json"  # inside every resumable ``*.partial`` directory


def digest(obj: Any) -> str:
    """sha256 (16 hex) of the canonical JSON of ``obj``."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()[:16]


def claim_partial(partial: str | os.PathLike[str], producer: Any, what: str) -> str:
    """Resume into ``partial`` only if it was made by ``producer`` (the inputs and settings of the work): a partial
    directory recording another producer, or none, is discarded with a warning. Returns the producer digest."""
    partial = Path(partial)
    want = digest(producer)
    record = partial / PARTIAL_RECORD
    if partial.exists():
        try:
            old = read_json(record).get("digest")
        except (OSError, ValueError, AttributeError):
            old = None
        if old != want:
            logger.warning("discarding partial %s %s: made by %s, not by the current inputs/settings (%s)",
                           what, partial, old or "unrecorded inputs", want)
            shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    if not record.is_file():
        write_json_atomic(record, {"digest": want, "producer": producer})
    return want


# ---- the stage lock ------------------------------------------------------------------------------------------------


class LockHeld(StageFailed):
    """Another live process holds the lock of this stage output."""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _stale_reason(path: Path, holder: dict[str, Any] | None, stale_after_s: float) -> str | None:
    """Why the lock at ``path`` may be taken over, or None while its holder looks alive."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return "it vanished"
    if holder is None:
        # Created but never written: the holder died between open and write (or is writing right now).
        return f"unreadable and {age:.0f} s old" if age > 10.0 else None
    if holder.get("host") == socket.gethostname() and not _pid_alive(int(holder.get("pid", -1))):
        return f"pid {holder.get('pid')} on this host ({holder.get('host')}) is gone"
    if age > stale_after_s:
        return f"no heartbeat for {age:.0f} s (> {stale_after_s:.0f} s) from pid {holder.get('pid')} on {holder.get('host')}"
    return None


def _read_lock(path: Path) -> dict[str, Any] | None:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str], what: str = "this stage output", *,
                   stale_after_s: float = LOCK_STALE_S, heartbeat_s: float = LOCK_HEARTBEAT_S) -> Iterator[Path]:
    """Hold ``path`` (created with O_EXCL, holding pid/host/start) for the block; :class:`LockHeld` if a live
    process has it. A lock whose holder is gone (same host, dead pid) or silent for ``stale_after_s`` (the holder
    refreshes the file's mtime every ``heartbeat_s``) is stale: taken over, with a warning. Released on exit."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time(), "argv": sys.argv[:6]}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _read_lock(path)
            why = _stale_reason(path, holder, stale_after_s)
            if why is None:
                who = f"pid {holder.get('pid')} on {holder.get('host')}" if holder else "a process starting up"
                since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(holder["started"])) if holder else "now"
                raise LockHeld(f"{what} is being produced by {who} (since {since}; lock {path}); refusing to run"
                               " a second process on it. If that process is dead, delete the lock file.") from None
            if _read_lock(path) == holder:  # still the one judged stale (narrows the race with another taker)
                logger.warning("taking over stale lock %s: %s", path, why)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
            continue
        with os.fdopen(fd, "w") as fh:
            json.dump(me, fh)
        break
    else:
        raise LockHeld(f"could not take the lock {path} of {what} (contended)")
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(heartbeat_s):
            with contextlib.suppress(OSError):
                os.utime(path)

    thread = threading.Thread(target=beat, name=f"lock-heartbeat:{path.name}", daemon=True)
    thread.start()
    try:
        yield path
    finally:
        stop.set()
        thread.join()
        if _read_lock(path) == me:
            path.unlink(missing_ok=True)
