"""Stage `report`: the arms x benchmarks table over seeds (CSV + Markdown, paired deltas against baselines, per-run
Wilson intervals), a section per selected sweep, and plots. Everything it reads is in its plan (ReportSpec)."""

from __future__ import annotations

import time
from typing import Any

from jarvis.plan import ReportSpec, StagePlan


def run_key(arm: str, seed: int) -> str:
    return f"{arm}__s{seed}"


def run(plan: StagePlan) -> dict[str, Any]:
    from jarvis.report import build_report
    from jarvis.tracking import plan_run as stage_run

    spec: ReportSpec = plan.spec
    missing = [str(p) for *_, p in spec.score_files if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"report: missing scores files: {missing}")
    scores = {(run_key(a, s), b): p for a, s, b, p in spec.score_files}
    histories = {run_key(a, s): p for a, s, p in spec.histories}
    groups = {a: [run_key(a, s) for s in spec.seeds] for a in spec.arms}
    t0 = time.perf_counter()
    with stage_run(plan) as (mlrun, _):
        result = build_report(scores, histories, spec.out_dir, baselines=dict(spec.baselines), seed_groups=groups,
                              sweeps={name: list(v) for name, v in spec.sweeps})
        if mlrun is not None:
            import mlflow

            for out in (*plan.outs, *plan.metrics):
                mlflow.log_artifact(out, artifact_path="report")
    return {"n_arms": len(spec.arms), "n_seeds": len(spec.seeds), "n_benchmarks": len(spec.benchmarks),
            "wall_s": round(time.perf_counter() - t0, 3), "files": sorted(str(v) for v in result["files"].values())}
