"""Training engine: settings → TrainingArguments, the JEPA step, log reduction, outputs, DeepSpeed, preemption/resume.

Fast tests run a real tiny ``JarvisForCausalLM`` in-process (no DeepSpeed). The slow ones launch this file under
torchrun (2 CPU processes, gloo, ZeRO-2/3; stack-facts §3): see ``main()`` at the bottom.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from jarvis import tracking  # noqa: E402
from jarvis.data.collate import Collator, JepaMaskCollator  # noqa: E402
from jarvis.launch import free_port as _free_port  # noqa: E402
from jarvis.masking import MaskSpec, draw_skip, sample_block_masks  # noqa: E402
from jarvis.model.attention import kept_positions  # noqa: E402
from jarvis.model.embedding import image_token_mask, visual_span  # noqa: E402
from jarvis.seeding import make_generator, seed_everything  # noqa: E402
from jarvis.training import (  # noqa: E402
    JarvisTrainer,
    PreemptionCallback,
    TrainSettings,
    context_grid,
    deepspeed_dir,
    last_checkpoint,
    run_training,
    training_arguments,
    write_jarvis_state,
    zero_totals,
)

IMAGE_ID = 63  # last id of the tiny vocabulary
GRID = 8  # 32 px / patch 4
CAPTION = 6
MASKS = MaskSpec(num_targets=2, target_scale=(0.15, 0.2), context_scale=(0.85, 1.0), min_keep=4)
DS_SHARED_KEYS = ("train_micro_batch_size_per_gpu", "train_batch_size", "gradient_accumulation_steps",
                  "gradient_clipping")


# ---- tiny real model and data ----------------------------------------------------------------------------------


def _tower(model_type: str) -> dict[str, Any]:
    config = {"model_type": model_type, "image_size": 32, "patch_size": 4, "hidden_size": 16,
              "num_hidden_layers": 1, "num_attention_heads": 2, "intermediate_size": 32}
    return {"library": "transformers", "config": config, "feature_layer": -1}


def tiny_model(jepa: bool = True, seed: int = 0) -> torch.nn.Module:
    """A real JarvisForCausalLM (Llama 2x32, CLIP-style context tower, DINOv2-style target), stage-1 freeze."""
    from jarvis.model.configuration import JarvisConfig
    from jarvis.model.freeze import STAGE1_GROUPS, set_trainable
    from jarvis.model.modeling import JarvisForCausalLM

    text = {"model_type": "llama", "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "num_key_value_heads": 2, "intermediate_size": 64, "vocab_size": 64}
    config = JarvisConfig(text_config=text, vision_config=_tower("clip_vision_model"),
                          target_config=_tower("dinov2") if jepa else None, projector_type="linear",
                          image_token_id=IMAGE_ID, jepa_layer=1, jepa_head_type="linear")
    seed_everything(seed)  # right before construction: identical init on every rank and every run
    model = JarvisForCausalLM(config)
    set_trainable(model, STAGE1_GROUPS)
    return model


def tiny_samples(n: int = 16, seed: int = 0, with_image: bool = True) -> list[dict[str, torch.Tensor]]:
    """Stage-1 style samples: N image ids (label -100) + a caption, as LlavaDataset emits them."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        caption = torch.randint(1, IMAGE_ID - 1, (CAPTION,), generator=g)
        if with_image:
            pixels = torch.randn(3, 32, 32, generator=g)
            out.append({"index": i, "input_ids": torch.cat([torch.full((GRID * GRID,), IMAGE_ID), caption]),
                        "labels": torch.cat([torch.full((GRID * GRID,), -100), caption]),
                        "pixel_values": pixels, "pixel_values_target": pixels})
        else:
            out.append({"index": i, "input_ids": caption, "labels": caption.clone()})
    return out


def tiny_settings(**over: Any) -> TrainSettings:
    """Settings of a tiny CPU stage; ``world_size`` and ``grad_accum`` are given as the engine reads them and turned
    into the recipe's own fields (nproc on one node; global batch = per-device x accumulation x world)."""
    base: dict[str, Any] = dict(
        stage="pretrain", seed=7, learning_rate=1e-2, per_device_batch=2, grad_accum=2, world_size=1, max_steps=4,
        epochs=1.0, warmup_ratio=0.0, lr_scheduler="cosine", weight_decay=0.0, max_grad_norm=1.0, bf16=False,
        gradient_checkpointing=False, zero_stage=None, save_steps=2, logging_steps=2, trainable=["projector"],
        image_mode="crop", use_feature_cache=False, max_length=64, group_by_modality_length=False, jepa_skip_prob=0.0,
        mask_spec=MASKS)
    base.update(over)
    world, accum = base.pop("world_size"), base.pop("grad_accum")
    base.update(nodes=1, nproc=world, global_batch=base["per_device_batch"] * accum * world)
    if base["max_steps"] is None:
        base["max_steps"] = -1
    return TrainSettings(**base)


def _load_weights(model_dir: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(model_dir / "model.safetensors"))


# ---- settings, arguments, DeepSpeed JSONs ------------------------------------------------------------------------


def test_settings_reject_bad_values() -> None:
    with pytest.raises(ValueError, match="zero_stage"):
        tiny_settings(zero_stage=4)
    with pytest.raises(ValueError, match="jepa_skip_prob"):
        tiny_settings(jepa_skip_prob=1.5)
    with pytest.raises(ValueError, match="warmup_ratio"):
        tiny_settings(warmup_ratio=1.0)
    with pytest.raises(ValueError, match="global_batch"):  # accumulation is derived, never configured
        tiny_settings(grad_accum=0)
    with pytest.raises(ValueError, match="use -1"):
        tiny_settings(max_steps=0)
    s = tiny_settings(world_size=1, per_device_batch=3, grad_accum=4)
    assert (s.global_batch, s.grad_accum, s.world_size) == (12, 4, 1)


def test_training_arguments_map_every_setting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    s = tiny_settings(learning_rate=2e-5, per_device_batch=3, grad_accum=5, max_steps=None, epochs=2.0,
                      warmup_ratio=0.03, lr_scheduler="cosine", weight_decay=0.1, max_grad_norm=0.5,
                      save_steps=11, logging_steps=3, num_workers=0)
    args = training_arguments(s, tmp_path, run_name="e/pretrain")
    assert (args.learning_rate, args.per_device_train_batch_size, args.gradient_accumulation_steps) == (2e-5, 3, 5)
    assert (args.num_train_epochs, args.max_steps, args.warmup_steps) == (2.0, -1, 0.03)
    assert (args.weight_decay, args.max_grad_norm, args.save_steps, args.logging_steps) == (0.1, 0.5, 11, 3)
    assert args.lr_scheduler_type.value == "cosine"
    assert args.report_to == ["mlflow"] and args.run_name == "e/pretrain"
    assert args.use_cpu is (not torch.cuda.is_available()) and args.deepspeed is None
    assert args.ddp_backend is None  # gloo only when WORLD_SIZE > 1 (stack-facts §3)
    assert (args.seed, args.data_seed, args.remove_unused_columns) == (7, 7, False)
    assert args.output_dir == str(tmp_path)


def test_training_arguments_refuse_a_different_world_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(RuntimeError, match="world_size 8"):
        training_arguments(tiny_settings(world_size=8), tmp_path)


def test_deepspeed_jsons_leave_shared_values_to_the_trainer() -> None:
    for stage in (2, 3):
        cfg = json.loads((deepspeed_dir() / f"zero{stage}.json").read_text())
        assert cfg["zero_optimization"]["stage"] == stage
        assert "optimizer" not in cfg and "scheduler" not in cfg  # the Trainer's AdamW + schedule (paper-spec §9)
        for key in DS_SHARED_KEYS:
            assert cfg[key] == "auto", key
        assert cfg["bf16"]["enabled"] == "auto" and cfg["fp16"]["enabled"] == "auto"
        # No "auto" that needs model.config.hidden_size (JarvisConfig keeps it in text_config).
        assert "auto" not in json.dumps(cfg["zero_optimization"])
    zero3 = json.loads((deepspeed_dir() / "zero3.json").read_text())
    assert zero3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True


# ---- the JEPA step ------------------------------------------------------------------------------------------------


def _trainer(tmp_path: Path, settings: TrainSettings, monkeypatch: pytest.MonkeyPatch) -> JarvisTrainer:
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    return JarvisTrainer(model=tiny_model(), args=training_arguments(settings, tmp_path), settings=settings,
                         data_collator=Collator(pad_token_id=0), train_dataset=tiny_samples(4))


def test_jepa_inputs_are_the_seeded_masks_and_coin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    s = tiny_settings(jepa_skip_prob=0.5)
    trainer = _trainer(tmp_path, s, monkeypatch)
    assert trainer.grid == context_grid(trainer.model) == (GRID, GRID)
    collate = trainer.data_collator  # the trainer's own: the Collator wrapped to add the block masks
    assert isinstance(collate, JepaMaskCollator)
    samples = tiny_samples(3)
    batch = collate(samples)
    # Hand-built expectation: the masks of (seed, stage, epoch 0, the samples' indices), whatever step asks.
    want = sample_block_masks((GRID, GRID), MASKS, 3, make_generator(s.seed, s.stage, "masks", 0, (0, 1, 2)))
    assert torch.equal(batch["jepa_context"], want.context) and torch.equal(batch["jepa_targets"], want.targets)
    # ...and the positions the step keeps, found beside them on the host (what the model finds itself on a CPU)
    span = visual_span(image_token_mask(batch["input_ids"], IMAGE_ID))
    assert torch.equal(batch["jepa_keep"], kept_positions(batch["attention_mask"], span, want.context, want.targets,
                                                          span[:, 1] > span[:, 0], batch["labels"]))
    assert batch["jepa_keep"].shape[1] < batch["input_ids"].shape[1]  # unattended visual tokens left out
    n_jepa = 0
    for step in range(12):
        trainer.state.global_step = step
        for micro in range(2):
            inputs = dict(batch)
            got = trainer.jepa_inputs(inputs, micro)
            assert "jepa_context" not in inputs and "jepa_targets" not in inputs  # taken out either way
            if draw_skip(s.seed, s.stage, step, micro, s.jepa_skip_prob):
                assert got == {}
                continue
            n_jepa += 1
            assert got["jepa_context"] is batch["jepa_context"] and got["jepa_targets"] is batch["jepa_targets"]
            assert got["jepa_keep"] is batch["jepa_keep"]
    assert 0 < n_jepa < 24  # skip_prob 0.5 over 24 draws: both kinds occur
    again = collate(samples)  # a resumed run builds the same micro-batch again: identical masks
    assert torch.equal(again["jepa_targets"], batch["jepa_targets"])
    collate.epoch = 1  # the same samples in a later epoch: other masks
    assert not torch.equal(collate(samples)["jepa_targets"], batch["jepa_targets"])
    collate.epoch = 0
    other = collate(tiny_samples(3)[::-1])  # other indices, other masks
    assert not torch.equal(other["jepa_targets"], batch["jepa_targets"])
    # No image in the micro-batch: plain NTP step, no masks.
    plain = collate(tiny_samples(2, with_image=False))
    assert "jepa_context" not in plain and trainer.jepa_inputs(plain, 0) == {}
    # A JEPA micro-batch whose collator drew no masks is refused, not trained as a plain step.
    trainer.state.global_step = next(t for t in range(50) if not draw_skip(s.seed, s.stage, t, 0, s.jepa_skip_prob))
    with pytest.raises(ValueError, match="without its block masks"):
        trainer.jepa_inputs(Collator(pad_token_id=0)(samples), 0)
    with pytest.raises(ValueError, match="carry no dataset 'index'"):
        collate([{k: v for k, v in x.items() if k != "index"} for x in samples])


def test_masks_are_the_same_in_dataloader_workers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sampled in two DataLoader workers or in the main process: the same masks, batch for batch."""
    trainer = _trainer(tmp_path, tiny_settings(), monkeypatch)
    data = tiny_samples(12)
    order = torch.randperm(12, generator=torch.Generator().manual_seed(3)).tolist()
    loaders = [torch.utils.data.DataLoader(data, batch_size=3, sampler=order, collate_fn=trainer.data_collator,
                                           num_workers=w, multiprocessing_context="fork" if w else None)
               for w in (0, 2)]
    main, workers = list(loaders[0]), list(loaders[1])
    assert len(main) == len(workers) == 4
    for a, b in zip(main, workers, strict=True):
        for key in ("jepa_context", "jepa_targets", "jepa_keep"):
            assert torch.equal(a[key], b[key]), key
    assert len({tuple(b["jepa_targets"].flatten().tolist()) for b in main}) > 1


def test_no_masks_without_a_mask_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = _trainer(tmp_path, tiny_settings(mask_spec=None), monkeypatch)
    assert not isinstance(trainer.data_collator, JepaMaskCollator)
    assert trainer.jepa_inputs(Collator(pad_token_id=0)(tiny_samples(2)), 0) == {}


def test_micro_steps_restart_at_each_optimizer_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    trainer = _trainer(tmp_path, tiny_settings(), monkeypatch)
    seen = []
    for step in (0, 0, 0, 1, 1, 5):
        trainer.state.global_step = step
        seen.append(trainer._next_micro_step())
    assert seen == [0, 1, 2, 0, 1, 0]


# ---- a whole in-process run -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("skip_prob", [0.0, 1.0])
def test_run_training_logs_components_and_writes_outputs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, skip_prob: float
) -> None:
    from jarvis.model.modeling import JarvisForCausalLM

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    model = tiny_model()
    out = tmp_path / "runs" / "pretrain" / "model"
    metrics = run_training(model, tiny_samples(16), Collator(pad_token_id=0), tiny_settings(jepa_skip_prob=skip_prob),
                           out, tmp_path / "_work", None)
    history = [json.loads(line) for line in (out.parent / "history.jsonl").read_text().splitlines()]
    logged = [h for h in history if "loss" in h]
    assert [h["step"] for h in logged] == [2, 4]
    for h in logged:
        assert {"grad_norm", "learning_rate", "samples_per_second", "loss_ntp", "jepa_fraction"} <= set(h)
        if skip_prob == 0.0:
            # Every micro-step is a JEPA step with weight 1: loss = mean(ntp + jepa) = mean ntp + mean jepa.
            assert h["jepa_fraction"] == 1.0
            assert h["loss"] == pytest.approx(h["loss_ntp"] + h["loss_jepa"], abs=1e-5)
        else:
            assert h["jepa_fraction"] == 0.0 and "loss_jepa" not in h
            assert h["loss"] == pytest.approx(h["loss_ntp"], abs=1e-5)
    saved = json.loads((out.parent / "metrics.json").read_text())
    assert saved == json.loads(json.dumps(metrics))
    assert saved["steps"] == 4 and saved["jepa_fraction"] == 1.0 - skip_prob
    assert saved["loss"] == logged[-1]["loss"] and saved["global_batch"] == 4
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth"))]  # no pickles in the declared output
    assert not list(out.parent.glob(".model*"))  # temp dirs renamed / removed
    reloaded = JarvisForCausalLM.from_pretrained(out)
    want = {k: v for k, v in model.state_dict().items()}
    for name, tensor in reloaded.state_dict().items():
        assert torch.equal(tensor, want[name]), name
    assert last_checkpoint(tmp_path / "_work").name == "checkpoint-4"


def _fake_checkpoint(d: Path, step: int, producer: str = "p") -> None:
    d.mkdir(exist_ok=True)
    (d / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    (d / "model.safetensors").write_bytes(b"x" * 10)
    write_jarvis_state(d, producer, step, zero_totals())


def test_last_checkpoint_skips_incomplete_unreadable_and_foreign(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    for n, complete in ((2, True), (4, True), (6, False)):
        d = tmp_path / f"checkpoint-{n}"
        d.mkdir()
        if complete:
            _fake_checkpoint(d, n)
        else:
            (d / "trainer_state.json").write_text(json.dumps({"global_step": n}))  # killed before the marker
    assert last_checkpoint(tmp_path, "p") == tmp_path / "checkpoint-4"
    assert last_checkpoint(tmp_path / "missing") is None
    # A truncated trainer_state.json (or a shorter weights file) in the newest: fall back, with a warning.
    state = tmp_path / "checkpoint-4" / "trainer_state.json"
    state.write_text(state.read_text()[:5])
    caplog.clear()
    with caplog.at_level("WARNING", logger="jarvis.training"):
        assert last_checkpoint(tmp_path, "p") == tmp_path / "checkpoint-2"
    assert "falling back past checkpoint" in caplog.text and "checkpoint-4" in caplog.text
    _fake_checkpoint(tmp_path / "checkpoint-4", 4)
    (tmp_path / "checkpoint-4" / "model.safetensors").write_bytes(b"x" * 3)
    assert last_checkpoint(tmp_path, "p") == tmp_path / "checkpoint-2"
    # Made by other settings: discarded, with a log line.
    caplog.clear()
    with caplog.at_level("WARNING", logger="jarvis.training"):
        assert last_checkpoint(tmp_path, "other") is None
    assert caplog.text.count("discarding checkpoint") == 2


def test_preemption_callback_records_signal_and_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import TrainerControl, TrainerState, TrainingArguments

    cb = PreemptionCallback(signals=(signal.SIGUSR1,))
    cb.install()
    try:
        args = TrainingArguments(output_dir="unused", use_cpu=True, report_to=[])
        control = cb.on_step_end(args, TrainerState(global_step=3), TrainerControl())
        assert not control.should_save and not control.should_training_stop
        os.kill(os.getpid(), signal.SIGUSR1)
        control = cb.on_step_end(args, TrainerState(global_step=4), TrainerControl())
        assert control.should_save and control.should_training_stop and cb.stopped_at == 4
        assert cb.exit_code == 128 + signal.SIGUSR1
    finally:
        cb.uninstall()
    assert signal.getsignal(signal.SIGUSR1) is signal.SIG_DFL


# ---- multi-process DeepSpeed (torchrun) ----------------------------------------------------------------------------


# A guard against a hung launcher, not a speed check: alone a two-process run takes 30-50 s, but in `make test` it shares
# the 2 cores with the other worker's pipeline jobs, and a ZeRO-3 run took 240 s there (CI of 493fa65).
TORCHRUN_LIMIT_S = 900


def _torchrun(out: Path, *extra: str, timeout: int = TORCHRUN_LIMIT_S) -> subprocess.CompletedProcess[str]:
    # A fresh launcher environment: in-process tests of this session leave the single-process dist variables
    # (ensure_dist_env), accelerate's and the Trainer's MLflow switches in os.environ; a real stage never
    # inherits them, and with them the child Trainer logged no per-step metrics to MLflow.
    leaked = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK")
    env = {k: v for k, v in os.environ.items()
           if k not in leaked and not k.startswith(("ACCELERATE_", "MLFLOW_", "HF_MLFLOW_", "TORCHELASTIC_"))}
    env.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1", JARVIS_ROOT=str(out),
               TORCH_EXTENSIONS_DIR=str(ROOT / ".cache" / "torch_extensions"), PYTHONPATH=str(ROOT / "src"))
    port = str(_free_port())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_addr=127.0.0.1",
           f"--master_port={port}", __file__, "--out", str(out), *extra]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    (out / "torchrun.log").write_text(proc.stdout + proc.stderr)
    return proc


def _ranks(out: Path) -> list[dict[str, Any]]:
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


# The two-process runs share one flag set; the ZeRO-2 run is made once and read by the run test and as the
# uninterrupted twin of the preemption test (a two-process torchrun is the slowest thing here: its gloo collectives
# stall when the ranks share the cores).
RUN_ARGS = ("--skip-prob", "0.5", "--experiment", "tiny")


@pytest.fixture(scope="module")
def zero2_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("zero2")
    proc = _torchrun(out, "--zero", "2", *RUN_ARGS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


@pytest.mark.slow
@pytest.mark.parametrize("zero", [2, 3])
def test_two_process_deepspeed_run(request: pytest.FixtureRequest, tmp_path: Path, zero: int) -> None:
    out = request.getfixturevalue("zero2_run") if zero == 2 else tmp_path
    if zero != 2:
        proc = _torchrun(out, "--zero", str(zero), *RUN_ARGS)
        assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = _ranks(out)
    assert r0["wrapper"] == r1["wrapper"] == "DeepSpeedEngine"
    assert r0["metrics"]["distributed_wrapper"] == "DeepSpeedEngine"
    assert r0["decisions"] == r1["decisions"] and len(r0["decisions"]) == 6 * 2  # same coin on both ranks
    assert {d[2] for d in r0["decisions"]} == {True, False}  # skip_prob 0.5 exercised both graphs
    assert r0["metrics"]["loss"] == r1["metrics"]["loss"]  # reduced across ranks
    if zero == 2:
        assert r0["param_digest"] == r1["param_digest"]  # replicated weights agree after the last step
    model_dir = out / "runs" / "model"
    weights = _load_weights(model_dir)  # ZeRO-3: gathered 16-bit weights on save
    assert weights["projector.weight"].shape == (32, 16) and torch.isfinite(weights["projector.weight"]).all()
    # MLflow: one run named <exp>/<stage> in jarvis/<exp>, with params and the component losses.
    from mlflow import MlflowClient

    # the child's store, named explicitly: in-process tests of this session leave MLFLOW_TRACKING_URI set
    # (mlflow.set_tracking_uri exports it), which tracking_uri() would prefer
    client = MlflowClient(f"sqlite:///{out}/mlruns/mlflow.db")
    exp = client.get_experiment_by_name("tiny")
    runs = client.search_runs([exp.experiment_id])
    assert [r.info.run_name for r in runs] == ["tiny/pretrain"]
    run = runs[0]
    assert {"loss", "loss_ntp", "loss_jepa", "jepa_fraction", "grad_norm", "learning_rate"} <= set(run.data.metrics)
    assert run.data.params["cfg.experiment"] == "tiny" and run.data.params["cfg.zero"] == str(zero)
    assert run.data.tags["jarvis.world_size"] == "2" and run.info.status == "FINISHED"


@pytest.mark.slow
def test_preempted_run_resumes_to_the_same_weights(tmp_path: Path, zero2_run: Path) -> None:
    straight, broken = zero2_run, tmp_path / "broken"
    broken.mkdir()
    args = ("--zero", "2", *RUN_ARGS)
    # SIGTERM reaches rank 0 only, at the end of step 2; the next step end (3, not a save step: save_steps is 2)
    # all-reduces the flag, so both ranks checkpoint at 3 and exit 128 + SIGTERM.
    first = _torchrun(broken, *args, "--kill-rank0-at", "2")
    assert first.returncode != 0
    log = (broken / "torchrun.log").read_text()
    assert log.count("preempted: checkpoint-3 saved") == 2 and "exitcode  : 143" in log
    assert last_checkpoint(broken / "_work").name == "checkpoint-3"
    killed = _ranks(broken)
    assert killed[0]["decisions"] == killed[1]["decisions"] and max(d[0] for d in killed[0]["decisions"]) == 2
    assert not (broken / "runs" / "model").exists() and not (broken / "runs" / "metrics.json").exists()
    second = _torchrun(broken, *args)
    assert second.returncode == 0, second.stderr[-3000:]
    a, b = _load_weights(straight / "runs" / "model"), _load_weights(broken / "runs" / "model")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name
    # The resumed session replayed exactly the coin draws of steps 3..5 of the straight run.
    assert _ranks(broken)[0]["decisions"] == [d for d in _ranks(straight)[0]["decisions"] if d[0] >= 3]
    # The resumed stage continued its MLflow run (one run, status FINISHED).
    from mlflow import MlflowClient

    client = MlflowClient(f"sqlite:///{broken}/mlruns/mlflow.db")  # explicit: see test_two_process_deepspeed_run
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"


# ---- torchrun entry point -----------------------------------------------------------------------------------------


class _RecordingTrainer(JarvisTrainer):
    instances: list[_RecordingTrainer] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.wrapper = ""
        _RecordingTrainer.instances.append(self)

    def compute_loss(self, model: torch.nn.Module, inputs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        self.wrapper = type(model).__name__
        return super().compute_loss(model, inputs, *args, **kwargs)


def main() -> None:
    from transformers import TrainerCallback

    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--zero", type=int, default=2)
    parser.add_argument("--skip-prob", type=float, default=0.5)
    parser.add_argument("--experiment", default="tiny")
    parser.add_argument("--kill-rank0-at", type=int, default=0)
    opts = parser.parse_args()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])

    class KillRank0(TrainerCallback):
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            if rank == 0 and state.global_step == opts.kill_rank0_at:
                os.kill(os.getpid(), signal.SIGTERM)

    settings = tiny_settings(world_size=world, max_steps=6, zero_stage=opts.zero, jepa_skip_prob=opts.skip_prob,
                             logging_steps=1)
    params = {"experiment": opts.experiment, "zero": opts.zero, "skip_prob": opts.skip_prob, "mask": vars(MASKS)}
    work = opts.out / "_work"
    result: dict[str, Any] = {}
    identity = tracking.RunIdentity(experiment=opts.experiment, run_name=f"{opts.experiment}/pretrain",
                                    tags=(("jarvis.stage_id", f"pretrain-{opts.experiment}"),), values=params)
    with tracking.stage_run(identity, work) as run:
        try:
            metrics = run_training(tiny_model(), tiny_samples(32), Collator(pad_token_id=0), settings,
                                   opts.out / "runs" / "model", work, run, trainer_cls=_RecordingTrainer,
                                   callbacks=[KillRank0()] if opts.kill_rank0_at else [])
            result["metrics"] = metrics
        finally:
            trainer = _RecordingTrainer.instances[-1]
            result.update(wrapper=trainer.wrapper, decisions=trainer.jepa_decisions)
            if opts.zero < 3:
                flat = torch.cat([p.detach().flatten() for p in trainer.model.parameters()])
                result["param_digest"] = str(flat.double().sum().item()) + "/" + str(flat.abs().max().item())
            (opts.out / f"rank{rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    from jarvis.launch import hard_exit

    try:
        main()
        code = 0
    except SystemExit as exc:  # Preempted (143) in the preemption test
        code = exc.code if isinstance(exc.code, int) else 1
    hard_exit(code)
