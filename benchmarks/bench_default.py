"""Where the default pipeline's wall time goes: per stage, process start-up against work.

Run: ``python benchmarks/bench_default.py`` (a fresh copy of this checkout, then ``snakemake --cores 2 all``; about
as long as ``make run``) or ``python benchmarks/bench_default.py --project DIR`` to read a finished run in DIR.

Per stage it prints the job's wall time (Snakemake's log, 1 s resolution), the process start-up before the command
runs (interpreter and imports; the ``timing:`` line every pipeline command logs) and the command's own time, and for
training and evaluation the core work inside it (optimizer steps: ``train_seconds`` in metrics.json; answering and
scoring: the benchmarks' ``eval_wall_s``). ``overhead`` is the job's wall time minus that core work.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
TIMING = re.compile(r"timing: \S+ start-up ([\d.na]+) s \(process start to command\), command ([\d.]+) s")


def copy_project(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for f in files:
        src = ROOT / f
        if src.is_file() and not f.startswith(("data/", "models/", "features/", "runs/", "reports/", "logs/")):
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            (dest / f).write_bytes(src.read_bytes())
    subprocess.run(["git", "init", "-q"], cwd=dest, check=True)


def job_walls(project: Path) -> dict[str, float]:
    """Stage id -> seconds between its job's start and finish lines in Snakemake's last log."""
    return {name: (t1 - t0).total_seconds() for name, (t0, t1) in job_times(project).items()}


def job_times(project: Path) -> dict[str, tuple[datetime, datetime]]:
    """Stage id -> (start, finish) of its job in Snakemake's last log that ran jobs."""
    logs = [f.read_text() for f in sorted((project / ".snakemake" / "log").glob("*.snakemake.log"))]
    ran = [t for t in logs if "Finished jobid" in t]  # dry runs (-n) write logs too
    log = ran[-1].splitlines() if ran else []
    started: dict[str, tuple[str, datetime]] = {}  # jobid -> (rule, start)
    times: dict[str, tuple[datetime, datetime]] = {}
    stamp = None
    rule = None
    for line in log:
        m = STAMP.match(line)
        if m:
            stamp = datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            continue
        if line.startswith(("rule ", "localrule ")) and line.endswith(":"):
            rule = line.split(" ", 1)[1][:-1]
        elif line.strip().startswith("jobid:") and rule is not None and stamp is not None:
            started[line.split(":")[1].strip()] = (rule, stamp)
            rule = None
        elif line.startswith("Finished jobid:") and stamp is not None:
            jobid = line.split(":")[1].split("(")[0].strip()
            if jobid in started:
                name, t0 = started.pop(jobid)
                times[name] = (t0, stamp)
    return times


def core_work(project: Path, stage: dict) -> float | None:
    """Seconds of the stage's real work, from the files it wrote (training steps, answering), where it says."""
    metrics = [next(iter(m)) if isinstance(m, dict) else m for m in stage.get("metrics", [])]
    outs = [next(iter(o)) if isinstance(o, dict) else o for o in stage.get("outs", [])]
    for m in [*metrics, *(o for o in outs if o.endswith("metrics.json"))]:
        if not (project / m).is_file():  # the stage has not run (yet)
            return None
        data = json.loads((project / m).read_text())
        if "train_seconds" in data:
            return float(data["train_seconds"])
    walls = [json.loads((project / o).read_text()).get("eval_wall_s") for o in outs
             if o.endswith("scores.json") and (project / o).is_file()]
    walls = [w for w in walls if isinstance(w, (int, float))]
    return float(sum(walls)) if walls else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--project", type=Path, help="a finished run to read (default: run a fresh copy)")
    args = ap.parse_args()
    total = None
    if args.project is None:
        project = Path(tempfile.mkdtemp(prefix="jarvis-bench-")) / "proj"
        project.mkdir()
        copy_project(project)
        t0 = time.perf_counter()
        # as `make run`: the venv first on PATH, DeepSpeed's CPU op where `make setup` compiled it
        env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
        env.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
        subprocess.run(["snakemake", "--cores", "2", "all"], cwd=project, check=True, capture_output=True, env=env)
        total = time.perf_counter() - t0
    else:
        project = args.project
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    walls = job_walls(project)
    rows = []
    for sid, stage in stages.items():
        text = (project / "logs" / f"{sid}.log").read_text() if (project / "logs" / f"{sid}.log").is_file() else ""
        m = TIMING.search(text)
        startup, command = (float(m.group(1)), float(m.group(2))) if m else (float("nan"), float("nan"))
        rows.append((sid, walls.get(sid, float("nan")), startup, command, core_work(project, stage)))
    print(f"{'stage':44} {'job s':>7} {'start-up s':>10} {'command s':>9} {'core work s':>11} {'overhead s':>10}")
    for sid, wall, startup, command, core in rows:
        over = wall - core if core is not None else float("nan")
        core_text = f"{core:11.1f}" if core is not None else f"{'-':>11}"
        print(f"{sid:44} {wall:7.0f} {startup:10.1f} {command:9.1f} {core_text} {over:10.1f}")
    known = [r for r in rows if r[1] == r[1]]
    print(f"\nstages: {len(rows)}; sum of job wall times {sum(r[1] for r in known):.0f} s; "
          f"sum of start-ups {sum(r[2] for r in rows if r[2] == r[2]):.0f} s; "
          f"sum of core work {sum(r[4] for r in rows if r[4] is not None):.0f} s")
    times = job_times(project)
    span = (max(t1 for _, t1 in times.values()) - min(t0 for t0, _ in times.values())).total_seconds() if times else 0
    print(f"first job start to last job end: {span:.0f} s")
    if total is not None:
        print(f"snakemake --cores 2 all: {total:.0f} s wall ({project}); outside the jobs (start-up, DAG, onstart's "
              f"MLflow store, onsuccess's dvc commit): {total - span:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
