"""scripts/mlflow-ui.sh serves a SQLite tracking store: runs logged with the client are listed by the server's REST API
and shown in its runs table, rendered by headless Chromium.

The server needs ~8 s to come up (stack-facts §5), so the end-to-end test is slow and polls /health.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mlflow_browser import free_port, mlflow_server, post_json, rendered_text

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "mlflow-ui.sh"
EXPERIMENT = "jarvis-test"


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


def test_rejects_non_sqlite_uri() -> None:
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:1"}
    res = subprocess.run(["bash", str(SCRIPT), str(free_port())], env=env, capture_output=True, text=True,
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

    port = free_port()
    with mlflow_server(uri, tmp_path / "server.log", port) as (base, pgid):
        experiments = post_json(f"{base}/api/2.0/mlflow/experiments/search", {"max_results": 100})
        exp_ids = [e["experiment_id"] for e in experiments["experiments"] if e["name"] == EXPERIMENT]
        assert len(exp_ids) == 1, experiments
        runs = post_json(f"{base}/api/2.0/mlflow/runs/search", {"experiment_ids": exp_ids, "max_results": 100})
        names = {r["info"]["run_name"] for r in runs["runs"]}
        assert names == expected
        tags = {r["info"]["run_name"]: {t["key"]: t["value"] for t in r["data"]["tags"]} for r in runs["runs"]}
        assert tags["jarvis-s0"]["jarvis.experiment"] == "jarvis"
        assert tags["baseline-s0"]["jarvis.seed"] == "0"

        # ...and the UI itself, rendered by a real browser, lists them in the experiment's runs table.
        page = rendered_text(f"{base}/#/experiments/{exp_ids[0]}/runs", tmp_path / "chrome")
        for name in expected:
            assert name in page, page[:2000]

        banner = (tmp_path / "server.log").read_text()
        assert f"http://127.0.0.1:{port}" in banner and f"ssh -N -L {port}:127.0.0.1:{port}" in banner
        assert f"sqlite:///{db.resolve()}" in banner
        # Artifact root defaults to a folder next to the database.
        assert (db.parent / "artifacts").is_dir()
    # The port is free again.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0


@pytest.mark.slow
def test_a_copied_store_serves_its_artifacts_from_its_new_place(tmp_path: Path) -> None:
    """Issue 10: artifact locations are relative to the store. A store written by jarvis.tracking is copied elsewhere
    and the original deleted; the client lists and reads the artifacts there, and the UI over the copy shows one."""
    import shutil

    import mlflow

    old = tmp_path / "old"
    code = f"""
import mlflow
from pathlib import Path
from jarvis import tracking
root = Path({str(old)!r})
exp_id = tracking.ensure_experiment({EXPERIMENT!r}, root)
mlflow.set_tracking_uri(tracking.tracking_uri(root))
with mlflow.start_run(experiment_id=exp_id, run_name="report") as run:
    mlflow.log_text("stored beside the database", "report/note.txt")
    mlflow.log_table({{"arm": ["llava", "jarvis"], "mmvp": [12.5, 25.0]}}, artifact_file="report/table.json")
print(exp_id, run.info.run_id)
"""
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    res = subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=120, capture_output=True,
                         text=True)
    exp_id, run_id = res.stdout.split()[-2:]
    assert (old / "mlruns" / "artifacts").is_dir()
    new = tmp_path / "elsewhere" / "copy"
    shutil.copytree(old / "mlruns", new)
    shutil.rmtree(old)
    uri = f"sqlite:///{new}/mlflow.db"

    client = mlflow.MlflowClient(uri)
    assert str(old) not in client.get_run(run_id).info.artifact_uri
    assert sorted(f.path for f in client.list_artifacts(run_id, "report")) == ["report/note.txt", "report/table.json"]
    local = client.download_artifacts(run_id, "report/note.txt", str(tmp_path))
    assert Path(local).read_text() == "stored beside the database"

    with mlflow_server(uri, tmp_path / "server.log") as (base, _pgid):
        page = rendered_text(f"{base}/#/experiments/{exp_id}/runs/{run_id}/artifacts/report/note.txt",
                             tmp_path / "chrome")
    assert "table.json" in page and "stored beside the database" in page, page[:3000]
