"""A real HTTP file server on 127.0.0.1 for the URL-archive tests: ``Range`` requests (206 / 416), 404s, and a
knob that cuts the next response to a path after N bytes and drops the connection, like a failing link."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ArchiveServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.cut_after: dict[str, int] = {}  # path -> bytes sent before the next response to it breaks off
        self.fail_with: dict[str, list[int]] = {}  # path -> status codes answered (in order) before serving it
        self.ignore_range: set[str] = set()  # paths served whole (200) even when a Range is asked
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}{path}"


class _Handler(BaseHTTPRequestHandler):
    server: ArchiveServer

    def do_GET(self) -> None:  # noqa: N802 -- the http.server hook name
        rng = self.headers.get("Range")
        self.server.requests.append((self.path, rng))
        data = self.server.files.get(self.path)
        if self.server.fail_with.get(self.path):
            self.send_error(self.server.fail_with[self.path].pop(0))
            return
        if self.path in self.server.ignore_range:
            rng = None
        if data is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        if rng:
            m = re.fullmatch(r"bytes=(\d+)-", rng.strip())
            assert m, f"unexpected Range {rng!r}"
            start = int(m.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        cut = self.server.cut_after.pop(self.path, None)
        self.wfile.write(body if cut is None else body[:cut])
        if cut is not None:
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serve() -> Iterator[ArchiveServer]:
    server = ArchiveServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
