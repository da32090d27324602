"""The only module that composes output paths (house rule 14). The DAG and the stages both call it.

Every name is checked to be a plain path component and every composed path to stay inside the project root
(lexically, so symlinked big-data directories keep working). All paths are relative to the project root (the
directory holding params.yaml), so dvc.yaml and the Snakefile stay literal and portable. Put big data elsewhere by
making ``data/``, ``models/`` etc. symlinks to a scratch disk.
Resumable Trainer checkpoints go to ``_work/`` (or ``$JARVIS_SCRATCH``), never a declared output.
"""

from __future__ import annotations

import os
import posixpath
import re
from pathlib import Path

from jarvis.config import ConfigError

PARAMS = Path("params.yaml")

# The alphabet of names that become path components and command arguments (issue 9: "names are code"). The schema
# (jarvis.config.SafeName) enforces the same rule at load time; checking here again means no caller can compose a
# path outside the project from an unvalidated string (a CLI id, a test, a future stage).
_COMPONENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,219}")


class UnsafePathError(ConfigError):
    """A name or derived path would leave the project root (or is not a plain name)."""


def check_component(value: str, what: str) -> str:
    """``value`` if it is a plain name (letters, digits, ``_``, ``-``; no separators, dots or shell syntax)."""
    if not isinstance(value, str) or not _COMPONENT.fullmatch(value):
        raise UnsafePathError(
            f"{what} {value!r} is not a safe name: use letters, digits, '_' and '-' (starting with a letter or digit,"
            " at most 220 characters)"
        )
    return value


def inside_root(path: Path, what: str = "path") -> Path:
    """``path`` if it stays inside the project root, lexically (symlinked ``data/`` etc. stay allowed)."""
    text = path.as_posix()
    if path.is_absolute():
        norm = os.path.normpath(text)
        roots = {str(root()), os.path.abspath(os.environ.get("JARVIS_ROOT", "."))}  # resolved or as given
        if not any(norm == r or norm.startswith(r.rstrip("/") + "/") for r in roots):
            raise UnsafePathError(f"{what} {text!r} leaves the project root {root()}")
        return path
    norm = posixpath.normpath(text)
    if norm == ".." or norm.startswith("../"):
        raise UnsafePathError(f"{what} {text!r} leaves the project root")
    return path


def _under(base: Path, *names: tuple[str, str]) -> Path:
    path = base.joinpath(*(check_component(v, what) for v, what in names))
    return inside_root(path, names[-1][1] + " directory")


def root() -> Path:
    """Project root: ``$JARVIS_ROOT`` or the current directory (where params.yaml lives)."""
    return Path(os.environ.get("JARVIS_ROOT", ".")).resolve()


def hub_lock() -> Path:
    """Commits (and archive checksums) that floating names resolved to; git-tracked, written by `download`."""
    return Path("hub.lock.yaml")


def downloads_dir() -> Path:
    """Resumable partial URL archives (kept across failures, outside every declared output)."""
    return Path(os.environ.get("JARVIS_SCRATCH", "_work")) / "downloads"


def dataset_dir(name: str) -> Path:
    return _under(Path("data"), (name, "dataset"))


def llm_dir(name: str) -> Path:
    return _under(Path("models") / "llm", (name, "LLM"))


def tower_dir(name: str) -> Path:
    return _under(Path("models") / "tower", (name, "tower"))


def cache_key(data: str, vision: str, target: str | None) -> str:
    """Feature caches are shared by every experiment with the same (data, context tower, target tower)."""
    return f"{data}-{vision}" + (f"-{target}" if target else "")


def features_dir(key: str) -> Path:
    return _under(Path("features"), (key, "feature cache"))


def run_dir(exp: str, seed: int, stage: str) -> Path:
    """One training run: ``runs/<experiment>/s<seed>/<stage>`` (seeds are an axis of the graph)."""
    return _under(Path("runs"), (exp, "experiment"), (f"s{int(seed)}", "seed"), (stage, "stage"))


def checkpoint_dir(exp: str, seed: int, stage: str) -> Path:
    return run_dir(exp, seed, stage) / "model"


def metrics_file(exp: str, seed: int, stage: str) -> Path:
    return run_dir(exp, seed, stage) / "metrics.json"


def history_file(exp: str, seed: int, stage: str) -> Path:
    return run_dir(exp, seed, stage) / "history.jsonl"


def eval_root(exp: str, seed: int, blind: bool = False) -> Path:
    """An evaluation's directory; ``blind``: the same model answering with blank images (issue 12's control)."""
    return run_dir(exp, seed, "eval_blind" if blind else "eval")


def eval_dir(exp: str, seed: int, bench: str, blind: bool = False) -> Path:
    return eval_root(exp, seed, blind) / check_component(bench, "benchmark")


def answers_file(exp: str, seed: int, bench: str, blind: bool = False) -> Path:
    return eval_dir(exp, seed, bench, blind) / "answers.jsonl"


def scores_file(exp: str, seed: int, bench: str, blind: bool = False) -> Path:
    return eval_dir(exp, seed, bench, blind) / "scores.json"


def eval_summary_file(exp: str, seed: int, blind: bool = False) -> Path:
    """Every benchmark's overall and the group averages of one (experiment, seed) evaluation."""
    return eval_root(exp, seed, blind) / "scores.json"


def reports_dir() -> Path:
    return Path("reports")


def log_file(stage_id: str) -> Path:
    return inside_root(Path("logs") / f"{check_component(stage_id, 'stage id')}.log", "log file")


def work_dir(stage_id: str) -> Path:
    """Scratch of one stage (resumable checkpoints, MLflow run id), ``_work/<stage id>``."""
    base = Path(os.environ.get("JARVIS_SCRATCH", "_work"))
    return base / check_component(stage_id, "stage id")  # base: env, may be anywhere
