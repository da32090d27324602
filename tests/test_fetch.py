"""URL archives (jarvis.fetch) against a real HTTP server on 127.0.0.1: resume, checksums, 404, extraction."""

from __future__ import annotations

import hashlib
import io
import os
import random
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from archive_server import ArchiveServer, serve
from jarvis import fetch, hub

FAST = {"backoff_s": 0.01, "timeout_s": 10.0, "chunk": 4096}


@pytest.fixture
def server() -> Iterator[ArchiveServer]:
    with serve() as s:
        yield s


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(fetch.PIN_ENV, raising=False)
    return tmp_path


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def coco_zip() -> bytes:
    rng = random.Random(0)  # incompressible bytes so the transfer is long enough to cut in the middle
    return zip_bytes({f"train2017/{i:012d}.jpg": rng.randbytes(3000) for i in range(4)})


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_interrupted_transfer_resumes_with_a_range_request(server: ArchiveServer, tmp_path: Path) -> None:
    data = coco_zip()
    server.files["/train2017.zip"] = data
    server.cut_after["/train2017.zip"] = 5000
    dest = tmp_path / "dl" / "train2017.zip"
    stats = fetch.download(server.url("/train2017.zip"), dest, **FAST)
    assert dest.read_bytes() == data
    assert stats == {"requests": 2, "resumed": True}
    assert server.requests == [("/train2017.zip", None), ("/train2017.zip", "bytes=5000-")]
    assert not dest.with_name("train2017.zip.partial").exists()


def test_failed_run_keeps_the_partial_and_the_next_run_resumes(server: ArchiveServer, tmp_path: Path) -> None:
    data = coco_zip()
    server.files["/a.zip"] = data
    server.cut_after["/a.zip"] = 7000
    dest = tmp_path / "a.zip"
    with pytest.raises(fetch.FetchError, match=r"/a\.zip: failed after 1 attempts.*next run resumes"):
        fetch.download(server.url("/a.zip"), dest, retries=0, **FAST)
    assert (tmp_path / "a.zip.partial").stat().st_size == 7000 and not dest.exists()
    assert fetch.download(server.url("/a.zip"), dest, retries=0, **FAST) == {"requests": 1, "resumed": True}
    assert dest.read_bytes() == data and server.requests[-1] == ("/a.zip", "bytes=7000-")


def test_complete_partial_is_accepted_on_416(server: ArchiveServer, tmp_path: Path) -> None:
    server.files["/b.zip"] = b"0123456789"
    (tmp_path / "b.zip.partial").write_bytes(b"0123456789")  # the previous run died just before the rename
    fetch.download(server.url("/b.zip"), tmp_path / "b.zip", **FAST)
    assert (tmp_path / "b.zip").read_bytes() == b"0123456789"
    assert server.requests == [("/b.zip", "bytes=10-")]


def test_transient_errors_are_retried_with_backoff(server: ArchiveServer, tmp_path: Path) -> None:
    server.files["/c.zip"] = b"payload"
    server.fail_with["/c.zip"] = [503, 502]
    assert fetch.download(server.url("/c.zip"), tmp_path / "c.zip", **FAST)["requests"] == 3
    assert (tmp_path / "c.zip").read_bytes() == b"payload"
    server.fail_with["/d.zip"] = [503] * 3
    with pytest.raises(fetch.FetchError, match=r"/d\.zip: failed after 3 attempts, last error: HTTP Error 503"):
        fetch.download(server.url("/d.zip"), tmp_path / "d.zip", retries=2, **FAST)


def test_server_ignoring_the_range_restarts_the_file(server: ArchiveServer, tmp_path: Path) -> None:
    data = coco_zip()
    server.files["/e.zip"] = data
    server.ignore_range.add("/e.zip")
    (tmp_path / "e.zip.partial").write_bytes(b"stale prefix")
    fetch.download(server.url("/e.zip"), tmp_path / "e.zip", **FAST)
    assert (tmp_path / "e.zip").read_bytes() == data  # not appended to the stale bytes


def test_partial_longer_than_the_remote_file_starts_over(server: ArchiveServer, tmp_path: Path) -> None:
    server.files["/f.zip"] = b"0123"
    (tmp_path / "f.zip.partial").write_bytes(b"0123456789")  # the file behind the URL shrank
    assert fetch.download(server.url("/f.zip"), tmp_path / "f.zip", **FAST)["requests"] == 2
    assert (tmp_path / "f.zip").read_bytes() == b"0123"
    assert server.requests == [("/f.zip", "bytes=10-"), ("/f.zip", None)]


def test_404_is_named_and_not_retried(server: ArchiveServer, tmp_path: Path) -> None:
    with pytest.raises(fetch.FetchError, match=rf"{server.url('/gqa/images.zip')}: HTTP 404"):
        fetch.download(server.url("/gqa/images.zip"), tmp_path / "images.zip", **FAST)
    assert len(server.requests) == 1


def test_checksum_mismatch_is_refused_and_nothing_is_extracted(server: ArchiveServer, project: Path) -> None:
    data = coco_zip()
    server.files["/train2017.zip"] = data
    url = server.url("/train2017.zip")
    dest = project / "instruct" / "coco" / "train2017"
    with pytest.raises(fetch.ChecksumMismatch, match=rf"{url}: sha256 is {hashlib.sha256(data).hexdigest()}, "
                                                    rf"but {'0' * 64} is declared; refused"):
        fetch.fetch_archive("coco", url, "sha256:" + "0" * 64, "train2017", dest, downloads=project / "dl",
                            **FAST)
    assert not dest.exists()
    assert not (project / "dl" / "coco-train2017.zip").exists()  # moved aside: the next run fetches again
    assert (project / "dl" / "coco-train2017.zip.rejected").read_bytes() == data


@pytest.mark.parametrize("algo", ["sha256", "md5"])
def test_verified_archive_lands_in_the_annotation_layout(server: ArchiveServer, project: Path, algo: str) -> None:
    data = coco_zip()
    server.files["/train2017.zip"] = data
    checksum = f"{algo}:{hashlib.new(algo, data).hexdigest()}"
    dest = project / "instruct" / "coco" / "train2017"
    info = fetch.fetch_archive("coco", server.url("/train2017.zip"), checksum, "train2017", dest,
                               downloads=project / "dl", **FAST)
    assert info["files"] == 4 and info["sha256"] == hashlib.sha256(data).hexdigest()
    assert sorted(p.name for p in dest.iterdir()) == [f"{i:012d}.jpg" for i in range(4)]
    assert not [p for p in dest.parent.iterdir() if ".tmp-" in p.name]


def test_unpublished_checksum_needs_an_explicit_pin_then_is_held_to_it(server: ArchiveServer,
                                                                         project: Path) -> None:
    server.files["/images.zip"] = zip_bytes({"images/1.jpg": b"one"})
    url = server.url("/images.zip")
    dest = project / "gqa" / "images"
    with pytest.raises(ValueError, match=r"url_archives gqa .*checksum is null .*--pin-checksums"):
        fetch.fetch_archive("gqa", url, None, "images", dest, downloads=project / "dl", **FAST)
    assert server.requests == []  # refused before any byte is fetched

    info = fetch.fetch_archive("gqa", url, None, "images", dest, pin=True, downloads=project / "dl", **FAST)
    assert info["checksum_from"] == "pinned now (--pin-checksums)"
    assert hub.locked("archive", url, "sha256") == hashlib.sha256(server.files["/images.zip"]).hexdigest()
    assert (dest / "1.jpg").read_bytes() == b"one"

    os.remove(project / "dl" / "gqa-images.zip")  # upstream changes the file behind the same URL
    server.files["/images.zip"] = zip_bytes({"images/1.jpg": b"other"})
    with pytest.raises(fetch.ChecksumMismatch, match=r"is declared; refused"):
        fetch.fetch_archive("gqa", url, None, "images", dest, downloads=project / "dl", **FAST)
    assert (dest / "1.jpg").read_bytes() == b"one"


@pytest.mark.parametrize(("members", "root", "error"), [
    ({"train2017/a.jpg": b"a", "../evil": b"x"}, "train2017", r"member '\.\./evil' escapes the extraction root"),
    ({"/abs/evil": b"x"}, "", r"member '/abs/evil' escapes"),
    ({"val2017/a.jpg": b"a"}, "train2017", r"no files under train2017/"),
    ({"a/1.jpg": b"a", "b/2.jpg": b"b"}, "*", r"root '\*' needs one top-level folder"),
])
def test_extraction_guard(tmp_path: Path, members: dict[str, bytes], root: str, error: str) -> None:
    archive = tmp_path / "x.zip"
    archive.write_bytes(zip_bytes(members))
    with pytest.raises(ValueError, match=error):
        fetch.extract(archive, root, tmp_path / "out" / "dest")
    assert not (tmp_path / "out" / "dest").exists() and not list(tmp_path.rglob("evil"))


def test_star_root_takes_the_single_top_folder(tmp_path: Path) -> None:
    archive = tmp_path / "ocr.zip"
    archive.write_bytes(zip_bytes({"ocr_vqa_images/1.jpg": b"a", "ocr_vqa_images/sub/2.jpg": b"b"}))
    assert fetch.extract(archive, "*", tmp_path / "ocr_vqa" / "images") == 2
    assert (tmp_path / "ocr_vqa" / "images" / "sub" / "2.jpg").read_bytes() == b"b"
