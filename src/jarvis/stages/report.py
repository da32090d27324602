"""Stage `report`: the arms x benchmarks table over seeds (CSV + Markdown, paired deltas against baselines, per-run
Wilson intervals), a section per selected sweep, and plots. Everything it reads is in its plan (ReportSpec).

With ``evaluation.blind`` each arm also has a ``<arm> (blind)`` row from its blank-image evaluation, pooled over the
same seeds; deltas stay between trained arms (the baselines of params.yaml). In MLflow its means are
``blind/<arm>/<column>``."""

from __future__ import annotations

import time
from typing import Any

from jarvis.plan import ReportSpec, StagePlan
from jarvis.report_controls import BLIND_SUFFIX, blind_row


def run_key(arm: str, seed: int) -> str:
    return f"{arm}__s{seed}"


def run(plan: StagePlan) -> dict[str, Any]:
    from jarvis.report import build_report, write_arm_metrics, write_bars, write_curves
    from jarvis.tracking import plan_run as stage_run

    spec: ReportSpec = plan.spec
    missing = [str(p) for *_, p in (*spec.score_files, *spec.blind_files) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"report: missing scores files: {missing}")
    scores = {(run_key(a, s), b): p for a, s, b, p in spec.score_files}
    scores.update({(run_key(blind_row(a), s), b): p for a, s, b, p in spec.blind_files})
    histories = {run_key(a, s): p for a, s, p in spec.histories}
    rows = [r for a in spec.arms for r in ((a, blind_row(a)) if spec.blind_files else (a,))]  # arm, then its blind
    groups = {r: [run_key(r, s) for s in spec.seeds] for r in rows}
    t0 = time.perf_counter()
    with stage_run(plan) as (mlrun, _):
        on_figure = None
        if mlrun is not None:
            import mlflow

            def on_figure(name: str, fig: Any) -> None:
                mlflow.log_figure(fig, f"report/{name}")

        result = build_report(scores, histories, spec.out_dir, baselines=dict(spec.baselines), seed_groups=groups,
                              sweeps={name: list(v) for name, v in spec.sweeps}, on_figure=on_figure)
        write_curves(histories, {run_key(a, s): p for a, s, p in spec.curves})
        write_arm_metrics(result, dict(spec.arm_metrics))
        if spec.bars is not None:
            write_bars(result, spec.bars)
        if mlrun is not None:
            _log_to_mlflow(result)
    return {"n_arms": len(spec.arms), "n_seeds": len(spec.seeds), "n_benchmarks": len(spec.benchmarks),
            "wall_s": round(time.perf_counter() - t0, 3), "files": sorted(str(v) for v in result["files"].values())}


def _log_to_mlflow(summary: dict[str, Any]) -> None:
    """The table as an MLflow table (one row per arm, mean and 95 % interval half-width per column) and each arm's
    means as metrics ``<arm>/<column>``; the figures went through ``log_figure`` while they were drawn."""
    import math

    import mlflow

    table: dict[str, list[Any]] = {"arm": []}
    metrics: dict[str, float] = {}
    for arm, cells in summary["rows"].items():
        table["arm"].append(arm)
        for col in summary["columns"]:
            cell = cells.get(col)
            mean = cell["mean"] if cell else float("nan")
            table.setdefault(col, []).append(None if math.isnan(mean) else round(mean, 4))
            half = cell["ci95"] if cell else None
            table.setdefault(f"{col} ±95%", []).append(half if isinstance(half, (int, float))
                                                        and not math.isnan(half) else None)
            if not math.isnan(mean):  # MLflow refuses "(" in a key: a blind row's means go under blind/
                name = f"blind/{arm.removesuffix(BLIND_SUFFIX)}" if arm.endswith(BLIND_SUFFIX) else arm
                metrics[f"{name}/{col}"] = mean
    mlflow.log_table(table, artifact_file="report/table.json")
    if metrics:
        mlflow.log_metrics(metrics)
