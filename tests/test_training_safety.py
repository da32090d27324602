"""Training never reports a wrong result as success (issue 9): divergence fails the stage, resume keeps the numbers.

In-process runs of the tiny real model from test_training (no DeepSpeed), 4 optimizer steps each.
"""

from __future__ import annotations

import json
import math
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import TrainerCallback

from jarvis import tracking
from jarvis.data.collate import Collator
from jarvis.training import JarvisTrainer, TrainingDiverged, last_checkpoint, run_training, strict_json
from test_training import _load_weights, tiny_model, tiny_samples, tiny_settings

# The numbers a resume must reproduce exactly (timings excepted: they are measured, not computed).
EXACT = ("loss", "loss_ntp", "loss_jepa", "jepa_fraction", "train_loss", "train_samples", "steps", "global_batch")


@pytest.fixture(autouse=True)
def _single_process(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGUSR1)}
    yield
    for s, handler in saved.items():  # a preempted run leaves its handlers installed on purpose
        signal.signal(s, handler)


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One sqlite store for the module: a fresh DB per test costs seconds (schema migration)."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlruns') / 'mlflow.db'}"


def _train(base: Path, settings: Any = None, samples: list[dict[str, torch.Tensor]] | None = None,
           run: Any = None, **kwargs: Any) -> dict[str, Any]:
    return run_training(tiny_model(), samples if samples is not None else tiny_samples(16), Collator(pad_token_id=0),
                        settings or tiny_settings(), base / "runs" / "model", base / "_work", run, teardown=False,
                        **kwargs)


def _no_outputs(base: Path) -> bool:
    runs = base / "runs"
    return not any((runs / n).exists() for n in ("model", "metrics.json", "history.jsonl"))


_uninterrupted: dict[int, tuple[dict[str, Any], dict[str, torch.Tensor]]] = {}


def uninterrupted(tmp_path_factory: pytest.TempPathFactory, logging_steps: int) -> tuple[dict[str, Any], Any]:
    if logging_steps not in _uninterrupted:
        base = tmp_path_factory.mktemp(f"straight{logging_steps}")
        metrics = _train(base, tiny_settings(logging_steps=logging_steps, jepa_skip_prob=0.5))
        _uninterrupted[logging_steps] = metrics, _load_weights(base / "runs" / "model")
    return _uninterrupted[logging_steps]


def _assert_same_run(got: dict[str, Any], want: dict[str, Any]) -> None:
    for key in EXACT:
        assert got[key] == want[key], key
    assert got["samples_per_second"] > 0
    assert got["samples_per_second"] == pytest.approx(got["train_samples"] / got["train_seconds"])


def _assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# ---- divergence ------------------------------------------------------------------------------------------------------


def test_infinite_learning_rate_fails_at_step_one_naming_the_weights(tmp_path: Path) -> None:
    # Before: exit 0, metrics.json "loss": 0.0, 7 non-finite saved tensors, NaN/Infinity in history.jsonl.
    with pytest.raises(TrainingDiverged, match=r"step 1: non-finite trainable weights .*projector"):
        _train(tmp_path, tiny_settings(learning_rate=math.inf))
    assert _no_outputs(tmp_path)
    assert last_checkpoint(tmp_path / "_work") is None  # nothing non-finite was checkpointed either


def test_poisoned_batch_fails_naming_the_loss(tmp_path: Path) -> None:
    samples = tiny_samples(16)
    for s in samples:
        s["pixel_values"] = torch.full_like(s["pixel_values"], float("nan"))
    with pytest.raises(TrainingDiverged, match=r"step 1: the training loss is non-finite \(nan\)"):
        _train(tmp_path, samples=samples)
    assert _no_outputs(tmp_path)


def test_non_finite_gradient_fails_naming_the_grad_norm(tmp_path: Path) -> None:
    class PoisonGradient(TrainerCallback):
        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, model: Any = None, **kw: Any) -> None:
            if state.global_step == 2:  # the third optimizer step
                model.projector.weight.grad[0, 0] = float("inf")

    with pytest.raises(TrainingDiverged, match=r"step 3: the gradient norm is non-finite"):
        _train(tmp_path, callbacks=[PoisonGradient()])
    assert _no_outputs(tmp_path)


def _identity(exp: str, values: dict[str, Any]) -> tracking.RunIdentity:
    return tracking.RunIdentity(experiment=exp, run_name=f"{exp}/pretrain",
                                tags=(("jarvis.stage_id", f"pretrain-{exp}"),), values=values)


def test_divergence_marks_the_mlflow_run_failed(tmp_path: Path, mlflow_uri: str,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    work = tmp_path / "_work"
    with pytest.raises(TrainingDiverged), tracking.stage_run(_identity("diverge", {"lr": "inf"}), work) as run:
        run_id = run.info.run_id
        _train(tmp_path, tiny_settings(learning_rate=math.inf, logging_steps=1), run=run)
    client = mlflow.MlflowClient(mlflow_uri)
    got = client.get_run(run_id)
    assert got.info.status == "FAILED"
    assert all(math.isfinite(v) for v in got.data.metrics.values())  # nothing of the diverged step was logged


def test_history_is_strict_json(tmp_path: Path) -> None:
    _train(tmp_path)
    for line in (tmp_path / "runs" / "history.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"non-JSON constant {c} in history.jsonl"))
    json.loads((tmp_path / "runs" / "metrics.json").read_text(), parse_constant=lambda c: pytest.fail(c))
    with pytest.raises(TrainingDiverged, match="history.jsonl"):  # the writer refuses NaN/Infinity tokens
        strict_json({"loss": float("nan")}, "history.jsonl")


# ---- resume ----------------------------------------------------------------------------------------------------------


class _CrashInFinalSave(JarvisTrainer):
    """The process dies while writing the declared model, after the last checkpoint (the issue's case)."""

    def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
        if not _internal_call:
            raise RuntimeError("killed during the final save")
        super().save_model(output_dir, _internal_call)


def test_resume_after_a_crash_in_the_final_save_keeps_the_numbers(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Before: the 0-step resume wrote train_loss 0.0 and samples_per_second 0.0.
    want, want_weights = uninterrupted(tmp_path_factory, 1)
    settings = tiny_settings(logging_steps=1, jepa_skip_prob=0.5)
    with pytest.raises(RuntimeError, match="final save"):
        _train(tmp_path, settings, trainer_cls=_CrashInFinalSave)
    assert last_checkpoint(tmp_path / "_work").name == "checkpoint-4"
    got = _train(tmp_path, settings)
    _assert_same_run(got, want)
    _assert_same_weights(_load_weights(tmp_path / "runs" / "model"), want_weights)


def test_truncated_last_checkpoint_falls_back_and_keeps_the_numbers(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Before: a truncated trainer_state.json in the last checkpoint failed every rerun until deleted by hand.
    want, want_weights = uninterrupted(tmp_path_factory, 1)
    settings = tiny_settings(logging_steps=1, jepa_skip_prob=0.5)
    with pytest.raises(RuntimeError, match="final save"):
        _train(tmp_path, settings, trainer_cls=_CrashInFinalSave)
    state = tmp_path / "_work" / "checkpoint-4" / "trainer_state.json"
    state.write_text(state.read_text()[:100])
    with caplog.at_level("WARNING", logger="jarvis.training"):
        got = _train(tmp_path, settings)
    assert "falling back past checkpoint" in caplog.text and "resuming from" not in caplog.text.split("falling")[0]
    _assert_same_run(got, want)  # steps 3-4 retrained from checkpoint-2: same losses, train_loss included
    _assert_same_weights(_load_weights(tmp_path / "runs" / "model"), want_weights)


def test_preemption_mid_interval_resumes_to_the_same_numbers(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # logging_steps 2 and a preemption checkpoint at step 3: the open log interval (step 3) is carried over, so
    # the loss logged at step 4 is the mean of steps 3 and 4, as in the uninterrupted run.
    want, want_weights = uninterrupted(tmp_path_factory, 2)
    settings = tiny_settings(logging_steps=2, jepa_skip_prob=0.5)

    class SignalAtStep2(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == 2:
                os.kill(os.getpid(), signal.SIGUSR1)

    with pytest.raises(SystemExit):
        _train(tmp_path, settings, callbacks=[SignalAtStep2()])
    assert last_checkpoint(tmp_path / "_work").name == "checkpoint-3"
    got = _train(tmp_path, settings)
    _assert_same_run(got, want)
    _assert_same_weights(_load_weights(tmp_path / "runs" / "model"), want_weights)


def test_checkpoint_of_other_settings_is_discarded(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(RuntimeError, match="final save"):
        _train(tmp_path, tiny_settings(), trainer_cls=_CrashInFinalSave)
    with caplog.at_level("WARNING", logger="jarvis.training"):
        got = _train(tmp_path, tiny_settings(learning_rate=5e-3))
    assert "discarding checkpoint" in caplog.text
    assert got["train_samples"] == 16  # all 4 steps retrained, nothing resumed


def test_resumed_run_logs_one_mlflow_point_per_step(tmp_path: Path, mlflow_uri: str,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: the replayed steps were logged again (19 `loss` points for 16 steps).
    import mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    settings = tiny_settings(logging_steps=1, save_steps=2)
    work = tmp_path / "_work"

    class DieBeforeStep4(TrainerCallback):
        def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if state.global_step == 3:  # step 3 is logged, the last checkpoint is step 2
                raise RuntimeError("node lost")

    with pytest.raises(RuntimeError, match="node lost"), \
            tracking.stage_run(_identity("resume", {"a": 1}), work) as run:
        run_id = run.info.run_id
        _train(tmp_path, settings, run=run, callbacks=[DieBeforeStep4()])
    with tracking.stage_run(_identity("resume", {"a": 1}), work) as run:
        assert run.info.run_id == run_id
        metrics = _train(tmp_path, settings, run=run)
    client = mlflow.MlflowClient(mlflow_uri)
    for key in ("loss", "loss_ntp", "grad_norm", "learning_rate"):
        assert [m.step for m in client.get_metric_history(run_id, key)] == [1, 2, 3, 4], key
    assert client.get_run(run_id).info.status == "FINISHED"
    history = [json.loads(line) for line in (tmp_path / "runs" / "history.jsonl").read_text().splitlines()]
    assert [h["step"] for h in history if "loss" in h] == [1, 2, 3, 4]
    assert metrics["steps"] == 4


def test_text_pretraining_divergence_fails_naming_step_and_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    # Stage 0 (text pretraining of the tiny LM inside `download`) has its own loop: same guard.
    from types import SimpleNamespace

    from transformers import LlamaConfig, LlamaForCausalLM

    from jarvis.stages import text_pretrain

    monkeypatch.setattr(text_pretrain, "_examples",
                        lambda tok, path, max_length, *limits: ([([1, 2, 3, 4], [1, 2, 3, 4])] * 4, {}))
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, vocab_size=32))
    with pytest.raises(TrainingDiverged, match=r"text pretraining diverged at step 1: non-finite weight"):
        text_pretrain.pretrain_text(model, SimpleNamespace(pad_token_id=0), Path("unused"), steps=3, batch_size=2,
                                    learning_rate=math.inf, seed=0)
    # A finite learning rate whose AdamW step overflows float32 inside torch: the same error, not a RuntimeError.
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=2, vocab_size=32))
    with pytest.raises(TrainingDiverged, match=r"text pretraining diverged at step 2: the optimizer update overflows"):
        text_pretrain.pretrain_text(model, SimpleNamespace(pad_token_id=0), Path("unused"), steps=30, batch_size=2,
                                    learning_rate=1.0e38, seed=0)


def _text_corpus(tmp_path: Path, long_words: int) -> tuple[Any, Path]:
    """A word-level tokenizer with the vicuna template and three conversations; ``long`` has a long answer."""
    from jarvis.data.tokenizer import build_tokenizer

    answers = {"short1": "a red square", "short2": "the square is red", "long": " ".join(["red"] * long_words)}
    convs = [{"id": k, "conversations": [{"from": "human", "value": "<image>\nwhat is it"},
                                          {"from": "gpt", "value": v}]} for k, v in answers.items()]
    path = tmp_path / "instruct.json"
    path.write_text(json.dumps(convs))
    tok = build_tokenizer(["what is it", "a red square", "the square is red", " red"], 64, "vicuna_v1")
    return tok, path


def test_text_pretraining_counts_truncation_per_sample_and_applies_the_threshold(tmp_path: Path) -> None:
    # Before: stage 0 cut every conversation at max_length=256 without counting what it removed, and silently
    # skipped conversations left without supervision; the counts reached neither the manifest nor MLflow.
    from jarvis.stages import text_pretrain

    tok, path = _text_corpus(tmp_path, long_words=40)
    full, _ = text_pretrain._examples(tok, path, 10_000)
    lengths = {len(ids) for ids, _ in full}
    max_length = sorted(lengths)[-2] + 2  # only the long conversation is cut
    supervised = [sum(t != -100 for t in labels) for _, labels in full]
    examples, stats = text_pretrain._examples(tok, path, max_length, 0.0, 1.0)
    kept = [sum(t != -100 for t in labels) for _, labels in examples]
    lost = sum(supervised) - sum(kept)
    assert lost > 0
    assert stats["text_data/truncation/samples"] == 1.0
    assert stats["text_data/truncation/supervised_tokens"] == float(sum(supervised))
    assert stats["text_data/truncation/supervised_tokens_lost"] == float(lost)
    assert stats["text_data/truncation/fraction"] == pytest.approx(lost / sum(supervised))
    assert stats["text_data/encode/dropped"] == 0.0
    # the dataset-level threshold: the same share refused, naming the sample
    with pytest.raises(ValueError, match=r"max_truncated_fraction.*'long'"):
        text_pretrain._examples(tok, path, max_length, 0.0, lost / sum(supervised) / 2)


def test_text_pretraining_counts_conversations_left_without_supervision(tmp_path: Path) -> None:
    from jarvis.stages import text_pretrain

    tok, path = _text_corpus(tmp_path, long_words=40)
    full, _ = text_pretrain._examples(tok, path, 10_000)
    prompt = min(labels.index(next(t for t in labels if t != -100)) for _, labels in full)
    with pytest.raises(ValueError, match=r"dropped 3/3 .*no_supervised_tokens"):
        text_pretrain._examples(tok, path, prompt, 0.0, 1.0)  # every answer cut away: counted, over the threshold


# ---- strict outputs --------------------------------------------------------------------------------------------------


def test_json_artifacts_refuse_nan_and_write_nothing(tmp_path: Path) -> None:
    # Before: write_json_atomic wrote `NaN`/`Infinity` (not JSON) into manifests, metrics.json and scores.json.
    from jarvis.io import StageFailed, write_json_atomic

    for bad in (math.nan, math.inf, -math.inf):
        with pytest.raises(StageFailed, match=r"refusing to write .*m\.json: it holds a non-finite number"):
            write_json_atomic(tmp_path / "m.json", {"a": {"loss": bad}})
    assert list(tmp_path.iterdir()) == []  # neither the file nor a temp file
    write_json_atomic(tmp_path / "m.json", {"loss": 1.5, "n": None})
    assert json.loads((tmp_path / "m.json").read_text()) == {"loss": 1.5, "n": None}


def test_final_metrics_with_nan_fail_the_run_instead_of_reaching_mlflow(tmp_path: Path, mlflow_uri: str,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    import mlflow

    from jarvis.io import StageFailed

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_uri)
    with pytest.raises(StageFailed, match=r"non-finite metrics to MLflow: score/b"), \
            tracking.stage_run(_identity("nanmetric", {"x": "1"}), tmp_path / "_work") as run:
        run_id = run.info.run_id
        tracking.log_final_metrics({"score/a": 1.0, "score/b": math.nan, "note": "text"}, prefix="")
    got = mlflow.MlflowClient(mlflow_uri).get_run(run_id)
    assert got.info.status == "FAILED" and got.data.metrics == {}


def test_report_loss_history_refuses_nan(tmp_path: Path) -> None:
    from jarvis.report import read_loss_history

    path = tmp_path / "history.jsonl"
    path.write_text('{"step": 1, "loss_ntp": 2.0}\n{"step": 2, "loss_ntp": NaN}\n')
    with pytest.raises(ValueError, match=r"history\.jsonl: line 2: not strict JSON"):
        read_loss_history(path)
