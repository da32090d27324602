"""A real MLflow server (scripts/mlflow-ui.sh) and a real headless Chromium, for tests of what the UI shows.

The MLflow UI is a React app: the page's text exists only after its JavaScript ran and fetched the runs, so the
browser renders it (``--dump-dom`` after a virtual-time budget) and the test reads the rendered DOM's text. The
window is large because the compare view's tables are virtualised: columns outside the window are not rendered.
"""

from __future__ import annotations

import contextlib
import html
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "mlflow-ui.sh"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, resp.read().decode()


def post_json(url: str, payload: dict, timeout: float = 10.0) -> dict:
    import json

    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        assert resp.status == 200
        return json.loads(resp.read().decode())


def live_members(pgid: int) -> list[str]:
    """Processes in process group `pgid` that are not zombies (PID 1 here does not reap orphans)."""
    live = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state, ppid, pgrp, ...
        rest = text.rsplit(")", 1)[1].split()
        if int(rest[2]) == pgid and rest[0] != "Z":
            live.append(text.split(" ", 1)[0] + " " + text[text.index("(") : text.rindex(")") + 1])
    return live


@contextlib.contextmanager
def mlflow_server(tracking_uri: str, log: Path, port: int | None = None) -> Iterator[tuple[str, int]]:
    """``scripts/mlflow-ui.sh`` over ``tracking_uri``; yields (base URL, process group). The whole group is stopped
    at the end and the test fails if anything of it survives."""
    port = port or free_port()
    base = f"http://127.0.0.1:{port}"
    out = log.open("w")
    env = {**os.environ, "MLFLOW_TRACKING_URI": tracking_uri}
    # Own session: the script execs mlflow, which spawns uvicorn and a job runner; kill the whole group at the end.
    proc = subprocess.Popen(["bash", str(SCRIPT), str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    pgid = proc.pid
    try:
        deadline = time.monotonic() + 120
        health = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"server exited rc={proc.returncode}:\n{log.read_text()}"
            try:
                health = get(f"{base}/health", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        assert health == (200, "OK"), f"no /health within 120 s:\n{log.read_text()}"
        yield base, pgid
    finally:
        if proc.poll() is None:
            os.killpg(pgid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(pgid, signal.SIGKILL)
            proc.wait(timeout=10)
        out.close()
        deadline = time.monotonic() + 15
        while live_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        leftovers = live_members(pgid)
        if leftovers:
            os.killpg(pgid, signal.SIGKILL)
        assert not leftovers, f"processes left behind by the MLflow server: {leftovers}"


def chromium() -> str:
    """Debian's chromium (.ci/run installs it). Missing: skip, unless JARVIS_REQUIRE_BROWSER=1 (CI), then fail."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        reason = "chromium not found (apt-get install chromium)"
        if os.environ.get("JARVIS_REQUIRE_BROWSER") == "1":
            pytest.fail(f"JARVIS_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    return found


def rendered_text(url: str, profile_dir: Path, budget_ms: int = 30000, height: int = 1600) -> str:
    """The visible text of ``url`` after headless Chromium ran its JavaScript (scripts and styles removed).
    ``height``: the window's, in pixels; virtualised tables render only the rows inside it."""
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           f"--user-data-dir={profile_dir}", f"--window-size=1920,{height}", f"--virtual-time-budget={budget_ms}",
           "--dump-dom", url]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0 and res.stdout, res.stderr[-3000:]
    dom = re.sub(r"<script.*?</script>|<style.*?</style>", " ", res.stdout, flags=re.S)
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", dom)))


def rendered_until(url: str, profile_dir: Path, ok: Callable[[str], bool], tries: int = 3, **kw: int) -> str:
    """:func:`rendered_text` again (fresh profile) until ``ok(page)``: the chart view draws its charts only once the
    metric histories arrived, which on a loaded 2-core machine can fall outside one virtual-time budget."""
    page = ""
    for i in range(tries):
        page = rendered_text(url, profile_dir / f"try{i}", **kw)
        if ok(page):
            break
    return page


def shown(value: float) -> str:
    """A metric as the MLflow UI prints it: rounded half up to 2 decimals, no trailing zeros (41.25, 55.5, 61.13)."""
    from decimal import ROUND_HALF_UP, Decimal

    text = str(Decimal(repr(value)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP))
    return text.rstrip("0").rstrip(".") if "." in text else text
