"""scripts/mlflow-ui.sh serves a SQLite tracking store: runs logged with the client are listed by the server's REST API.

The server needs ~8 s to come up (stack-facts §5), so the end-to-end test is slow and polls /health.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "mlflow-ui.sh"
EXPERIMENT = "jarvis-test"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _log_two_runs(tracking_uri: str) -> set[str]:
    """Log two runs in a fresh sqlite store in a child interpreter (keeps mlflow's global state out of pytest)."""
    code = f"""
import mlflow
mlflow.set_tracking_uri({tracking_uri!r})
mlflow.set_experiment({EXPERIMENT!r})
for name, lr in (("baseline-s0", 1e-3), ("jarvis-s0", 2e-3)):
    with mlflow.start_run(run_name=name, tags={{"jarvis.experiment": name.split("-")[0], "jarvis.seed": "0"}}):
        mlflow.log_param("lr", lr)
        mlflow.log_metric("loss", 1.0, step=0)
"""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120)
    return {"baseline-s0", "jarvis-s0"}


def _get(url: str, timeout: float = 5.0) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.status, resp.read().decode()


def _post_json(url: str, payload: dict, timeout: float = 10.0) -> dict:
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        assert resp.status == 200
        return json.loads(resp.read().decode())


def _live_members(pgid: int) -> list[str]:
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


def test_rejects_non_sqlite_uri() -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:1"}
    res = subprocess.run(["bash", str(SCRIPT), str(_free_port())], env=env, capture_output=True, text=True,
                         timeout=30)
    assert res.returncode == 1
    assert "is not a sqlite:/// URI" in res.stderr


def test_rejects_bad_port() -> None:
    res = subprocess.run(["bash", str(SCRIPT), "notaport"], capture_output=True, text=True, timeout=30)
    assert res.returncode == 1 and "PORT must be an integer" in res.stderr


@pytest.mark.slow
def test_ui_lists_logged_runs(tmp_path: Path) -> None:
    db = tmp_path / "store" / "mlflow.db"
    db.parent.mkdir()
    uri = f"sqlite:///{db}"
    expected = _log_two_runs(uri)

    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    out = (tmp_path / "server.log").open("w")
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    # Own session: the script execs mlflow, which spawns uvicorn and a job runner; kill the whole group at the end.
    proc = subprocess.Popen(["bash", str(SCRIPT), str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    pgid = proc.pid
    try:
        deadline = time.monotonic() + 90
        health = None
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"server exited rc={proc.returncode}:\n{(tmp_path / 'server.log').read_text()}"
            try:
                health = _get(f"{base}/health", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.5)
        assert health == (200, "OK"), f"no /health within 90 s:\n{(tmp_path / 'server.log').read_text()}"

        experiments = _post_json(f"{base}/api/2.0/mlflow/experiments/search", {"max_results": 100})
        exp_ids = [e["experiment_id"] for e in experiments["experiments"] if e["name"] == EXPERIMENT]
        assert len(exp_ids) == 1, experiments
        runs = _post_json(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": exp_ids, "max_results": 100})
        names = {r["info"]["run_name"] for r in runs["runs"]}
        assert names == expected
        tags = {r["info"]["run_name"]: {t["key"]: t["value"] for t in r["data"]["tags"]} for r in runs["runs"]}
        assert tags["jarvis-s0"]["jarvis.experiment"] == "jarvis"
        assert tags["baseline-s0"]["jarvis.seed"] == "0"

        banner = (tmp_path / "server.log").read_text()
        assert f"http://127.0.0.1:{port}" in banner and f"ssh -N -L {port}:127.0.0.1:{port}" in banner
        assert f"sqlite:///{db.resolve()}" in banner
        # Artifact root defaults to a folder next to the database.
        assert (db.parent / "artifacts").is_dir()
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
        while _live_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.2)
        leftovers = _live_members(pgid)
        if leftovers:
            os.killpg(pgid, signal.SIGKILL)
        assert not leftovers, f"processes left behind by the MLflow server: {leftovers}"
    # The port is free again.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0
