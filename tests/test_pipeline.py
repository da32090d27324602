"""End to end on the tiny default: `snakemake all`, then DVC and Snakemake agree, a one-param edit reruns exactly
the affected stages in both tools, DVC remotes round-trip, and MLflow holds every run.

One project copy is shared by the tests of this module, in order (each leaves it consistent for the next).
"""

from __future__ import annotations

import csv
import json
import re
import shutil
import time
from pathlib import Path

import pytest
import yaml

from pipeline_utils import dvc_stale, make_project, run, snakemake_dry_jobs

pytestmark = [pytest.mark.slow, pytest.mark.pipeline]

EXPERIMENTS = ("llava", "llava_bidir", "jarvis")
SEEDS = (0, 1)
TIMINGS: dict[str, float] = {}


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("pipeline") / "proj"
    p.mkdir()
    make_project(p)
    t0 = time.perf_counter()
    run(p, "snakemake", "--cores", "2", "all")
    TIMINGS["snakemake_all_s"] = time.perf_counter() - t0
    print(f"\nsnakemake --cores 2 all: {TIMINGS['snakemake_all_s']:.1f} s")
    return p


def _benchmarks(project: Path) -> list[str]:
    return yaml.safe_load((project / "params.yaml").read_text())["run"]["benchmarks"]


def test_all_outputs_exist_and_report_matches_scores(project: Path) -> None:
    benches = _benchmarks(project)
    for exp in EXPERIMENTS:
        for seed in SEEDS:
            for stage in ("pretrain", "finetune"):
                model = project / "runs" / exp / f"s{seed}" / stage / "model"
                # only the model's own files: weights, config, processor, generation config, card (no stray markers)
                assert sorted(p.name for p in model.iterdir()) == [
                    "README.md", "chat_template.jinja", "config.json", "generation_config.json", "model.safetensors",
                    "processor_config.json", "tokenizer.json", "tokenizer_config.json"], exp
            for b in benches:
                assert (project / "runs" / exp / f"s{seed}" / "eval" / b / "answers.jsonl").is_file()
    for root in ("data", "models", "features", "runs"):
        assert not list((project / root).glob("**/.snakemake_timestamp")), root
    jarvis = json.loads((project / "runs/jarvis/s0/pretrain/metrics.json").read_text())
    llava = json.loads((project / "runs/llava/s0/pretrain/metrics.json").read_text())
    assert jarvis["loss_jepa"] < 0 and 0 < jarvis["jepa_fraction"] <= 1  # negative cosine, skip_prob 0.2
    assert llava["loss_jepa"] is None and llava["jepa_fraction"] == 0
    other = json.loads((project / "runs/jarvis/s1/pretrain/metrics.json").read_text())
    assert other["loss"] != jarvis["loss"]  # two seeds, two runs
    # Drop and truncation counts reach metrics.json (issue 9): the tiny finetune (max_length 256) truncates answers.
    fine = json.loads((project / "runs/jarvis/s0/finetune/metrics.json").read_text())
    assert jarvis["data/validation/dropped"] == 0 and jarvis["data/truncation/supervised_tokens_lost"] == 0
    assert fine["data/truncation/samples"] > 0 and 0 < fine["data/truncation/fraction"] <= 0.25
    with (project / "reports/table.csv").open() as fh:
        rows = {r["row"]: r for r in csv.DictReader(fh)}
    assert set(rows) == set(EXPERIMENTS)
    for exp in EXPERIMENTS:
        for b in benches:
            overall = [json.loads((project / "runs" / exp / f"s{s}" / "eval" / b / "scores.json").read_text())[
                "overall"] for s in SEEDS]
            assert float(rows[exp][b]) == pytest.approx(sum(overall) / len(overall), abs=1e-6), (exp, b)
            assert int(rows[exp][f"{b}_n"]) == len(SEEDS)
    for png in ("loss_curves.png", "scores.png"):
        assert (project / "reports" / png).stat().st_size > 5000


def test_mlflow_store_holds_every_stage_run(project: Path) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{project}/mlruns/mlflow.db")
    runs = {}
    for e in client.search_experiments():
        for r in client.search_runs([e.experiment_id]):
            runs[r.info.run_name] = r
    for exp in EXPERIMENTS:
        for seed in SEEDS:
            for stage in ("pretrain", "finetune", "evaluate"):
                assert f"{exp}/s{seed}/{stage}" in runs, sorted(runs)
    # one evaluation run per (arm, seed), the same metric keys for every arm: each benchmark and group average
    evals = [runs[f"{exp}/s{seed}/evaluate"].data.metrics for exp in EXPERIMENTS for seed in SEEDS]
    assert all(set(m) == set(evals[0]) for m in evals)
    assert {*_benchmarks(project), "group/Vision", "group/General"} <= set(evals[0])
    stage_ids = set(yaml.safe_load((project / "dvc.yaml").read_text())["stages"])
    assert {r.data.tags["jarvis.stage_id"] for r in runs.values()} == stage_ids  # one run per stage, same ids
    pre = runs["jarvis/s0/pretrain"]
    assert {"loss", "loss_ntp", "loss_jepa", "jepa_fraction", "learning_rate", "grad_norm"} <= set(pre.data.metrics)
    assert any(k.startswith("cfg.") for k in pre.data.params)
    assert pre.data.tags.get("jarvis.params_digest") or any("digest" in k for k in pre.data.tags)
    assert pre.info.status == "FINISHED"
    assert {"data/validation/dropped", "data/truncation/fraction"} <= set(runs["jarvis/s0/finetune"].data.metrics)
    assert "report" in runs


def test_after_snakemake_dvc_has_nothing_to_do(project: Path) -> None:
    assert dvc_stale(project) == set()
    shown = json.loads(run(project, "dvc", "metrics", "show", "--json").stdout)
    files = {f for rev in shown.values() for f in rev.get("data", {})}
    assert "runs/jarvis/s0/eval/scores.json" in files  # the evaluation's summary, not every benchmark's file
    assert "runs/jarvis/s0/eval/pope/scores.json" not in files


def _set_override(project: Path, lr: float) -> None:
    params = project / "params.yaml"
    raw = yaml.safe_load(params.read_text())
    raw["experiments"]["jarvis"]["overrides"] = {"pretrain": {"learning_rate": lr}}
    params.write_text(yaml.safe_dump(raw, sort_keys=False))


def test_one_param_edit_reruns_the_same_stages_in_both_tools(project: Path) -> None:
    expected = {"report", *(f"{k}-jarvis-s{s}" for k in ("pretrain", "finetune") for s in SEEDS),
                *(f"evaluate-jarvis-s{s}" for s in SEEDS)}
    _set_override(project, 2.0e-3)

    assert snakemake_dry_jobs(project) == expected

    t0 = time.perf_counter()
    out = run(project, "dvc", "repro").stdout
    TIMINGS["dvc_repro_after_edit_s"] = time.perf_counter() - t0
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    assert ran == expected, out[-3000:]
    # ...and now Snakemake agrees that DVC's outputs are current (no provenance-triggered rerun).
    assert snakemake_dry_jobs(project) == set()
    assert dvc_stale(project) == set()


def test_dvc_experiment_with_set_param(project: Path) -> None:
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "after repro")
    out = run(project, "dvc", "exp", "run", "-n", "lr2e3",
              "-S", "experiments.jarvis.overrides.pretrain.learning_rate=0.002").stdout
    assert "lr2e3" in out or "Ran experiment" in out, out[-2000:]
    exps = json.loads(run(project, "dvc", "exp", "show", "--json").stdout)
    assert "lr2e3" in json.dumps(exps)


def test_dvc_push_delete_pull_roundtrip(project: Path, tmp_path: Path) -> None:
    """Cached outputs (checkpoints, features, data, models) go to the remote; small files are in git."""
    remote = tmp_path / "remote"
    run(project, "dvc", "remote", "add", "-f", "-d", "local", str(remote))
    run(project, "dvc", "push", "-q")
    cached = [o for st in yaml.safe_load((project / "dvc.yaml").read_text())["stages"].values()
              for o in st["outs"] if isinstance(o, str)]
    assert "runs/jarvis/s0/pretrain/model" in cached and "features/synth-tiny_clip-tiny_dinov2" in cached
    for out in cached:
        shutil.rmtree(project / out)
    shutil.rmtree(project / ".dvc" / "cache")
    run(project, "dvc", "pull", "-q")
    assert (project / "runs/jarvis/s1/finetune/model/model.safetensors").is_file()
    assert dvc_stale(project) == set()
    print(f"\ntimings: {json.dumps({k: round(v, 1) for k, v in TIMINGS.items()})}")
