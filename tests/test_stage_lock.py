"""The stage lock (issue 9): a second process on the same stage output refuses to start; stale locks are taken over."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import ROOT
from jarvis.io import LockHeld, exclusive_lock


def _other_process(code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "JARVIS_ROOT": str(cwd)}
    env.pop("RANK", None)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_second_process_is_refused_and_the_lock_is_released(tmp_path: Path) -> None:
    lock = tmp_path / "pretrain.lock"
    with exclusive_lock(lock, "stage e/pretrain"):
        holder = json.loads(lock.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        other = _other_process(f"from jarvis.io import exclusive_lock\nwith exclusive_lock({str(lock)!r}): pass",
                               tmp_path)
        assert other.returncode != 0
        assert "LockHeld" in other.stderr and f"pid {os.getpid()} on {socket.gethostname()}" in other.stderr
        with pytest.raises(LockHeld, match="refusing to run a second process"):
            with exclusive_lock(lock):
                pass
    assert not lock.exists()
    with exclusive_lock(lock):  # free again
        assert lock.exists()


def test_stale_locks_are_taken_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lock = tmp_path / "x.lock"
    # The holder died on this host (SIGKILL leaves the file behind).
    lock.write_text(json.dumps({"pid": _dead_pid(), "host": socket.gethostname(), "started": time.time()}))
    with caplog.at_level("WARNING", logger="jarvis.io"), exclusive_lock(lock):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert "taking over stale lock" in caplog.text and "is gone" in caplog.text
    # Another host: alive while it refreshes the file, stale once the heartbeat stops.
    lock.write_text(json.dumps({"pid": 1, "host": "node-elsewhere", "started": time.time()}))
    with pytest.raises(LockHeld, match="node-elsewhere"):
        with exclusive_lock(lock, stale_after_s=60):
            pass
    old = time.time() - 120
    os.utime(lock, (old, old))
    with exclusive_lock(lock, stale_after_s=60):
        assert json.loads(lock.read_text())["host"] == socket.gethostname()


def test_heartbeat_keeps_a_long_holder_fresh(tmp_path: Path) -> None:
    lock = tmp_path / "x.lock"
    with exclusive_lock(lock, heartbeat_s=0.05):
        old = time.time() - 1000
        os.utime(lock, (old, old))
        deadline = time.monotonic() + 10
        while lock.stat().st_mtime < time.time() - 100 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert lock.stat().st_mtime > time.time() - 100  # refreshed by the holder's heartbeat thread


def test_stage_run_refuses_a_second_process_before_touching_mlflow(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: two identical `jarvis pretrain` in one directory both ran, into one MLflow run (32 points, 16 steps).
    from jarvis.config import load_params, load_raw
    from jarvis.plan import Resolver
    from jarvis.tracking import plan_run

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JARVIS_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("JARVIS_SCRATCH", raising=False)
    plan = Resolver(load_params(ROOT / "params.yaml"), load_raw(ROOT / "params.yaml")).train("pretrain", "jarvis", 0)
    lock = tmp_path / "_work" / f"{plan.id}.lock"
    with plan_run(plan) as (run, work):
        other = _other_process(f"""
            from jarvis.config import load_params, load_raw
            from jarvis.plan import Resolver
            from jarvis.tracking import plan_run
            plan = Resolver(load_params({str(ROOT / "params.yaml")!r}), load_raw({str(ROOT / "params.yaml")!r})).train(
                "pretrain", "jarvis", 0)
            with plan_run(plan):
                print("SECOND RAN")
        """, tmp_path)
        assert other.returncode != 0 and "SECOND RAN" not in other.stdout
        assert "LockHeld" in other.stderr and f"stage {plan.id}" in other.stderr
        assert lock.is_file()
    assert not lock.exists()


def test_cli_refuses_a_locked_stage_with_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: the refusal was a LockHeld traceback at the command line.
    from conftest import bin_path
    from pipeline_utils import run

    monkeypatch.delenv("JARVIS_SCRATCH", raising=False)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    with exclusive_lock(tmp_path / "_work" / "download-tower-tiny_clip.lock", "stage download-tower-tiny_clip"):
        res = run(tmp_path, bin_path("jarvis"), "download", "--tower", "tiny_clip", check=False)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "refusing to run a second process" in errors[0], res.stderr
    assert f"pid {os.getpid()}" in errors[0]
    assert not (tmp_path / "models").exists() and not (tmp_path / "mlruns").exists()
