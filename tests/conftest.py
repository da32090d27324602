"""Shared test setup: offline, single-threaded, and the project root on hand."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = ROOT / ".venv" / "bin"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))


# `make test` runs on two xdist workers, one test module per unit of work (--dist loadfile, README "Tests"), taken
# in this order. A worker gets a new unit only when it has at most two tests left, so the pipeline module (the
# longest by far) keeps one worker to itself until its last tests while the other takes the SLURM preemption module,
# then the rest. The two-process DeepSpeed module goes last: its ranks' collectives stall while other processes hold
# the cores, and the stages beside them slowed too (in the CI of 1e35e59, alongside test_pipeline's edit rerun, a
# ZeRO-2 run took 204 s and the rerun's stage-1 jobs 116 s, against 109 s and about 25 s apart). Three workers were
# slower: the pipeline's own two jobs and the two-process DeepSpeed tests starve.
LONGEST_FIRST = ("test_pipeline.py", "test_slurm_preemption.py", "test_staleness.py", "test_mlflow_ui.py",
                 "test_slurm_local.py", "test_cli.py", "test_download.py", "test_export.py", "test_flex_attention.py")
LAST = ("test_training.py",)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)} | {name: len(LONGEST_FIRST) + 1 for name in LAST}
    items.sort(key=lambda item: rank.get(item.path.name, len(LONGEST_FIRST)))  # stable: the rest keep their order


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


def bin_path(name: str) -> str:
    """An executable of the project venv (tests run from it; subprocesses must use the same one)."""
    p = VENV_BIN / name
    return str(p) if p.exists() else name
