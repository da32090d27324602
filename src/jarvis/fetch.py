"""URL archives for `download` (the stage-2 image sources: COCO, GQA, OCR-VQA, TextVQA, Visual Genome).

Resumable: the bytes already in ``<file>.partial`` are kept across failures and runs, and the rest is asked for
with an HTTP ``Range`` request; transient failures (dropped connections, timeouts, 5xx, 429) are retried with
exponential backoff, client errors (404, 403, ...) are not and name the URL. A finished file is verified against
the declared checksum (or, where none is published, against the one pinned in hub.lock.yaml on the first
download with ``--pin-checksums``), then extracted with the zip-slip guard into a temporary sibling and renamed into
place in one step.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import shutil
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path
from typing import Any

from jarvis.io import atomic_dir

log = logging.getLogger(__name__)
PIN_ENV = "JARVIS_PIN_CHECKSUMS"
_RETRYABLE_HTTP = {408, 425, 429, 500, 502, 503, 504}
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$|^bytes \*/(\d+)$")


class FetchError(RuntimeError):
    """A URL could not be fetched (the message names it)."""


class ChecksumMismatch(ValueError):
    """A downloaded file is not the declared one."""


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total size) of a Content-Range header."""
    m = _CONTENT_RANGE.match((value or "").strip())
    if not m:
        return None, None
    if m.group(4):
        return None, int(m.group(4))
    return int(m.group(1)), (None if m.group(3) == "*" else int(m.group(3)))


def _transfer(url: str, partial: Path, timeout_s: float, chunk: int) -> None:
    """One request: append the missing bytes to ``partial``; raise if the file is not complete afterwards."""
    have = partial.stat().st_size if partial.exists() else 0
    headers = {"User-Agent": "jarvis-download", "Accept-Encoding": "identity"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout_s)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:  # nothing left to send: complete if the size is what the server has
            _, total = _content_range(err.headers.get("Content-Range"))
            if total == have:
                return
            partial.unlink()  # larger than the remote file: not a prefix of it; the retry starts over
            raise http.client.HTTPException(f"{partial.name} is longer than the remote file ({total} bytes)") from None
        raise
    with resp:
        if resp.status == 206:
            start, total = _content_range(resp.headers.get("Content-Range"))
            if start != have:
                raise http.client.HTTPException(f"server resumed at byte {start}, not {have}")
            mode = "ab"
        else:  # 200: the server ignored the range (or there was none): start over
            have, mode = 0, "wb"
            length = resp.headers.get("Content-Length")
            total = int(length) if length is not None else None
        with partial.open(mode) as fh:
            while buf := resp.read(chunk):
                fh.write(buf)
    size = partial.stat().st_size
    if total is not None and size != total:
        raise http.client.IncompleteRead(b"", total - size)


def download(url: str, dest: Path, *, retries: int = 5, backoff_s: float = 2.0, timeout_s: float = 60.0,
             chunk: int = 1 << 20) -> dict[str, Any]:
    """Fetch ``url`` to ``dest`` (no-op if ``dest`` exists), resuming ``dest.partial``. Returns transfer stats."""
    if dest.is_file():
        return {"requests": 0, "resumed": False}
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    resumed = partial.exists() and partial.stat().st_size > 0
    for attempt in range(retries + 1):
        try:
            _transfer(url, partial, timeout_s, chunk)
            os.replace(partial, dest)
            return {"requests": attempt + 1, "resumed": resumed or attempt > 0}
        except urllib.error.HTTPError as err:
            if err.code not in _RETRYABLE_HTTP:
                raise FetchError(f"{url}: HTTP {err.code} {err.reason}") from None
            reason: Exception = err
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            reason = err
        if attempt < retries:
            delay = backoff_s * 2 ** attempt
            log.warning("%s: %s; retry %d/%d in %.1fs (resuming at byte %d)", url, reason, attempt + 1, retries,
                        delay, partial.stat().st_size if partial.exists() else 0)
            time.sleep(delay)
    raise FetchError(f"{url}: failed after {retries + 1} attempts, last error: {reason}; the bytes so far are "
                     f"kept in {partial} and the next run resumes there")


def digest(path: Path, algo: str) -> str:
    h = hashlib.new(algo)
    with path.open("rb") as fh:
        while buf := fh.read(1 << 20):
            h.update(buf)
    return h.hexdigest()


def verify(path: Path, checksum: str, url: str) -> None:
    """``checksum`` is "sha256:<hex>" or "md5:<hex>". A mismatch moves the file aside (the next run starts over)."""
    algo, want = checksum.split(":", 1)
    got = digest(path, algo)
    if got != want:
        rejected = path.with_name(path.name + ".rejected")
        os.replace(path, rejected)
        raise ChecksumMismatch(f"{url}: {algo} is {got}, but {want} is declared; refused (moved to {rejected})")


def extract(archive: Path, root: str, dest: Path) -> int:
    """The members under ``root/`` of a zip archive into ``dest`` (prefix stripped), atomically. Returns files."""
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:  # zip-slip: nothing may land outside the extraction root
            p = Path(info.filename)
            if p.is_absolute() or ".." in p.parts or info.filename.startswith(("/", "\\")):
                raise ValueError(f"{archive.name}: member {info.filename!r} escapes the extraction root")
        if root == "*":  # the archive's one top-level folder, whatever it is called
            tops = {i.filename.split("/", 1)[0] for i in infos}
            if len(tops) != 1 or not any("/" in i.filename for i in infos):
                raise ValueError(f"{archive.name}: root '*' needs one top-level folder, found {sorted(tops)[:5]}")
            root = tops.pop()
        prefix = f"{root}/" if root else ""
        members = [i for i in infos if i.filename.startswith(prefix) and i.filename != prefix]
        if not any(not i.is_dir() for i in members):
            raise ValueError(f"{archive.name}: no files under {prefix or 'the archive root'}")
        n = 0
        with atomic_dir(dest) as tmp:
            for info in members:
                target = tmp / info.filename[len(prefix):]
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, target.open("wb") as out:
                    shutil.copyfileobj(src, out, 1 << 20)
                n += 1
        return n


def require_checksums(archives: dict[str, tuple[str, str | None]], pin: bool = False) -> None:
    """Before any byte is fetched: each archive (name -> (url, checksum)) has a checksum to be verified against,
    declared or pinned, unless pinning on this download was asked for explicitly."""
    from jarvis import hub
    from jarvis.config import ConfigError

    if pin or hub.truthy(os.environ.get(PIN_ENV)):
        return
    missing = [f"{name} ({url})" for name, (url, checksum) in archives.items()
               if checksum is None and hub.locked("archive", url, "sha256") is None]
    if missing:
        raise ConfigError(f"url_archives {', '.join(missing)}: checksum is null and {hub.lock_path()} pins none. "
                          f"Declare the published checksum in params.yaml, or run once with `jarvis download "
                          f"--pin-checksums` ({PIN_ENV}=1) to trust this first download and record its sha256.")


def fetch_archive(name: str, url: str, checksum: str | None, root: str, dest: Path, *, pin: bool = False,
                  downloads: Path, **transfer: Any) -> dict[str, Any]:
    """Download, verify and extract one declared archive into ``dest``. Returns what the manifest records."""
    from jarvis import hub

    require_checksums({name: (url, checksum)}, pin)
    pinned = hub.locked("archive", url, "sha256")
    file = downloads / f"{name}-{Path(url.split('?')[0]).name or 'archive'}"
    stats = download(url, file, **transfer)
    source = "params.yaml"
    if checksum is not None:
        verify(file, checksum, url)
    elif pinned is not None:
        verify(file, f"sha256:{pinned}", url)
        source = str(hub.lock_path())
    sha256 = digest(file, "sha256") if checksum is None or not checksum.startswith("sha256:") else checksum[7:]
    if checksum is None and pinned is None:  # trust on first use, explicitly asked for
        hub.lock("archive", url, "sha256", sha256)
        source = "pinned now (--pin-checksums)"
    n = extract(file, root, dest)
    return {"url": url, "sha256": sha256, "checksum_from": source, "files": n, **stats}
