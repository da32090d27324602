"""The only module that composes output paths (house rule 14). The DAG and the stages both call it.

All paths are relative to the project root (the directory holding params.yaml), so dvc.yaml and the Snakefile
stay literal and portable. Put big data elsewhere by making ``data/``, ``models/`` etc. symlinks to a scratch disk.
Resumable Trainer checkpoints go to ``_work/`` (or ``$JARVIS_SCRATCH``), never a declared output.
"""

from __future__ import annotations

import os
from pathlib import Path

PARAMS = Path("params.yaml")


def root() -> Path:
    """Project root: ``$JARVIS_ROOT`` or the current directory (where params.yaml lives)."""
    return Path(os.environ.get("JARVIS_ROOT", ".")).resolve()


def dataset_dir(name: str) -> Path:
    return Path("data") / name


def llm_dir(name: str) -> Path:
    return Path("models") / "llm" / name


def tower_dir(name: str) -> Path:
    return Path("models") / "tower" / name


def cache_key(data: str, vision: str, target: str | None) -> str:
    """Feature caches are shared by every experiment with the same (data, context tower, target tower)."""
    return f"{data}-{vision}" + (f"-{target}" if target else "")


def features_dir(key: str) -> Path:
    return Path("features") / key


def run_dir(exp: str, seed: int, stage: str) -> Path:
    """One training run: ``runs/<experiment>/s<seed>/<stage>`` (seeds are an axis of the graph)."""
    return Path("runs") / exp / f"s{seed}" / stage


def checkpoint_dir(exp: str, seed: int, stage: str) -> Path:
    return run_dir(exp, seed, stage) / "model"


def metrics_file(exp: str, seed: int, stage: str) -> Path:
    return run_dir(exp, seed, stage) / "metrics.json"


def history_file(exp: str, seed: int, stage: str) -> Path:
    return run_dir(exp, seed, stage) / "history.jsonl"


def eval_dir(exp: str, seed: int, bench: str) -> Path:
    return run_dir(exp, seed, "eval") / bench


def answers_file(exp: str, seed: int, bench: str) -> Path:
    return eval_dir(exp, seed, bench) / "answers.jsonl"


def scores_file(exp: str, seed: int, bench: str) -> Path:
    return eval_dir(exp, seed, bench) / "scores.json"


def reports_dir() -> Path:
    return Path("reports")


def log_file(stage_id: str) -> Path:
    return Path("logs") / f"{stage_id}.log"


def work_dir(stage_id: str) -> Path:
    """Scratch of one stage (resumable checkpoints, MLflow run id), ``_work/<stage id>``."""
    return Path(os.environ.get("JARVIS_SCRATCH", "_work")) / stage_id
