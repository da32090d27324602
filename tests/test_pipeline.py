"""End to end on the tiny default: `snakemake --profile slurm all` against the local SLURM cluster, then DVC and
Snakemake agree, a one-param edit reruns exactly the affected stages in both tools, DVC remotes round-trip, and MLflow
holds every run.

One project copy is shared by the tests of this module, in order (each leaves it consistent for the next). The graph
is the default's with one arm fewer on a smaller world (a baseline and JARVIS, both seeds, every benchmark; 64
samples per stage): the third arm runs the same stages with one flag changed, and the rehearsal tier
(`make test-rehearsal`) runs all three through Snakemake. Every stage of the first run is its own `sbatch` job
under slurmd (GPU stages get a fake GRES device and run on CPU); the edit's rerun runs locally (`--cores 2`).
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

from conftest import ROOT
from pipeline_utils import dvc_stale, edit_params, make_project, run, small_world, snakemake_dry_jobs
from test_slurm_local import _require_cluster

pytestmark = [pytest.mark.slow, pytest.mark.pipeline, pytest.mark.slurm]

EXPERIMENTS = ("llava", "jarvis")
SEEDS = (0, 1)
TIMINGS: dict[str, float] = {}
SLURM_LOG: dict[str, str] = {}  # the first run's console and Snakemake logs


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    _require_cluster()
    p = tmp_path_factory.mktemp("pipeline") / "proj"
    p.mkdir()
    make_project(p)
    def trim(raw: dict) -> None:
        raw["run"].update(experiments=list(EXPERIMENTS))
        small_world(raw, 64)  # 4 stage-1 and 12 stage-2 steps: these tests check the pipeline, not what it learns

    edit_params(p, trim)
    run(p, "git", "commit", "-qam", "a baseline and JARVIS on a smaller world")
    # what `make setup` does for this checkout, so that `--profile slurm` resolves (idempotent)
    run(p, "bash", str(ROOT / "scripts" / "link-profile.sh"))
    t0 = time.perf_counter()
    # README's command; a hard timeout guards against a stuck status check (stack-facts §8). The profile polls like a
    # shared cluster wants (40 s, then 30 s); the local test cluster answers at once.
    res = run(p, "timeout", "-k", "30", "1800", "snakemake", "--profile", "slurm", "all",
              "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2", timeout=1900)
    TIMINGS["snakemake_profile_slurm_all_s"] = time.perf_counter() - t0
    SLURM_LOG["log"] = res.stdout + res.stderr + "".join(
        f.read_text() for f in (p / ".snakemake" / "log").glob("*.log"))
    print(f"\nsnakemake --profile slurm all: {TIMINGS['snakemake_profile_slurm_all_s']:.1f} s")
    return p


def test_every_stage_ran_as_its_own_slurm_job(project: Path) -> None:
    # the executor plugin logs "... submitted with SLURM jobid N ..." per job
    log = SLURM_LOG["log"]
    # no stage failed and was resubmitted (training rules retry after a preemption)
    assert "Trying to restart" not in log, log[-3000:]
    jobs = set(re.findall(r"SLURM jobid (\d+)", log))
    stages = yaml.safe_load((project / "dvc.yaml").read_text())["stages"]
    assert len(jobs) == len(stages), (len(jobs), len(stages), log[-3000:])
    assert {s.split("-")[0] for s in stages} == {"download", "cache_features", "pretrain", "finetune", "evaluate",
                                                 "report"}


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
                for kind in ("eval", "eval_blind"):  # each model answers again with blank images (issue 12)
                    assert (project / "runs" / exp / f"s{seed}" / kind / b / "answers.jsonl").is_file()
    for root in ("data", "models", "features", "runs"):
        assert not list((project / root).glob("**/.snakemake_timestamp")), root
    jarvis = json.loads((project / "runs/jarvis/s0/pretrain/metrics.json").read_text())
    llava = json.loads((project / "runs/llava/s0/pretrain/metrics.json").read_text())
    # a negative cosine, in [-1, 1] (its sign needs more than the small world's 4 steps); skip_prob 0.2
    assert -1 <= jarvis["loss_jepa"] <= 1 and 0 < jarvis["jepa_fraction"] <= 1
    assert llava["loss_jepa"] is None and llava["jepa_fraction"] == 0
    other = json.loads((project / "runs/jarvis/s1/pretrain/metrics.json").read_text())
    assert other["loss"] != jarvis["loss"]  # two seeds, two runs
    # Drop and truncation counts reach metrics.json (issue 9): the tiny finetune (max_length 256) truncates answers.
    fine = json.loads((project / "runs/jarvis/s0/finetune/metrics.json").read_text())
    assert jarvis["data/validation/dropped"] == 0 and jarvis["data/truncation/supervised_tokens_lost"] == 0
    assert fine["data/truncation/samples"] > 0 and 0 < fine["data/truncation/fraction"] <= 0.5  # small_world's limit
    with (project / "reports/table.csv").open() as fh:
        rows = {r["row"]: r for r in csv.DictReader(fh)}
    assert set(rows) == {*EXPERIMENTS, *(f"{e} (blind)" for e in EXPERIMENTS)}
    for exp in EXPERIMENTS:
        for row, kind in ((exp, "eval"), (f"{exp} (blind)", "eval_blind")):
            for b in benches:
                overall = [json.loads((project / "runs" / exp / f"s{s}" / kind / b / "scores.json").read_text())[
                    "overall"] for s in SEEDS]
                assert float(rows[row][b]) == pytest.approx(sum(overall) / len(overall), abs=1e-6), (row, b)
                assert int(rows[row][f"{b}_n"]) == len(SEEDS)
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
    inputs = client.get_run(pre.info.run_id).inputs.dataset_inputs  # the corpus it read: name, digest, counts
    assert [i.dataset.name.split("/")[:2] for i in inputs] == [["synth", "pretrain"]] and inputs[0].dataset.digest
    assert "report" in runs


def test_after_snakemake_dvc_has_nothing_to_do(project: Path) -> None:
    assert dvc_stale(project) == set()
    shown = json.loads(run(project, "dvc", "metrics", "show", "--json").stdout)
    files = {f for rev in shown.values() for f in rev.get("data", {})}
    assert "runs/jarvis/s0/eval/scores.json" in files  # the evaluation's summary, not every benchmark's file
    assert "runs/jarvis/s0/eval/pope/scores.json" not in files
    assert {f"reports/arms/{e}.json" for e in EXPERIMENTS} <= files  # one short row per arm
    arm = shown[next(iter(shown))]["data"]["reports/arms/jarvis.json"]["data"]
    assert arm["n_seeds"] == len(SEEDS) and set(_benchmarks(project)) <= set(arm)
    assert "runs/jarvis/s0/eval_blind/scores.json" in files  # and its blind twin
    assert len(files) <= len(EXPERIMENTS) * (2 * len(SEEDS) + 1)  # not every stage's metrics.json


def test_dvc_plots_show_renders_curves_bars_and_figures(project: Path, tmp_path: Path) -> None:
    out = tmp_path / "plots"
    run(project, "dvc", "plots", "show", "-o", str(out))
    page = (out / "index.html").read_text()
    for plot in ("stage1_loss_ntp", "stage1_loss_jepa", "scores", "loss_curves.png", "scores.png"):
        assert plot in page, plot
    # one line per arm and seed: every curve file is in the curve plot's data
    for exp in EXPERIMENTS:
        for seed in SEEDS:
            assert f'"filename": "{exp}-s{seed}.csv"' in page, (exp, seed)


def test_snakemake_report_embeds_the_comparison(project: Path, tmp_path: Path) -> None:
    """`snakemake --report` holds the report stage's tables and figures (report() outputs) with their captions."""
    html = tmp_path / "report.html"
    run(project, "snakemake", "--report", str(html))
    text = html.read_text()
    for name in ("table.csv", "deltas.csv", "loss_curves.png", "scores.png"):
        assert name in text, name
    assert "paired differences over the shared seeds" in text and "Comparison" in text


def test_mlflow_ui_shows_the_arms_side_by_side_in_a_browser(project: Path, tmp_path: Path) -> None:
    """A real `mlflow server` over the pipeline's store and a real headless Chromium: the compare view of the arms'
    evaluation runs shows every benchmark score of every arm, the study's runs table lists every arm, and its chart view
    overlays the arms' stage-1 loss_ntp and loss_jepa curves."""
    from urllib.parse import quote

    from mlflow import MlflowClient

    from mlflow_browser import mlflow_server, rendered_text, rendered_until, shown

    uri = f"sqlite:///{project}/mlruns/mlflow.db"
    client = MlflowClient(uri)
    study = client.get_experiment_by_name(yaml.safe_load((project / "params.yaml").read_text())["run"]["study"])
    evals = client.search_runs([study.experiment_id], "tags.`jarvis.stage` = 'evaluate'")
    assert sorted((r.data.tags["jarvis.arm"], r.data.tags["jarvis.seed"]) for r in evals) == sorted(
        (e, str(s)) for e in EXPERIMENTS for s in SEEDS)  # one evaluation run per (arm, seed)
    assert len({frozenset(r.data.metrics) for r in evals}) == 1  # the same metric keys in every arm
    benches = _benchmarks(project)
    picked = sorted((r for r in evals if r.data.tags["jarvis.seed"] == "0"), key=lambda r: r.info.run_name)
    with mlflow_server(uri, tmp_path / "server.log") as (base, _):
        ids = quote(json.dumps([r.info.run_id for r in picked]))
        page = rendered_text(f"{base}/#/compare-runs?runs={ids}&experiments={quote(json.dumps([study.experiment_id]))}",
                             tmp_path / "chrome", height=8000)  # every metric row inside the window
        assert f"Comparing {len(picked)} Runs" in page, page[:2000]
        table = page[page.index("Metrics Show diff only"):]
        for bench in benches:
            assert f" {bench} " in table, bench
            for r in picked:
                assert f" {shown(r.data.metrics[bench])} " in table, (r.info.run_name, bench)
        runs = rendered_text(f"{base}/#/experiments/{study.experiment_id}/runs", tmp_path / "chrome")
        for r in evals:
            assert r.info.run_name in runs, r.info.run_name
        # The stage-1 curves of every arm and seed overlay in one chart each (the runs table's chart view, filtered to
        # the pretrain runs): a line chart's legend names every run as "<run name> (<metric>)".
        pre = client.search_runs([study.experiment_id], "tags.`jarvis.stage` = 'pretrain'")
        legends = {f"{r.info.run_name} (loss_ntp)" for r in pre}
        legends |= {f"{r.info.run_name} (loss_jepa)" for r in pre if "loss_jepa" in r.data.metrics}
        assert any("(loss_jepa)" in x for x in legends)  # the JARVIS arm logged its JEPA curve
        flt = quote("tags.`jarvis.stage` = 'pretrain'")
        charts = rendered_until(f"{base}/#/experiments/{study.experiment_id}/runs?compareRunsMode=CHART"
                                f"&searchFilter={flt}", tmp_path / "chrome-charts",
                                lambda page: all(x in page for x in legends), budget_ms=60000, height=8000)
        assert f"{len(pre)} matching runs" in charts, charts[:2000]
        for x in sorted(legends):
            assert x in charts, x


# What an edit of JARVIS's stage-1 recipe reruns (README, "Change one value"): its stages, downstream, and the report.
EDIT_RERUNS = {"report", *(f"{k}-jarvis-s{s}" for k in ("pretrain", "finetune", "evaluate") for s in SEEDS)}


def _set_override(project: Path, lr: float) -> None:
    edit_params(project, lambda raw: raw["experiments"]["jarvis"].update(overrides={"pretrain": {"learning_rate": lr}}),
                render=False)  # a value edit: the graph stays as it is


def test_one_param_edit_reruns_the_same_stages_in_both_tools(project: Path) -> None:
    _set_override(project, 2.0e-3)

    assert snakemake_dry_jobs(project) == EDIT_RERUNS

    # Snakemake runs them (two at a time); the next test has DVC run the same edit's stages (`dvc exp run`).
    t0 = time.perf_counter()
    res = run(project, "snakemake", "--cores", "2", "all")
    TIMINGS["snakemake_after_edit_s"] = time.perf_counter() - t0
    ran = set(re.findall(r"^\s*(?:local)?rule (\S+):$", res.stdout + res.stderr, re.M)) - {"all"}
    assert ran == EDIT_RERUNS, (res.stdout + res.stderr)[-3000:]
    # ...and now DVC agrees that Snakemake's outputs are current (no provenance-triggered rerun), and so does Snakemake.
    assert dvc_stale(project) == set()
    assert snakemake_dry_jobs(project) == set()


# An edit DVC executes with `dvc exp run -S` (README, "Change one value"): every evaluation reruns, then the report.
EVAL_RERUNS = {"report", *(f"evaluate-{e}-s{s}" for e in EXPERIMENTS for s in SEEDS)}


def test_dvc_experiment_with_set_param(project: Path) -> None:
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", "after repro")
    # README's command as written (`++`: add the key or set it; the previous test left an override in place): DVC
    # finds the stages that read the value stale, those whose downstream Snakemake reran for the same kind of edit
    # (the previous test). DVC decides downstream reruns by the new outputs' hashes, so only a run shows them.
    readme = (ROOT / "README.md").read_text()
    assert "dvc exp run -S '++experiments.jarvis.overrides.pretrain.learning_rate=0.003'" in readme
    _set_override(project, 3.0e-3)
    assert dvc_stale(project) == {f"{k}-jarvis-s{s}" for k in ("pretrain", "finetune") for s in SEEDS}
    run(project, "git", "checkout", "--", "params.yaml")
    # An experiment DVC runs and records, whose stages are cheaper than training's: a benchmark's decoding length.
    # Snakemake plans the same stages for the same edit.
    edit_params(project, lambda raw: raw["evaluation"]["max_new_tokens"].update(pope=6), render=False)
    assert snakemake_dry_jobs(project) == EVAL_RERUNS
    run(project, "git", "checkout", "--", "params.yaml")
    out = run(project, "dvc", "exp", "run", "-n", "pope6", "-S", "++evaluation.max_new_tokens.pope=6").stdout
    assert "pope6" in out or "Ran experiment" in out, out[-2000:]
    assert set(re.findall(r"Running stage '([^']+)'", out)) == EVAL_RERUNS, out[-3000:]
    assert dvc_stale(project) == set() and snakemake_dry_jobs(project) == set()  # both tools: current
    exps = json.dumps(json.loads(run(project, "dvc", "exp", "show", "--json").stdout))
    assert "pope6" in exps and '"max_new_tokens": {"pope": 6}' in exps  # the experiment's params.yaml


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
