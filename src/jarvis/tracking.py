"""MLflow tracking: one store, one experiment per study, one run per stage (style.md §3.6).

- Store: ``sqlite:///<project root>/mlruns/mlflow.db`` (absolute, so jobs in other working directories share it;
  stack-facts §5), artifacts under ``<root>/mlruns/artifacts`` at store-relative ``jarvis-store:`` locations (the
  store can be copied elsewhere; jarvis.artifact_store). ``MLFLOW_TRACKING_URI`` overrides the store.
  The file store is in maintenance mode in MLflow 3.17 and is not used.
- Names and tags come from the stage plan (jarvis.plan): one MLflow experiment per study (``run.study``) holding
  every arm, seed, sweep variant and shared stage; run ``<experiment>/s<seed>/<stage>``; tags ``jarvis.stage_id``
  (= the DAG stage id, for every stage kind), ``jarvis.stage``, ``jarvis.arm``, ``jarvis.seed``, ``jarvis.variant``.
  Params are logged under arm-independent keys (``cfg.experiment.*``, ``cfg.arm.*``), so the compare view of two arms
  diffs their settings.
- Every stage run is opened with :func:`stage_run` on rank 0 (other ranks get None); the Trainer's MLflowCallback
  logs into it because it only starts its own run when none is active (transformers ``integration_utils.py``,
  ``MLflowCallback.setup``) -- so ``MLFLOW_RUN_ID`` / ``MLFLOW_NESTED_RUN`` must stay unset.
- A resumed stage continues its run: the run id is kept in the stage's work dir together with the params digest,
  and a work dir left by *other* params is refused (its checkpoints would be resumed under the wrong config).
- MLflow is a view, not the record: nothing reads results back from it; checkpoints are not uploaded.

SQLite under concurrency: create the DB and experiments once, up front (:func:`init_store`), from the head process.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jarvis import paths

logger = logging.getLogger(__name__)

RUN_FILE = "mlflow_run.json"  # in the stage's work dir: {"run_id", "params_digest", "tracking_uri"}
PARAM_PREFIX = "cfg."  # keeps our keys apart from the Trainer's own params (same key + other value is an error)
_PARAMS_PER_BATCH = 100  # MLflow log_batch limit
_MAX_PARAM_LEN = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH in 3.17
# Env vars read by transformers' MLflowCallback at Trainer construction.
_TRAINER_ENV = {
    "HF_MLFLOW_LOG_ARTIFACTS": "FALSE",  # never copy checkpoints into the artifact store
    "MLFLOW_FLATTEN_PARAMS": "TRUE",  # nested model config as dotted keys instead of dropped >250-char values
}
_FORBIDDEN_ENV = ("MLFLOW_RUN_ID", "MLFLOW_NESTED_RUN")


# ---- store and names ---------------------------------------------------------------------------------------------


def tracking_uri(root: Path | None = None) -> str:
    """``MLFLOW_TRACKING_URI`` if set, else the absolute sqlite store under ``<root>/mlruns``."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    db = (root or paths.root()).resolve() / "mlruns" / "mlflow.db"
    return f"sqlite:///{db}"  # sqlite:/// + absolute path = four slashes


def artifact_location(experiment: str, root: Path | None = None) -> str | None:
    """Where an experiment of ours keeps its artifacts: ``artifacts/<experiment>`` beside a SQLite store, as a
    store-relative ``jarvis-store:`` location (jarvis.artifact_store), so the store can be copied elsewhere; a
    tracking server (http/https URI) chooses its own, already location-independent, root (None)."""
    if not tracking_uri(root).startswith("sqlite:///"):
        return None
    from jarvis import artifact_store

    return artifact_store.location(f"artifacts/{experiment}")


def experiment_name(experiment: str) -> str:
    """The MLflow experiment of a study (``run.study`` in params.yaml) is named as the study."""
    return experiment


@dataclass(frozen=True)
class RunIdentity:
    """What names and tags one stage's MLflow run (a StagePlan's view of itself: ``plan.identity``)."""

    experiment: str  # the MLflow experiment: the study (run.study)
    run_name: str
    tags: tuple[tuple[str, str], ...]  # must hold jarvis.stage_id
    values: Mapping[str, Any]  # the stage's declared params and their values (its digest keys the work dir)
    logged: Mapping[str, Any] | None = None  # what MLflow shows as params (arm-independent keys); None: values


def _client(uri: str) -> Any:
    import mlflow

    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return mlflow.MlflowClient(tracking_uri=uri)


def ensure_experiment(experiment: str, root: Path | None = None) -> str:
    """Create (once) the MLflow experiment named ``experiment``; returns its id."""
    uri = tracking_uri(root)
    client = _client(uri)
    name = experiment_name(experiment)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    # The UI opens an experiment of this kind on its training-runs table (MLflow 3 otherwise guesses GenAI).
    tags = {"mlflow.experimentKind": "custom_model_development"}
    return str(client.create_experiment(name, artifact_location=artifact_location(experiment, root), tags=tags))


def init_store(experiments: Iterable[str], root: Path | None = None) -> dict[str, str]:
    """Create the DB (schema migration) and every experiment up front, from one process; returns name → id."""
    return {exp: ensure_experiment(exp, root) for exp in experiments}


# ---- params and tags ---------------------------------------------------------------------------------------------


def flatten_params(params: Mapping[str, Any], prefix: str = PARAM_PREFIX) -> dict[str, str]:
    """Nested dicts/lists → ``{"cfg.a.b.0": "value"}``; values longer than MLflow's limit are cut and marked."""
    out: dict[str, str] = {}

    def walk(value: Any, key: str) -> None:
        if isinstance(value, Mapping):
            if not value:
                out[key] = "{}"
            for k, v in value.items():
                walk(v, f"{key}.{k}" if key else str(k))
        elif isinstance(value, (list, tuple)) and any(isinstance(v, (Mapping, list, tuple)) for v in value):
            for i, v in enumerate(value):
                walk(v, f"{key}.{i}")
        else:
            text = json.dumps(list(value)) if isinstance(value, (list, tuple)) else str(value)
            out[key] = text if len(text) <= _MAX_PARAM_LEN else text[: _MAX_PARAM_LEN - 12] + "…[truncated]"

    walk(params, prefix.rstrip("."))
    return out


def params_digest(params: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of the resolved params (16 hex chars)."""
    blob = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def git_state(root: Path | None = None) -> tuple[str, bool | None]:
    """(commit, dirty) of the project checkout; ("unknown", None) outside git. Tracked files only count as dirty."""
    cwd = (root or paths.root()).resolve()
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, check=True, timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown", None
    return commit, bool(status.strip())


def run_tags(identity: RunIdentity, world_size: int, root: Path | None = None) -> dict[str, str]:
    commit, dirty = git_state(root)
    tags = {
        **dict(identity.tags),
        "jarvis.params_digest": params_digest(identity.values),
        "jarvis.world_size": str(world_size),
        "jarvis.git_commit": commit,
        "jarvis.git_dirty": str(dirty).lower(),
        # MLflow sets this itself only with gitpython and argv[0] inside the repo (stack-facts §5).
        "mlflow.source.git.commit": commit,
    }
    job = os.environ.get("SLURM_JOB_ID")
    if job:
        array = os.environ.get("SLURM_ARRAY_JOB_ID")
        tags["jarvis.slurm_job_id"] = f"{array}_{os.environ.get('SLURM_ARRAY_TASK_ID')}" if array else job
    return tags


# ---- runs --------------------------------------------------------------------------------------------------------


def _read_run_file(work_dir: Path) -> dict[str, str] | None:
    path = work_dir / RUN_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _write_run_file(work_dir: Path, record: Mapping[str, str]) -> None:
    from jarvis.io import write_json_atomic

    write_json_atomic(work_dir / RUN_FILE, dict(record))


def check_work_dir(work_dir: Path, params: Mapping[str, Any]) -> None:
    """Refuse a work dir whose checkpoints were made with other params (call on every rank before training)."""
    record = _read_run_file(Path(work_dir))
    digest = params_digest(params)
    if record is not None and record.get("params_digest") != digest:
        raise RuntimeError(
            f"{work_dir} holds a stage run made with other params (digest {record.get('params_digest')} != {digest});"
            " its checkpoints would be resumed under the wrong config. Delete the directory to start over."
        )


@contextlib.contextmanager
def stage_run(
    identity: RunIdentity,
    work_dir: Path,
    *,
    world_size: int | None = None,
    root: Path | None = None,
) -> Iterator[Any]:
    """Open (or, on resume, reopen) the MLflow run of one stage; yields the ``ActiveRun`` on rank 0, None elsewhere.

    The run is active for the whole block, so the Trainer's MLflowCallback and plain ``mlflow.log_metrics`` calls
    both land in it. Ends FINISHED on success, KILLED on a non-zero ``SystemExit`` (preemption), FAILED otherwise.
    """
    if "jarvis.stage_id" not in dict(identity.tags):
        raise ValueError(f"run {identity.run_name}: no jarvis.stage_id tag (names come from the stage plan)")
    params = identity.values
    experiment = identity.experiment
    work_dir = Path(work_dir)
    check_work_dir(work_dir, params)
    if int(os.environ.get("RANK", "0")) != 0:
        yield None
        return

    import mlflow

    uri = tracking_uri(root)
    mlflow.set_tracking_uri(uri)
    if mlflow.active_run() is not None:
        raise RuntimeError(f"an MLflow run is already active ({mlflow.active_run().info.run_id}); stage runs don't nest")
    exp_id = ensure_experiment(experiment, root)
    world = world_size if world_size is not None else int(os.environ.get("WORLD_SIZE", "1"))
    tags = run_tags(identity, world, root)
    record = _read_run_file(work_dir)
    run_id = None
    if record is not None and record.get("tracking_uri") == uri:
        try:
            mlflow.MlflowClient(uri).get_run(record["run_id"])
            run_id = record["run_id"]
        except mlflow.exceptions.MlflowException:
            logger.warning("run %s from %s is not in %s; starting a new run", record["run_id"], work_dir, uri)
    if run_id is not None:
        run = mlflow.start_run(run_id=run_id, tags=tags)
        logger.info("MLflow: resumed run %s (%s)", run_id, identity.run_name)
    else:
        run = mlflow.start_run(experiment_id=exp_id, run_name=identity.run_name, tags=tags)
        _write_run_file(work_dir, {"run_id": run.info.run_id, "params_digest": params_digest(params),
                                   "tracking_uri": uri})
        logger.info("MLflow: new run %s (%s) in %s", run.info.run_id, identity.run_name, uri)
    flat = flatten_params(identity.logged if identity.logged is not None else params)
    items = list(flat.items())
    for i in range(0, len(items), _PARAMS_PER_BATCH):
        mlflow.log_params(dict(items[i : i + _PARAMS_PER_BATCH]))  # same values on resume: allowed
    status = "FINISHED"
    try:
        yield run
    except SystemExit as exc:
        status = "FINISHED" if exc.code in (None, 0) else "KILLED"
        raise
    except BaseException:
        status = "FAILED"
        raise
    finally:
        mlflow.end_run(status=status)


def configure_trainer_env() -> None:
    """Env for transformers' MLflowCallback (read at Trainer construction): no artifact upload, flat params."""
    for name in _FORBIDDEN_ENV:
        if os.environ.get(name):
            raise RuntimeError(
                f"{name} is set; jarvis.tracking opens the stage run itself and the MLflowCallback would start"
                " (and end) a second one. Unset it."
            )
    os.environ.update(_TRAINER_ENV)


def assert_active(run: Any) -> None:
    """Fail loudly unless ``run`` is the active MLflow run (the Trainer would otherwise open its own)."""
    import mlflow

    active = mlflow.active_run()
    if active is None or active.info.run_id != run.info.run_id:
        raise RuntimeError(f"MLflow run {run.info.run_id} is not the active run; use it inside stage_run(...)")


def logged_steps(run_id: str, uri: str | None = None) -> dict[str, int]:
    """Metric key → the highest step already logged in run ``run_id`` (a resumed stage skips those steps, so the
    run keeps exactly one point per step)."""
    import mlflow

    client = mlflow.MlflowClient(uri or mlflow.get_tracking_uri())
    run = client.get_run(run_id)
    out: dict[str, int] = {}
    for key in run.data.metrics:
        history = client.get_metric_history(run_id, key)
        if history:
            out[key] = max(int(m.step) for m in history)
    return out


def log_final_metrics(metrics: Mapping[str, Any], prefix: str = "final/") -> None:
    """Numeric entries of a stage's metrics.json, logged once into the active run."""
    import mlflow

    numeric = {f"{prefix}{k}": float(v) for k, v in metrics.items() if isinstance(v, (int, float))
               and not isinstance(v, bool)}
    bad = sorted(k for k, v in numeric.items() if not math.isfinite(v))
    if bad:  # a NaN in MLflow reads as a result: the stage fails instead (its run is marked FAILED)
        from jarvis.io import StageFailed

        raise StageFailed(f"refusing to log non-finite metrics to MLflow: {', '.join(bad)}")
    if numeric:
        mlflow.log_metrics(numeric)


def log_dataset(path: Path, name: str, context: str, counts: Mapping[str, Any]) -> None:
    """Log a data file as an input of the active run: its name, the sha256 of its bytes (16 hex) as digest, and the
    counts (samples, drops, truncations) as input tags; the compare view then shows which data each run read."""
    import mlflow
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.data.sources import LocalArtifactDatasetSource

    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    dataset = MetaDataset(LocalArtifactDatasetSource(str(Path(path).resolve())), name=name, digest=digest)
    mlflow.log_input(dataset, context=context, tags={k: str(v) for k, v in counts.items()})


@contextlib.contextmanager
def plan_run(plan: Any, world_size: int | None = None) -> Iterator[tuple[Any, Path]]:
    """The stage's MLflow run and its scratch directory ``_work/<stage id>/<params digest>/``.

    Keyed by the params digest, so a rerun with other params never resumes stale checkpoints and a rerun with the
    same params after an interruption resumes (and continues its MLflow run). On success the scratch is removed:
    the declared outputs are the record. Rank 0 holds ``_work/<stage id>.lock`` for the whole block, so a second
    process on the same stage output refuses to start (before it opens or touches the MLflow run).
    """
    import contextlib

    from jarvis.io import exclusive_lock

    base = paths.work_dir(plan.id)
    work = base / params_digest(dict(plan.values))
    rank0 = int(os.environ.get("RANK", "0")) == 0
    lock = exclusive_lock(base.with_name(f"{base.name}.lock"), f"stage {plan.id}") if rank0 \
        else contextlib.nullcontext()
    with lock:
        with stage_run(plan.identity, work, world_size=world_size) as run:
            yield run, work
        if rank0:
            shutil.rmtree(base, ignore_errors=True)
