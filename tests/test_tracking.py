"""MLflow tracking: store location, names, params/tags, resume into the same run, rank gating, run status."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from jarvis import tracking

PARAMS = {"seed": 42, "models": {"llm": {"hidden": 32, "layers": [1, 2]}}, "jepa": {"mask": {"scale": [0.15, 0.2]}},
          "blocks": [{"a": 1}, {"a": 2}], "empty": {}}


@pytest.fixture(scope="module")
def shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One project root per module: creating a sqlite store runs the schema migration (seconds)."""
    root = tmp_path_factory.mktemp("project")
    (root / "params.yaml").write_text("seed: 42\n")
    return root


def _isolate(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("JARVIS_ROOT", str(root))
    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_NESTED_RUN", "RANK", "WORLD_SIZE", "SLURM_JOB_ID",
                 "SLURM_ARRAY_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    return root


@pytest.fixture()
def project(shared_root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The shared project root, no inherited MLflow/rank env. Tests use their own experiment names."""
    return _isolate(shared_root, monkeypatch)


@pytest.fixture()
def fresh_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    return _isolate(tmp_path, monkeypatch)


def _client(root: Path):  # noqa: ANN202 -- mlflow type, imported lazily
    from mlflow import MlflowClient

    return MlflowClient(tracking.tracking_uri(root))


def _runs(root: Path, experiment: str) -> list:
    client = _client(root)
    exp = client.get_experiment_by_name(tracking.experiment_name(experiment))
    return [] if exp is None else client.search_runs([exp.experiment_id])


def test_store_defaults_to_an_absolute_sqlite_db_under_the_root(fresh_project: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    assert tracking.tracking_uri() == f"sqlite:///{fresh_project.resolve()}/mlruns/mlflow.db"
    assert tracking.tracking_uri().startswith("sqlite:////")  # four slashes: absolute path
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5151")
    assert tracking.tracking_uri() == "http://127.0.0.1:5151"


def _ident(experiment: str, params: dict, stage: str = "pretrain") -> tracking.RunIdentity:
    """What a StagePlan hands tracking (tests/test_plan.py checks real plans)."""
    return tracking.RunIdentity(experiment=experiment, run_name=f"{experiment}/{stage}",
                                tags=(("jarvis.stage_id", f"{stage}-{experiment}"), ("jarvis.stage", stage)),
                                values=params)


def test_names() -> None:
    assert tracking.experiment_name("jarvis-paper") == "jarvis-paper"  # the study's name, as params.yaml gives it


def test_flatten_params_by_hand() -> None:
    flat = tracking.flatten_params(PARAMS)
    assert flat == {
        "cfg.seed": "42",
        "cfg.models.llm.hidden": "32",
        "cfg.models.llm.layers": "[1, 2]",
        "cfg.jepa.mask.scale": "[0.15, 0.2]",
        "cfg.blocks.0.a": "1",
        "cfg.blocks.1.a": "2",
        "cfg.empty": "{}",
    }
    long = tracking.flatten_params({"x": "y" * 7000})["cfg.x"]
    assert len(long) <= 6000 and long.endswith("[truncated]")


def test_params_digest_is_order_independent_and_value_sensitive() -> None:
    reordered = {k: PARAMS[k] for k in reversed(list(PARAMS))}
    assert tracking.params_digest(PARAMS) == tracking.params_digest(reordered)
    assert tracking.params_digest(PARAMS) != tracking.params_digest({**PARAMS, "seed": 43})
    assert len(tracking.params_digest(PARAMS)) == 16


def test_init_store_creates_db_and_experiments_once(project: Path) -> None:
    ids = tracking.init_store(["init_a", "init_b"])
    assert (project / "mlruns" / "mlflow.db").is_file()
    assert tracking.init_store(["init_a", "init_b"]) == ids  # idempotent
    exp = _client(project).get_experiment(ids["init_a"])
    assert exp.name == "init_a"
    # store-relative (jarvis.artifact_store): no path of this machine is recorded
    assert exp.artifact_location == "jarvis-store:artifacts/init_a"
    assert str(project) not in exp.artifact_location


def test_store_relative_locations_resolve_against_the_store_in_use(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    from jarvis import artifact_store

    uri = "jarvis-store:artifacts/exp/run1/artifacts"
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    # registered through the installed entry point (pyproject.toml), resolved against the tracking URI MLflow passes
    repo = get_artifact_repository(uri, tracking_uri=f"sqlite:///{tmp_path}/a/mlflow.db")
    assert isinstance(repo, artifact_store.StoreArtifactRepository)
    assert Path(repo.artifact_dir) == tmp_path / "a" / "artifacts" / "exp" / "run1" / "artifacts"
    # ...or, in a process that has none (the UI server), against MLFLOW_TRACKING_URI
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/b/mlflow.db")
    assert artifact_store.resolve(uri) == tmp_path / "b" / "artifacts" / "exp" / "run1" / "artifacts"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    with pytest.raises(RuntimeError, match="MLFLOW_TRACKING_URI=sqlite"):
        artifact_store.resolve(uri)
    for bad in ("../x", "/abs/x", ""):
        with pytest.raises(ValueError, match="relative path inside the store"):
            artifact_store.location(bad)
    with pytest.raises(ValueError, match="relative path inside the store"):
        artifact_store.resolve("jarvis-store:artifacts/../../etc", f"sqlite:///{tmp_path}/a/mlflow.db")
    # a tracking server picks its own (proxied, location-independent) root
    assert tracking.artifact_location("exp") is None


def test_stage_run_logs_params_tags_and_resumes(fresh_project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = fresh_project
    import mlflow

    subprocess.run(["git", "init", "-q"], cwd=project, check=True)
    subprocess.run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "x"],
                   cwd=project, check=True)
    monkeypatch.setenv("SLURM_JOB_ID", "1234")
    work = project / "_work" / "tiny" / "pretrain"
    with tracking.stage_run(_ident("tiny", PARAMS), work, world_size=2) as run:
        assert mlflow.active_run().info.run_id == run.info.run_id
        mlflow.log_metrics({"loss": 2.0}, step=1)
    first_id = run.info.run_id
    assert json.loads((work / tracking.RUN_FILE).read_text())["run_id"] == first_id
    # The same stage again (a resumed job): same run, new metrics appended.
    with tracking.stage_run(_ident("tiny", PARAMS), work, world_size=2) as run:
        assert run.info.run_id == first_id
        mlflow.log_metrics({"loss": 1.0}, step=2)
    runs = _runs(project, "tiny")
    assert len(runs) == 1
    got = runs[0]
    assert got.info.run_name == "tiny/pretrain" and got.info.status == "FINISHED"
    assert got.data.params["cfg.models.llm.hidden"] == "32"
    tags = got.data.tags
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=project, capture_output=True, text=True).stdout.strip()
    assert tags["jarvis.git_commit"] == tags["mlflow.source.git.commit"] == head
    assert tags["jarvis.git_dirty"] == "false"
    assert tags["jarvis.params_digest"] == tracking.params_digest(PARAMS)
    assert (tags["jarvis.stage_id"], tags["jarvis.world_size"], tags["jarvis.slurm_job_id"]) == ("pretrain-tiny", "2",
                                                                                               "1234")
    history = _client(project).get_metric_history(first_id, "loss")
    assert [(m.step, m.value) for m in history] == [(1, 2.0), (2, 1.0)]


def test_work_dir_of_other_params_is_refused(project: Path, tmp_path: Path) -> None:
    work = tmp_path / "_work"
    with tracking.stage_run(_ident("refuse", PARAMS), work):
        pass
    with pytest.raises(RuntimeError, match="other params"):
        with tracking.stage_run(_ident("refuse", {**PARAMS, "seed": 1}), work):
            pass


def test_non_zero_rank_gets_no_run_and_writes_nothing(fresh_project: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RANK", "1")
    with tracking.stage_run(_ident("tiny", PARAMS), fresh_project / "_work") as run:
        assert run is None
    assert not (fresh_project / "mlruns").exists()
    assert not (fresh_project / "_work" / tracking.RUN_FILE).exists()


@pytest.mark.parametrize(("exc", "status"), [(SystemExit(143), "KILLED"), (ValueError("boom"), "FAILED"),
                                             (SystemExit(0), "FINISHED")])
def test_run_status_follows_the_exit(project: Path, tmp_path: Path, exc: BaseException, status: str) -> None:
    experiment = f"status_{status.lower()}"
    with pytest.raises(type(exc)):
        with tracking.stage_run(_ident(experiment, PARAMS), tmp_path / "_work"):
            raise exc
    assert _runs(project, experiment)[0].info.status == status


def test_trainer_env_refuses_a_second_run_owner(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_RUN_ID", "abc")
    with pytest.raises(RuntimeError, match="MLFLOW_RUN_ID"):
        tracking.configure_trainer_env()
    monkeypatch.delenv("MLFLOW_RUN_ID")
    monkeypatch.delenv("HF_MLFLOW_LOG_ARTIFACTS", raising=False)
    tracking.configure_trainer_env()
    import os

    assert os.environ["HF_MLFLOW_LOG_ARTIFACTS"] == "FALSE" and os.environ["MLFLOW_FLATTEN_PARAMS"] == "TRUE"


@pytest.mark.slow
def test_trainer_logs_into_the_stage_run(project: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The real Trainer path (in-process, no DeepSpeed): one run, holding our params and the component losses."""
    from jarvis.data.collate import Collator
    from jarvis.training import run_training
    from test_training import tiny_model, tiny_samples, tiny_settings

    monkeypatch.setenv("MLFLOW_FLATTEN_PARAMS", "TRUE")  # restored after the test (run_training sets it)
    monkeypatch.setenv("HF_MLFLOW_LOG_ARTIFACTS", "FALSE")
    work = tmp_path / "_work"
    with tracking.stage_run(_ident("trainer", PARAMS), work) as run:
        run_training(tiny_model(), tiny_samples(8), Collator(pad_token_id=0), tiny_settings(max_steps=2),
                     tmp_path / "runs" / "model", work, run)
    runs = _runs(project, "trainer")
    assert [r.info.run_name for r in runs] == ["trainer/pretrain"]
    data = runs[0].data
    assert {"loss", "loss_ntp", "loss_jepa", "jepa_fraction", "grad_norm", "learning_rate", "samples_per_second",
            "train_loss", "final/loss"} <= set(data.metrics)
    assert data.params["cfg.seed"] == "42" and data.params["learning_rate"] == "0.01"  # ours + the Trainer's
    assert not list((project / "mlruns").rglob("*.safetensors"))  # checkpoints not uploaded


def test_a_training_corpus_is_logged_as_a_run_input(fresh_project: Path) -> None:
    """Name, content digest and counts of the data a run read, as an MLflow dataset input (read back from the store)."""
    import hashlib

    data = fresh_project / "data" / "synth" / "pretrain" / "captions.json"
    data.parent.mkdir(parents=True)
    data.write_text('[{"id": "a"}]')
    with tracking.stage_run(_ident("inputs", PARAMS), fresh_project / "_work" / "inputs") as run:
        tracking.log_dataset(data, name="synth/pretrain/captions.json", context="pretrain",
                             counts={"samples": 1, "validation/dropped": 0})
    got = _client(fresh_project).get_run(run.info.run_id).inputs.dataset_inputs
    assert len(got) == 1
    ds = got[0].dataset
    assert (ds.name, ds.digest) == ("synth/pretrain/captions.json", hashlib.sha256(data.read_bytes()).hexdigest()[:16])
    tags = {t.key: t.value for t in got[0].tags}
    assert tags["mlflow.data.context"] == "pretrain" and tags["samples"] == "1" and tags["validation/dropped"] == "0"
