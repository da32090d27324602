"""`snakemake --profile slurm all`, literally, against the real local SLURM cluster, on a trimmed tiny default.

Every stage is an `sbatch` job under slurmd (GPU stages get a fake GRES device and run on CPU). The profile name
`slurm` resolves through the link `make setup` installs (scripts/link-profile.sh). A hard timeout guards against
a stuck status check (stack-facts §8). The graph is trimmed to JARVIS's chain (one seed, two benchmarks, a smaller
world): every stage kind runs as its own job, both towers' downloads and the two-tower feature cache included; a
baseline's chain would add the same kinds again. test_pipeline.py runs a baseline and JARVIS on both seeds (locally).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import yaml

from conftest import ROOT
from pipeline_utils import dvc_stale, edit_params, make_project, run, small_world
from test_slurm_local import _require_cluster

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.pipeline]


def test_snakemake_profile_slurm_all(tmp_path: Path) -> None:
    _require_cluster()
    project = tmp_path / "proj"
    project.mkdir()
    make_project(project)
    def trim(raw: dict) -> None:
        raw["run"].update(experiments=["jarvis"], seeds=[0], benchmarks=["pope", "mmvp"])
        small_world(raw, 32)  # this checks how the stages run (each its own SLURM job), not what they learn

    edit_params(project, trim)
    # what `make setup` does for this checkout, so that `--profile slurm` resolves (idempotent)
    run(project, "bash", str(ROOT / "scripts" / "link-profile.sh"))
    t0 = time.perf_counter()
    res = run(project, "timeout", "-k", "30", "1800", "snakemake", "--profile", "slurm", "all",
              # the profile polls like a shared cluster wants (30 s); the local test cluster answers at once
              "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2", check=False,
              timeout=1900)
    wall = time.perf_counter() - t0
    assert res.returncode == 0, res.stdout[-5000:] + res.stderr[-5000:]
    log = res.stdout + res.stderr + "".join(f.read_text() for f in (project / ".snakemake" / "log").glob("*.log"))
    # every stage ran as its own SLURM job (the plugin logs "... submitted with SLURM jobid N ...")
    jobs = set(re.findall(r"SLURM jobid (\d+)", log))
    n_stages = len(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])
    assert len(jobs) == n_stages, (len(jobs), n_stages, log[-3000:])
    kinds = {s.split("-")[0] for s in yaml.safe_load((project / "dvc.yaml").read_text())["stages"]}
    assert kinds == {"download", "cache_features", "pretrain", "finetune", "evaluate", "report"}
    scores = json.loads((project / "runs/jarvis/s0/eval/mmvp/scores.json").read_text())
    assert "overall" in scores
    assert (project / "reports/table.md").is_file()
    assert dvc_stale(project) == set()  # Snakemake recorded what it produced in dvc.lock
    print(f"\nsnakemake --profile slurm all: {wall:.1f} s; submitted jobs seen: {len(jobs)}")
