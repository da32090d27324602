"""Stage `report`: the experiments x benchmarks table (CSV + Markdown, deltas against baselines) and plots."""

from __future__ import annotations

import time
from typing import Any

from jarvis import paths
from jarvis.config import Params

OUTPUTS = ("table.csv", "table.md", "deltas.csv", "loss_curves.png", "scores.png")


def run(params: Params) -> dict[str, Any]:
    from jarvis.report import build_report
    from jarvis.stages.common import stage_run

    exps, benches = params.run.experiments, params.run.benchmarks
    scores = {(e, b): paths.scores_file(e, b) for e in exps for b in benches}
    missing = [str(p) for p in scores.values() if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"report: missing scores files: {missing}")
    histories = {e: paths.history_file(e, "pretrain") for e in exps}
    baselines = {e: [b for b in params.experiments[e].baselines if b in exps] for e in exps}
    t0 = time.perf_counter()
    view = {"run": params.run.model_dump(mode="json"), "evaluation.mode": params.evaluation.mode}
    out = paths.reports_dir()
    with stage_run("pipeline", "report", view) as (mlrun, _):
        result = build_report(scores, histories, out, baselines={k: v for k, v in baselines.items() if v})
        if mlrun is not None:
            import mlflow

            for name in (*OUTPUTS, "summary.json"):
                mlflow.log_artifact(str(out / name), artifact_path="report")
    return {"n_experiments": len(exps), "n_benchmarks": len(benches), "wall_s": round(time.perf_counter() - t0, 3),
            "files": sorted(str(v) for v in result.values())}
