"""A preempted SLURM training job resumes from its checkpoint and reports the uninterrupted run's numbers.

`snakemake --profile slurm pretrain-<arm>-s0` runs the stage-1 job under slurmd. Once the job has written its first
complete checkpoint, `scontrol requeue <jobid>` takes it off the node. This is what SLURM does to a `--requeue` job
when PreemptMode=REQUEUE preempts it: SIGTERM to every process of the job, SIGKILL after KillWait, then the job goes
back to the queue under the same job id. The test then checks:

- The plugin keeps waiting. A status check answered with PENDING ends in its "still running" branch
  (snakemake_executor_plugin_slurm 2.8.0, `else:  # still running?` in `check_active_jobs`), so the job is never
  reported failed and Snakemake's own `retries` are not needed. The job is released only after the head has run a
  status check while it was PENDING.
- The job ran twice under one job id (`Restarts=1`), and Snakemake submitted it exactly once.
- The first run saved a checkpoint on SIGTERM (jarvis.training.PreemptionCallback). The second run resumed from that
  checkpoint.
- metrics.json, history.jsonl (timings excepted) and the weights equal an uninterrupted local run of the same stage.
  That run uses a copy of the project taken before stage 1, and runs concurrently.

SLURM holds a requeued job back for 120 s (Reason=BeginTime). The test releases it with
`scontrol update StartTime=now`, which only shortens that wait. The upstream stages are built locally, so the only
SLURM job is the one under test.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
import yaml
from safetensors.torch import load_file

from conftest import ROOT
from pipeline_utils import dvc_stale, env, make_project, run
from test_slurm_local import _require_cluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.pipeline]

ARM = "jarvis"
STAGE = f"pretrain-{ARM}-s0"
# Measured, not computed: a resume cannot reproduce these.
TIMING_KEYS = {"samples_per_second", "train_seconds", "wall_time_s", "train_runtime", "train_samples_per_second",
               "train_steps_per_second"}
# A line the plugin logs under --verbose after every status query cycle (its debug output; plugin 2.8.0).
STATUS_CYCLE = "Status query timing (cycle)"
T = TypeVar("T")


def _trimmed_project(dest: Path) -> Path:
    dest.mkdir()
    make_project(dest)
    raw = yaml.safe_load((dest / "params.yaml").read_text())
    raw["run"].update(experiments=[ARM], seeds=[0], benchmarks=["pope"])
    llm = raw["experiments"][ARM]["llm"]
    raw["llms"][llm]["text_pretrain"]["steps"] = 0  # no stage 0 (a scratch LM): its quality is not what this tests
    recipe = raw["training"][raw["experiments"][ARM]["training"]]["pretrain"]
    # 32 steps (~10 s on CPU) leave time to preempt; a checkpoint every 4 steps makes the first one appear early.
    recipe.update(epochs=2, save_steps=4)
    (dest / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    run(dest, "jarvis", "dag", "render")
    return dest


def _state(job: str) -> str:
    out = subprocess.run(["squeue", "--states=all", "-h", "-j", job, "-o", "%T"], capture_output=True, text=True,
                         timeout=30)
    return out.stdout.strip()


def _scontrol(job: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, timeout=30).stdout
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


def _wait(what: str, cond: Callable[[], T], head: subprocess.Popen, log: Path, timeout: float = 180) -> T:
    """Poll ``cond`` until it is truthy; fail naming ``what`` if the head exits first or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        if head.poll() is not None:
            raise AssertionError(f"snakemake exited {head.returncode} while waiting for {what}\n"
                                 f"{log.read_text()[-5000:]}")
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}\n{log.read_text()[-5000:]}")


def _without_timings(d: dict) -> dict:
    return {k: v for k, v in d.items() if k not in TIMING_KEYS}


def test_preempted_training_job_resumes_to_the_same_numbers(tmp_path: Path) -> None:
    _require_cluster()
    t0 = time.perf_counter()
    project = _trimmed_project(tmp_path / "proj")
    run(project, "bash", str(ROOT / "scripts" / "link-profile.sh"))  # `--profile slurm` resolves (make setup)
    # Everything stage 1 needs, locally: the SLURM job under test is then the only job of the SLURM run.
    run(project, "timeout", "-k", "30", "600", "snakemake", STAGE, "--omit-from", STAGE, "--cores", "2", timeout=660)
    ref = tmp_path / "ref"  # the uninterrupted run: same inputs, same mtimes, a fresh MLflow store
    shutil.copytree(project, ref, symlinks=True, ignore=shutil.ignore_patterns("mlruns"))

    head_log, ref_log = tmp_path / "slurm-head.log", tmp_path / "ref.log"
    with head_log.open("w") as out:
        head = subprocess.Popen(
            ["timeout", "-k", "30", "420", "snakemake", "--profile", "slurm", STAGE, "--verbose",
             # the profile polls like a shared cluster wants (40 s, then 30 s); the local test cluster answers at once
             "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2"],
            cwd=project, env=env(project), stdout=out, stderr=subprocess.STDOUT, text=True)
    with ref_log.open("w") as out:
        straight = subprocess.Popen(["timeout", "-k", "30", "420", "snakemake", STAGE, "--cores", "1"],
                                    cwd=ref, env=env(ref), stdout=out, stderr=subprocess.STDOUT, text=True)
    job = None
    try:
        work = project / "_work" / STAGE  # checkpoints in <params digest>/checkpoint-N (jarvis.tracking.plan_run)

        def running_with_checkpoint() -> str | None:
            submitted = re.search(r"SLURM jobid (\d+)", head_log.read_text())
            done = list(work.glob("*/checkpoint-*/jarvis_state.json"))  # the completion marker, written last
            return submitted.group(1) if submitted and done and _state(submitted.group(1)) == "RUNNING" else None

        job = _wait("a running job with a complete checkpoint", running_with_checkpoint, head, head_log)
        subprocess.run(["scontrol", "requeue", job], check=True, timeout=30)
        _wait("the requeued job to be pending", lambda: _state(job) == "PENDING", head, head_log)
        assert _scontrol(job)["Restarts"] == "1"
        first_session = (project / "logs" / f"{STAGE}.log").read_text()  # the rerun truncates the stage log
        # The head must see the requeued job PENDING at least once and keep waiting for it.
        cycles = head_log.read_text().count(STATUS_CYCLE)
        _wait("a status check of the pending job", lambda: head_log.read_text().count(STATUS_CYCLE) > cycles,
              head, head_log, timeout=120)
        assert _state(job) == "PENDING"
        subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True, timeout=30)
        rc = head.wait(timeout=400)
        rc_ref = straight.wait(timeout=400)
    finally:
        for p in (head, straight):
            if p.poll() is None:
                p.terminate()  # timeout(1) forwards it; Snakemake then cancels its SLURM jobs
                p.wait(timeout=60)
        if job and _state(job) in ("PENDING", "RUNNING", "COMPLETING"):
            subprocess.run(["scancel", job], timeout=30)
    wall = time.perf_counter() - t0
    log = head_log.read_text()
    assert rc == 0, log[-6000:]
    assert rc_ref == 0, ref_log.read_text()[-6000:]

    # One submission, two runs: SLURM requeued it, the plugin never failed it, Snakemake's retries stayed unused.
    assert set(re.findall(r"SLURM jobid (\d+)", log)) == {job}, log[-3000:]
    assert "Trying to restart" not in log and "Error in rule" not in log
    info = _scontrol(job)
    assert (info["JobState"], info["Restarts"]) == ("COMPLETED", "1"), info

    # The first run checkpointed on SIGTERM; the second resumed from that checkpoint.
    assert "starting fresh" in first_session and "signal 15 received" in first_session, first_session[-3000:]
    saved = re.search(r"preempted: checkpoint-(\d+) saved", first_session)
    assert saved, first_session[-3000:]
    second_session = (project / "logs" / f"{STAGE}.log").read_text()
    resumed = re.search(rf"resuming from \S*_work/{STAGE}/\w+/checkpoint-(\d+)", second_session)
    assert resumed and resumed.group(1) == saved.group(1), second_session[-3000:]
    steps = int(saved.group(1))

    # The numbers: equal to the uninterrupted run, exactly (timings excepted).
    stage_out = Path("runs") / ARM / "s0" / "pretrain"
    got = json.loads((project / stage_out / "metrics.json").read_text())
    want = json.loads((ref / stage_out / "metrics.json").read_text())
    assert 0 < steps < want["steps"]
    assert _without_timings(got) == _without_timings(want)
    hist = [_without_timings(json.loads(line)) for line in (project / stage_out / "history.jsonl").open()]
    hist_want = [_without_timings(json.loads(line)) for line in (ref / stage_out / "history.jsonl").open()]
    assert hist == hist_want
    weights = load_file(project / stage_out / "model" / "model.safetensors")
    weights_want = load_file(ref / stage_out / "model" / "model.safetensors")
    assert weights.keys() == weights_want.keys()
    assert all(weights[k].equal(weights_want[k]) for k in weights)
    assert STAGE not in dvc_stale(project)  # the head recorded the stage in dvc.lock, as after any run
    print(f"\npreempted at checkpoint-{steps} of {want['steps']}, resumed, same numbers "
          f"(train_loss {got['train_loss']!r}); test wall {wall:.1f} s")
