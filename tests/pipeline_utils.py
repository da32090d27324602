"""Helpers for end-to-end tests: a throwaway git+DVC copy of the project and runner wrappers."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import ROOT, VENV_BIN

GIT_ENV = {"GIT_AUTHOR_NAME": "jarvis-test", "GIT_AUTHOR_EMAIL": "test@localhost",
           "GIT_COMMITTER_NAME": "jarvis-test", "GIT_COMMITTER_EMAIL": "test@localhost"}


def env(project: Path) -> dict[str, str]:
    e = dict(os.environ)
    e.update(GIT_ENV)
    e["PATH"] = f"{VENV_BIN}:{e['PATH']}"
    e["JARVIS_ROOT"] = str(project)
    e.pop("MLFLOW_TRACKING_URI", None)
    e["DVC_NO_ANALYTICS"] = "1"
    e["OMP_NUM_THREADS"] = "1"
    return e


def make_project(dest: Path) -> Path:
    """Copy the tracked + untracked (not ignored) files of this checkout into a fresh git repo at ``dest``."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    outputs = ("data/", "models/", "features/", "runs/", "reports/", "logs/", "mlruns/", "_work/", ".jarvis/")
    for f in files:
        if f.startswith(outputs):  # a developer's own pipeline outputs never leak into the test project
            continue
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)
    run(dest, "git", "init", "-q")
    run(dest, "git", "add", "-A")
    run(dest, "git", "commit", "-qm", "test project")
    return dest


def run(project: Path, *cmd: str, check: bool = True, timeout: int = 1800) -> subprocess.CompletedProcess:
    res = subprocess.run(list(cmd), cwd=project, env=env(project), capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {res.returncode}\n--- stdout\n{res.stdout[-6000:]}"
                             f"\n--- stderr\n{res.stderr[-6000:]}")
    return res


def edit_params(project: Path, edit: Callable[[dict[str, Any]], None], render: bool = True) -> None:
    """Apply ``edit`` to the project's params.yaml; ``render``: then re-render dvc.yaml (what a changed graph needs,
    README "Change one value")."""
    import yaml

    params = project / "params.yaml"
    raw = yaml.safe_load(params.read_text())
    edit(raw)
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    if render:
        run(project, "jarvis", "dag", "render")


def small_world(raw: dict[str, Any], n: int) -> None:
    """A smaller synthetic world (``n`` stage-1 and stage-2 samples, 4 questions per benchmark task) and a 24-step
    stage 0: for tests that check how the stages run and what they record, not what the models learn."""
    raw["datasets"]["synth"].update(n_pretrain=n, n_instruct=n, n_bench_per_task=4, n_general_per_benchmark=4,
                                    max_truncated_fraction=0.5)  # a small sample: the default's 0.25 has little margin
    raw["llms"]["tiny_llama"]["text_pretrain"]["steps"] = 24


def snakemake_dry_jobs(project: Path, *extra: str) -> set[str]:
    """Rule names Snakemake would run (dry run), from its summary output."""
    # targets first: multi-value flags (--quiet takes `all` as a category) swallow what follows (stack-facts §7)
    res = run(project, "snakemake", "all", *extra, "--cores", "2", "-n", "--quiet", "rules")
    jobs = set()
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit() and parts[0] not in ("total", "job", "all"):
            jobs.add(parts[0])
    return jobs


def dvc_stale(project: Path) -> set[str]:
    import json

    res = run(project, "dvc", "status", "--json")
    return set(json.loads(res.stdout or "{}"))
