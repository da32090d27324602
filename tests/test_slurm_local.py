"""The SLURM profile against a real single-node cluster (scripts/slurm-local.sh), plus profile checks without one.

The cluster tests run tests/fixtures/slurm_smoke through `snakemake --profile workflow/profiles/slurm`: every job is
a real `sbatch` under slurmd, and the GPU rule gets a fake GRES device (shared/docs/local-slurm.md §3, §7).

Without `sinfo` the cluster tests skip, unless JARVIS_REQUIRE_SLURM=1 (CI starts the cluster, so there a missing
cluster is a failure, never a silent skip). With `sinfo` present but the cluster down they fail.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PROFILE = REPO / "workflow" / "profiles" / "slurm"
LOCAL_PROFILE = REPO / "workflow" / "profiles" / "local"
SMOKE = REPO / "tests" / "fixtures" / "slurm_smoke" / "Snakefile"
SNAKEMAKE = Path(sys.executable).with_name("snakemake")
# The executor plugin can hang forever when status queries fail (stack-facts §8): always run under timeout(1).
TIMEOUT = ["timeout", "-k", "30", "300"]


def _snakemake(workdir: Path, *args: str, profile: Path = PROFILE, env: dict[str, str] | None = None,
               timeout_cmd: bool = True) -> subprocess.CompletedProcess[str]:
    """Run Snakemake on the smoke workflow; `--workflow-profile none` so no repo-level default profile leaks in."""
    cmd = [str(SNAKEMAKE), "--profile", str(profile), "--workflow-profile", "none",
           "--snakefile", str(SMOKE), "--directory", str(workdir), *args]
    if profile == PROFILE:  # the profile polls like a shared cluster wants (30 s); the local cluster answers at once
        cmd += ["--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2"]
    if timeout_cmd:
        cmd = TIMEOUT + cmd
    return subprocess.run(cmd, cwd=workdir, env=env if env is not None else os.environ.copy(),
                          capture_output=True, text=True, timeout=360)


def _resources_by_rule(dry_run_output: str) -> dict[str, str]:
    """Map rule name -> the 'resources:' line Snakemake prints for it in a dry run."""
    found: dict[str, str] = {}
    rule = None
    for line in dry_run_output.splitlines():
        m = re.match(r"^(?:local)?rule (\w+):", line.strip())
        if m:
            rule = m.group(1)
        elif rule and line.strip().startswith("resources:"):
            found[rule] = line.strip()
    return found


def _require_cluster() -> None:
    """Skip only when SLURM is not installed (and JARVIS_REQUIRE_SLURM is not set); fail when it is down."""
    if shutil.which("sinfo") is None:
        reason = "sinfo not found: SLURM is not installed (run `scripts/slurm-local.sh start` as root)"
        if os.environ.get("JARVIS_REQUIRE_SLURM") == "1":
            pytest.fail(f"JARVIS_REQUIRE_SLURM=1 but {reason}")
        pytest.skip(reason)
    probe = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=30)
    states = probe.stdout.split()
    if probe.returncode != 0 or not any(s in ("idle", "mix", "alloc") for s in states):
        pytest.fail(
            f"SLURM is installed but no node accepts jobs (sinfo rc={probe.returncode}, states={states}, "
            f"stderr={probe.stderr.strip()!r}); start it with `scripts/slurm-local.sh start`"
        )


def _job_state(job_id: str) -> str:
    """Final state of a job as squeue reports it (MinJobAge=3600 keeps finished jobs visible)."""
    out = subprocess.run(["squeue", "--states=all", "-h", "-j", job_id, "-o", "%T"],
                         capture_output=True, text=True, timeout=30)
    return out.stdout.strip()


def _kv_file(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


# ----------------------------------------------------------------------------------------------------------------
# Without a cluster: how the profile's expressions evaluate (a dry run submits nothing).
# ----------------------------------------------------------------------------------------------------------------

def test_profile_default_resources_come_from_env(tmp_path: Path) -> None:
    env = os.environ.copy()
    env.update(JARVIS_SLURM_PARTITION="gpu-a100", JARVIS_SLURM_ACCOUNT="proj42")
    res = _snakemake(tmp_path, "--dry-run", env=env, timeout_cmd=False)
    assert res.returncode == 0, res.stdout + res.stderr
    resources = _resources_by_rule(res.stdout + res.stderr)
    assert set(resources) == {"prepare", "gpu_check", "all"}, resources
    for rule, line in resources.items():
        assert "slurm_partition=gpu-a100," in line, (rule, line)
        assert "slurm_account=proj42," in line, (rule, line)
        assert "tasks_per_gpu=0" in line, (rule, line)
    # Rule-level values win over the profile defaults; untouched rules get the defaults.
    assert "runtime=5," in resources["gpu_check"] and "gpu=1" in resources["gpu_check"]
    assert "runtime=60," in resources["all"] and "mem_mb=4000," in resources["all"]


def test_profile_unset_env_means_cluster_defaults(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("JARVIS_SLURM_PARTITION", "JARVIS_SLURM_ACCOUNT")}
    res = _snakemake(tmp_path, "--dry-run", env=env, timeout_cmd=False)
    assert res.returncode == 0, res.stdout + res.stderr
    for rule, line in _resources_by_rule(res.stdout + res.stderr).items():
        # Empty -> the plugin picks the default partition from sinfo and submits without -A.
        assert "slurm_partition=," in line and "slurm_account=," in line, (rule, line)


def test_local_profile_runs_the_toy_workflow(tmp_path: Path) -> None:
    # The toy rules assert SLURM's variables; locally we provide them, so this checks the local profile alone.
    env = os.environ.copy()
    env.update(SLURM_JOB_ID="1", SLURM_CPUS_PER_TASK="2", CUDA_VISIBLE_DEVICES="0")
    res = _snakemake(tmp_path, profile=LOCAL_PROFILE, env=env)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-6000:]
    assert "Provided cores: 2" in log, log[-6000:]
    assert "executor slurm" not in log.lower() and "sbatch" not in log
    assert _kv_file(tmp_path / "results" / "gpu.txt")["CUDA_VISIBLE_DEVICES"] == "0"


def test_link_profile_makes_bare_name_resolve(tmp_path: Path) -> None:
    link_script = REPO / "scripts" / "link-profile.sh"
    env = {**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "xdg")}
    env.pop("FORCE", None)
    link = tmp_path / "xdg" / "snakemake" / "slurm"

    def link_profile(*names: str, force: bool = False) -> subprocess.CompletedProcess[str]:
        run_env = {**env, "FORCE": "1"} if force else env
        return subprocess.run(["bash", str(link_script), *names], env=run_env, capture_output=True, text=True,
                              timeout=30)

    first, second = link_profile(), link_profile()
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert "already linked" in second.stdout
    assert link.is_symlink() and link.resolve() == PROFILE.resolve()

    # `--profile slurm` (a bare name) now resolves from a directory that has no ./slurm.
    workdir = tmp_path / "work"
    workdir.mkdir()
    res = subprocess.run([str(SNAKEMAKE), "--profile", "slurm", "--workflow-profile", "none", "--snakefile",
                          str(SMOKE), "--directory", str(workdir), "--dry-run"],
                         cwd=workdir, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "Using profile slurm" in res.stdout + res.stderr

    # A different existing profile is not clobbered without FORCE=1.
    other = tmp_path / "xdg" / "snakemake" / "local"
    other.mkdir()
    (other / "config.yaml").write_text("cores: 1\n")
    refused = link_profile("local")
    assert refused.returncode == 1 and "FORCE=1" in refused.stderr
    assert (other / "config.yaml").read_text() == "cores: 1\n"
    forced = link_profile("local", force=True)
    assert forced.returncode == 0, forced.stderr
    assert other.is_symlink() and other.resolve() == LOCAL_PROFILE.resolve()


# ----------------------------------------------------------------------------------------------------------------
# With the local cluster.
# ----------------------------------------------------------------------------------------------------------------

@pytest.mark.slurm
@pytest.mark.slow
def test_toy_workflow_runs_on_slurm_with_gpu(tmp_path: Path) -> None:
    _require_cluster()
    res = _snakemake(tmp_path)
    log = res.stdout + res.stderr
    assert res.returncode == 0, f"snakemake rc={res.returncode}\n{log[-6000:]}"

    prepare = _kv_file(tmp_path / "results" / "prepare.txt")
    gpu = _kv_file(tmp_path / "results" / "gpu.txt")
    # Both jobs ran under SLURM, as two different jobs, and SLURM saw them complete.
    assert prepare["SLURM_JOB_ID"].isdigit() and gpu["SLURM_JOB_ID"].isdigit()
    assert prepare["SLURM_JOB_ID"] != gpu["SLURM_JOB_ID"]
    assert _job_state(prepare["SLURM_JOB_ID"]) == "COMPLETED"
    assert _job_state(gpu["SLURM_JOB_ID"]) == "COMPLETED"
    # threads: 2 became --cpus-per-task=2 through the profile's `cpus_per_task: threads`.
    assert prepare["SLURM_CPUS_PER_TASK"] == "2"
    # gpu=1 got one of the node's two fake GPUs.
    assert gpu["CUDA_VISIBLE_DEVICES"] in {"0", "1"}
    # Fast status checks: the "squeue" status command was used, never sacct (no accounting here).
    assert "Falling back to 'sacct'" not in log


@pytest.mark.slurm
@pytest.mark.slow
def test_failing_job_fails_the_run(tmp_path: Path) -> None:
    _require_cluster()
    res = _snakemake(tmp_path, "results/never.txt")
    log = res.stdout + res.stderr
    # rc 1 from Snakemake, not 124/137 from timeout(1): the FAILED state was detected, not waited out.
    assert res.returncode == 1, f"snakemake rc={res.returncode}\n{log[-6000:]}"
    assert "SLURM status is: 'FAILED'" in log, log[-6000:]
    assert not (tmp_path / "results" / "never.txt").exists()
