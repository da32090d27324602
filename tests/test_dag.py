"""One DAG, two runners: dvc.yaml is fresh and Snakemake builds the same stages, deps, outs and params."""

from __future__ import annotations

import json
import re
import subprocess

import pytest
import yaml

from conftest import bin_path
from jarvis.config import load_raw, lookup
from jarvis.dag import build_stages, params_file, priorities, render_dvc, snakemake_inputs


def _stages(root, raw=None):
    raw = raw if raw is not None else load_raw(root / "params.yaml")
    from jarvis.config import validate_params

    return build_stages(validate_params(raw), raw)


def test_dvc_yaml_is_fresh(root):
    """dvc.yaml is generated: a stale file (params.yaml or dag.py changed without `jarvis dag render`) fails CI."""
    assert (root / "dvc.yaml").read_text() == render_dvc(_stages(root)), "run `jarvis dag render`"


def test_stage_ids_and_params_are_well_formed(root):
    raw = load_raw(root / "params.yaml")
    stages = _stages(root)
    ids = [s.id for s in stages]
    assert len(ids) == len(set(ids))
    outs = {o for s in stages for o in (*s.outs, *s.metrics)}
    for s in stages:
        assert "@" not in s.id and s.id.replace("-", "").replace("_", "").isalnum()
        for key in s.params:
            lookup(raw, key)  # every declared param exists
        for dep in s.deps:  # every dep is a code file or an upstream output
            assert (dep.startswith(("src/", "workflow/")) and (root / dep).is_file()) or dep in outs, (s.id, dep)


def _snakemake_graph(root) -> dict:
    """Rules, inputs, outputs and params as Snakemake itself parses them (its Python API, dry run)."""
    code = r"""
import json, sys
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ResourceSettings, ConfigSettings, DAGSettings, OutputSettings
with SnakemakeApi(OutputSettings(quiet=True)) as api:
    wf = api.workflow(resource_settings=ResourceSettings(cores=1), snakefile=__import__("pathlib").Path("Snakefile"))
    w = wf._workflow
    out = {}
    for r in w.rules:
        out[r.name] = {"input": sorted(str(f) for f in r.input), "output": sorted(str(f) for f in r.output),
                       "retries": r._restart_times}  # the rule's own value (restart_times needs a run)
    print(json.dumps(out))
"""
    res = subprocess.run([bin_path("python"), "-c", code], cwd=root, capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def test_snakemake_and_dvc_describe_the_same_graph(root):
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    smk = _snakemake_graph(root)
    assert set(smk) - {"all"} == set(dvc)
    stages = {s.id: s for s in _stages(root)}
    raw = load_raw(root / "params.yaml")
    for sid, entry in dvc.items():
        metrics = [next(iter(m)) for m in entry.get("metrics", [])]
        outs = [o if isinstance(o, str) else next(iter(o)) for o in entry["outs"]]
        assert smk[sid]["output"] == sorted(outs + metrics), sid
        expected_inputs = sorted([*snakemake_inputs(stages[sid]), params_file(stages[sid])])
        assert smk[sid]["input"] == expected_inputs, sid
        # a preempted training job is resubmitted (and resumes its checkpoint); nothing else retries
        assert smk[sid]["retries"] == (2 if stages[sid].kind in ("pretrain", "finetune") else 0), sid
        # Snakemake's params input holds exactly the values DVC tracks for the stage
        assert json.loads((root / params_file(stages[sid])).read_text()) == {k: lookup(raw, k) for k in entry["params"]}


@pytest.mark.slow
def test_snakemake_lint_is_clean(root):
    """Clean but for one lint we decline on purpose: no per-rule conda/container (README, "Conda": one environment,
    the one Snakemake runs in; per-rule environments were never tested here, so none ship)."""
    res = subprocess.run([bin_path("snakemake"), "--lint"], cwd=root, capture_output=True, text=True)
    text = res.stdout + res.stderr
    lints = {line.strip() for line in text.splitlines() if line.startswith("    * ")}
    assert lints <= {"* Specify a conda environment or container for each rule.:"}, text[-5000:]
    assert "Lints for snakefile" not in text, text[-5000:]


def test_paper_configuration_requests_real_cluster_resources(root):
    """Switching run.experiments to the paper rows gives multi-node GPU jobs (srun + one torchrun per node)."""
    raw = load_raw(root / "params.yaml")
    raw["run"]["experiments"] = ["llava_vicuna7b", "jarvis_vicuna7b"]
    from jarvis.dag import launcher, slurm_resources

    stages = {s.id: s for s in _stages(root, raw)}
    pre = slurm_resources(stages["pretrain-jarvis_vicuna7b-s0"])
    assert pre == {"runtime": 210, "mem_mb": 256000, "cpus_per_task": 32, "tasks_per_gpu": 0, "gres": "gpu:4",
                   "nodes": 2, "tasks": 2, "mpi": "srun"}
    assert slurm_resources(stages["finetune-jarvis_vicuna7b-s0"])["nodes"] == 4
    assert launcher(stages["pretrain-jarvis_vicuna7b-s0"]).startswith("srun --ntasks-per-node=1")
    ev = slurm_resources(stages["evaluate-jarvis_vicuna7b-s0"])
    assert ev["gpu"] == 1 and "nodes" not in ev and launcher(stages["evaluate-jarvis_vicuna7b-s0"]) == ""
    # minutes per benchmark, one job for them all, twice with evaluation.blind
    assert ev["runtime"] == 90 * len(raw["run"]["benchmarks"]) * (2 if raw["evaluation"]["blind"] else 1)
    # the paper rows share the CLIP feature cache between the LLaVA and JARVIS arms only when towers match
    assert "cache_features-llava15-clip_l336" in stages and "cache_features-llava15-clip_l336-dinov2_l" in stages


def test_bare_snakemake_and_its_graph_views_cover_every_stage(root):
    """`snakemake` with no target runs `all` (rule all sits in the Snakefile itself: an include resets the default
    target), and `--dag` / `--rulegraph` draw every stage of dvc.yaml."""
    ids = set(yaml.safe_load((root / "dvc.yaml").read_text())["stages"])
    env = {**__import__("os").environ, "PATH": f"{bin_path('python').rsplit('/', 1)[0]}:{__import__('os').environ['PATH']}"}
    # -F: every job, as on a fresh clone (this checkout may hold a finished run)
    dry = subprocess.run([bin_path("snakemake"), "-n", "-F", "--quiet", "rules"], cwd=root, env=env,
                         capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    counts = dict(line.split() for line in dry.stdout.splitlines() if len(line.split()) == 2
                  and line.split()[1].isdigit())
    assert set(counts) - {"total", "all"} == ids
    for view in ("--dag", "--rulegraph"):
        res = subprocess.run([bin_path("snakemake"), view], cwd=root, env=env, capture_output=True, text=True)
        assert res.returncode == 0, res.stderr
        labels = set(re.findall(r'label = "([^"]+)"', res.stdout))
        assert labels - {"all"} == ids, view


def test_slurm_profile_polls_like_a_shared_cluster_wants(root):
    """The SLURM profile checks status no more often than every 30 s and requeues preempted jobs (CI's local cluster
    passes faster intervals on the command line)."""
    profile = yaml.safe_load((root / "workflow/profiles/slurm/config.yaml").read_text())
    assert profile["seconds-between-status-checks"] >= 30
    assert profile["slurm-init-seconds-before-status-checks"] >= 30
    assert profile["slurm-requeue"] is True and profile["slurm-status-command"] == "squeue"
    local = yaml.safe_load((root / "workflow/profiles/local/config.yaml").read_text())
    assert local["cores"] == 2 and "executor" not in local


@pytest.mark.slow
def test_stale_dvc_yaml_is_refused_by_both_tools_naming_the_fix(tmp_path):
    """params.yaml now describes another graph (a seed added) but dvc.yaml was not re-rendered: `snakemake` fails at
    DAG load and a stage started by `dvc repro` fails before any work, both naming `jarvis dag render`."""
    from pipeline_utils import make_project, run

    project = tmp_path / "proj"
    project.mkdir()
    make_project(project)
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["run"]["seeds"] = [*raw["run"]["seeds"], 7]
    (project / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    smk = run(project, "snakemake", "-n", check=False)
    assert smk.returncode != 0 and "run `jarvis dag render`" in smk.stdout + smk.stderr, smk.stderr[-2000:]
    dvc = run(project, "dvc", "repro", "download-llm-tiny_llama", check=False)
    assert dvc.returncode != 0 and "run `jarvis dag render`" in dvc.stdout + dvc.stderr, dvc.stderr[-2000:]
    assert not (project / "models").exists()  # refused before the stage did anything
    run(project, "jarvis", "dag", "render")
    assert run(project, "snakemake", "-n", "--quiet", "rules").returncode == 0


def test_priority_counts_the_stages_downstream(root):
    """Snakemake's `priority:` per stage (jarvis.dag.priorities), by hand on the default graph: three arms x two seeds
    x (pretrain, finetune, evaluate) and the report below the LM, one cache and the towers."""
    stages = _stages(root)
    prio = priorities(stages)
    assert set(prio) == {s.id for s in stages}
    trainings = 3 * 2 * 3
    assert prio["download-data-synth"] == 1 + 2 + trainings + 1  # the LM's stage 0, both caches, all training, report
    assert prio["download-tower-tiny_clip"] == 2 + trainings + 1
    assert prio["download-llm-tiny_llama"] == trainings + 1
    assert prio["download-tower-tiny_dinov2"] == 1 + 2 * 3 + 1  # JARVIS's cache, its two seeds' chains, report
    assert prio["pretrain-jarvis-s0"] == 3 and prio["evaluate-jarvis-s0"] == 1 and prio["report"] == 0
    # the data first among the jobs ready at the start: it unblocks the LM's stage 0, the longest download
    assert prio["download-data-synth"] > prio["download-tower-tiny_clip"] > prio["download-tower-tiny_dinov2"]
    producer = {o: s.id for s in stages for o in (*s.outs, *s.metrics)}
    for s in stages:  # strictly above every consumer
        assert all(prio[producer[i]] > prio[s.id] for i in s.inputs if i in producer), s.id
