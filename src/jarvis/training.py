"""Training engine for stage 1 (pretrain, ZeRO-2) and stage 2 (finetune, ZeRO-3).

One entry point, :func:`run_training`, shared by both stages:

- :class:`TrainSettings` is the plain, frozen view of one stage's training recipe (the config module builds it from
  ``params.yaml``); :func:`training_arguments` is the *one* translation into ``TrainingArguments`` (house rule 5).
- :class:`JarvisTrainer` uses public ``Trainer`` hooks only (``compute_loss``, ``log``, callbacks), unlike the
  reference's override of the private ``_maybe_log_save_evaluate`` (paper-spec §11.2, ``trainers.py`` L226).
  In ``compute_loss`` it draws the JEPA skip coin from (seed, stage, global step, micro-step) -- identical on every
  rank by construction (paper-spec §7) -- and samples the block masks from a generator seeded by
  (seed, stage, rank, global step, micro-step), so a resumed run replays the same masks (design.md, "Masks").
  Component losses are accumulated as tensors and reduced across ranks only at log time (no ``.item()`` per step,
  paper-spec §11.2 ``modeling_mllm_jepa.py`` L229).
- :class:`PreemptionCallback` turns SIGTERM/SIGUSR1 (SLURM preemption, ``--signal``) into "checkpoint now and stop";
  the decision is all-reduced so every rank stops at the same optimizer step, and the process exits 128 + signal.
- Scratch checkpoints live in ``work_dir`` (``_work/``, never a declared output, style.md rule 14); the declared
  model directory is written once, at the end, atomically (temp dir + rename).

DeepSpeed on CPU follows stack-facts.md §3 (gloo, ``use_cpu``, "auto" JSONs, barrier + destroy at exit).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from jarvis.io import replace_dir, write_json_atomic, write_text_atomic
from jarvis.launch import free_port
from jarvis.seeding import make_generator

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState

    from jarvis.masking import MaskSpec

logger = logging.getLogger(__name__)

# Wrappers that prove the run is really distributed (stack-facts §3: without use_cpu a launcher run silently
# skips DDP and gradients are not synchronised).
_DISTRIBUTED_WRAPPERS = frozenset({"DistributedDataParallel", "DeepSpeedEngine"})
# Signals that mean "the scheduler is about to take the node": SIGTERM (scancel, preemption, torchrun forwarding)
# and SIGUSR1 (sbatch --signal=USR1@<seconds>).
PREEMPT_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR1)
_TRAINER_STATE = "trainer_state.json"


# --------------------------------------------------------------------------------------------------------------------
# Settings and TrainingArguments
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainSettings:
    """Everything one training stage needs; built by the config module from ``params.yaml``."""

    stage: str  # stage name, e.g. "pretrain"; part of every seed (skip coin, masks)
    seed: int  # global seed (paper-spec §9: 42)
    learning_rate: float  # 1e-3 stage 1, 2e-5 stage 2 (paper-spec §9)
    per_device_batch: int  # micro-batch per rank
    grad_accum: int  # derived by the config: global = per_device x accum x world
    world_size: int  # what params.yaml says; checked against the launcher's WORLD_SIZE
    epochs: float = 1.0
    max_steps: int | None = None  # optimizer steps; None (or <= 0) = run `epochs`
    warmup_ratio: float = 0.03
    lr_scheduler: str = "cosine"
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    bf16: bool = False
    gradient_checkpointing: bool = False
    zero_stage: int | None = None  # 0-3 = DeepSpeed ZeRO stage; None = no DeepSpeed (plain Trainer / DDP)
    save_steps: int = 500
    save_total_limit: int = 2  # scratch checkpoints kept in work_dir
    logging_steps: int = 1
    num_workers: int = 0
    jepa_skip_prob: float = 0.0  # P(micro-step is NTP-only), paper-spec §7 (`jepa_lambda` in the reference)
    mask_spec: MaskSpec | None = None  # None = no JEPA in this stage (LLaVA arms, stage 2)

    def __post_init__(self) -> None:
        if self.zero_stage not in (None, 0, 1, 2, 3):
            raise ValueError(f"TrainSettings.zero_stage must be 0-3 or None, got {self.zero_stage!r}")
        if not 0.0 <= self.jepa_skip_prob <= 1.0:
            raise ValueError(f"TrainSettings.jepa_skip_prob must be in [0, 1], got {self.jepa_skip_prob}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            # transformers 5 reads a float warmup_steps in [0, 1) as a ratio; 1.0 would mean "one step".
            raise ValueError(f"TrainSettings.warmup_ratio must be in [0, 1), got {self.warmup_ratio}")
        for name in ("per_device_batch", "grad_accum", "world_size", "save_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainSettings.{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def from_recipe(cls, stage: str, seed: int, recipe: Any, jepa: Any | None = None) -> TrainSettings:
        """The one translation from params (a validated jarvis.config.StageTraining and JEPA recipe): same-named
        fields are taken as they are, derived ones from the recipe's own properties, so no field is re-typed."""
        same = {f.name for f in fields(cls)} & set(type(recipe).model_fields)
        values = {name: getattr(recipe, name) for name in same}
        values["max_steps"] = recipe.max_steps if recipe.max_steps > 0 else None
        return cls(stage=stage, seed=seed, grad_accum=recipe.grad_accum, world_size=recipe.world_size,
                   jepa_skip_prob=jepa.skip_prob if jepa is not None else 0.0,
                   mask_spec=jepa.mask if jepa is not None else None, **values)

    @property
    def global_batch(self) -> int:
        return self.per_device_batch * self.grad_accum * self.world_size

    @property
    def jepa_enabled(self) -> bool:
        return self.mask_spec is not None


def ensure_dist_env() -> None:
    """Give a launcher-less ``python -m jarvis ...`` the env a launcher would set (stack-facts §3).

    Without RANK/WORLD_SIZE/... DeepSpeed falls back to MPI discovery and dies on ``mpi4py``; with OMP_NUM_THREADS
    unset a single CPU process ran 40x slower. Under torchrun/srun the variables exist and nothing is changed.
    """
    if "WORLD_SIZE" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, len(os.sched_getaffinity(0)) // _world_size())))


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _rank() -> int:
    return int(os.environ.get("RANK", "0"))


def deepspeed_dir() -> Path:
    """``workflow/deepspeed`` of the project (JARVIS_ROOT, else the source checkout this module lives in)."""
    candidates = []
    if os.environ.get("JARVIS_ROOT"):
        candidates.append(Path(os.environ["JARVIS_ROOT"]) / "workflow" / "deepspeed")
    candidates.append(Path(__file__).resolve().parents[2] / "workflow" / "deepspeed")
    for cand in candidates:
        if (cand / "zero2.json").is_file():
            return cand
    raise FileNotFoundError(f"DeepSpeed configs not found; looked in {[str(c) for c in candidates]}")


def deepspeed_config(zero_stage: int) -> str | dict[str, Any]:
    """The DeepSpeed config for a ZeRO stage: the JSON path for 2/3, the zero2 JSON with the stage replaced for 0/1."""
    if zero_stage in (2, 3):
        return str(deepspeed_dir() / f"zero{zero_stage}.json")
    cfg = json.loads((deepspeed_dir() / "zero2.json").read_text())
    cfg["zero_optimization"] = {"stage": zero_stage}
    return cfg


def training_arguments(settings: TrainSettings, work_dir: Path, run_name: str | None = None) -> TrainingArguments:
    """The one translation of :class:`TrainSettings` into ``TrainingArguments`` (house rule 5).

    Sets the launcher env for a single process first (constructing the arguments initialises torch.distributed when
    DeepSpeed is on) and checks that the launcher's world size is the one ``params.yaml`` promised, because the global
    batch -- a result-changing value -- depends on it.
    """
    if settings.zero_stage is not None:
        ensure_dist_env()  # DeepSpeed needs the launcher env even for one process; plain Trainer does not
    world = _world_size()
    if world != settings.world_size:
        raise RuntimeError(
            f"params.yaml says world_size {settings.world_size} for stage {settings.stage!r}, but the launcher started"
            f" {world} process(es) (WORLD_SIZE); the global batch would silently change"
        )
    cuda = torch.cuda.is_available()
    max_steps = settings.max_steps if settings.max_steps is not None and settings.max_steps > 0 else -1
    return TrainingArguments(
        output_dir=str(work_dir),
        run_name=run_name or settings.stage,
        seed=settings.seed,
        data_seed=settings.seed,
        per_device_train_batch_size=settings.per_device_batch,
        gradient_accumulation_steps=settings.grad_accum,
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        max_steps=max_steps,
        warmup_steps=settings.warmup_ratio,  # a float in [0, 1) is a ratio in transformers 5
        lr_scheduler_type=settings.lr_scheduler,
        weight_decay=settings.weight_decay,
        max_grad_norm=settings.max_grad_norm,
        bf16=settings.bf16,
        activation_checkpointing=settings.gradient_checkpointing,  # `gradient_checkpointing` is deprecated in v5
        activation_checkpointing_kwargs={"use_reentrant": False} if settings.gradient_checkpointing else None,
        save_strategy="steps",
        save_steps=settings.save_steps,
        save_total_limit=settings.save_total_limit,
        logging_strategy="steps",
        logging_steps=settings.logging_steps,
        dataloader_num_workers=settings.num_workers,
        remove_unused_columns=False,  # the collator emits exactly the model's keyword arguments
        # Skip steps and image-less batches leave the JEPA head / mask token without gradients (DDP needs to know).
        ddp_find_unused_parameters=settings.jepa_enabled if world > 1 and settings.zero_stage is None else None,
        deepspeed=deepspeed_config(settings.zero_stage) if settings.zero_stage is not None else None,
        use_cpu=not cuda,  # required under a launcher on CPU (stack-facts §3)
        ddp_backend="gloo" if world > 1 and not cuda else None,  # gloo in a 1-process run crashes accelerate
        report_to=["mlflow"],  # transformers 5 defaults to "none" (stack-facts §4)
        disable_tqdm=True,
    )


# --------------------------------------------------------------------------------------------------------------------
# Trainer
# --------------------------------------------------------------------------------------------------------------------


def context_grid(model: nn.Module) -> tuple[int, int]:
    """The context tower's patch grid (H, W), on which masks are sampled (paper-spec §4: crop size / patch size)."""
    for owner in (model, getattr(model, "config", None)):
        grid = getattr(owner, "context_grid", None)
        if grid is not None:
            return (int(grid[0]), int(grid[1]))
    tower = getattr(model, "vision_tower", None)  # jarvis.model.vision.VisionTower knows its grid
    if tower is not None and getattr(tower, "grid", None) is not None:
        return (int(tower.grid[0]), int(tower.grid[1]))
    raise AttributeError(
        f"{type(model).__name__} exposes no context grid (model.context_grid, config.context_grid or"
        " model.vision_tower.grid); JEPA masks cannot be sampled"
    )


def _num_images(inputs: Mapping[str, Any]) -> int:
    for key in ("pixel_values", "context_features"):
        value = inputs.get(key)
        if value is not None:
            return int(value.shape[0])
    return 0


class JarvisTrainer(Trainer):
    """``Trainer`` with the JEPA step (skip coin + masks) and per-component loss logging, via public hooks only."""

    # Our model returns a per-micro-batch mean; the Trainer must divide by the accumulation steps itself, whatever
    # the forward signature suggests (it would skip the division if it thought the loss used num_items_in_batch).
    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, settings: TrainSettings, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings
        self.grid = context_grid(self.model) if settings.jepa_enabled else None
        # Host-side micro-step bookkeeping (deterministic, identical on all ranks).
        self._micro_step = -1
        self._micro_of_step = -1
        self.jepa_decisions: list[tuple[int, int, bool]] = []  # (global_step, micro_step, is_jepa) this session
        self._checked_wrapper = False
        self._reset_log_accumulators()

    # -- per-micro-step ----------------------------------------------------------------------------------------------

    def _reset_log_accumulators(self) -> None:
        self._sum_ntp: torch.Tensor | None = None  # device tensors, summed without host syncs
        self._sum_jepa: torch.Tensor | None = None
        self._n_micro = 0
        self._n_jepa = 0
        self._n_samples = 0
        self._interval_start = time.perf_counter()

    def _next_micro_step(self) -> int:
        step = self.state.global_step
        self._micro_step = self._micro_step + 1 if step == self._micro_of_step else 0
        self._micro_of_step = step
        return self._micro_step

    def jepa_inputs(self, inputs: Mapping[str, Any], micro_step: int) -> dict[str, torch.Tensor]:
        """Skip coin + block masks for one micro-batch; ``{}`` means a plain NTP step (full image, no masks)."""
        from jarvis.masking import draw_skip, sample_block_masks  # model-side module, imported lazily

        spec, settings = self.settings.mask_spec, self.settings
        if spec is None or self.grid is None:
            return {}
        step = self.state.global_step
        if draw_skip(settings.seed, settings.stage, step, micro_step, settings.jepa_skip_prob):
            return {}
        n_img = _num_images(inputs)
        if n_img == 0:
            # No image in this micro-batch: the model's loss_jepa is 0 by contract; pass no masks.
            return {}
        generator = make_generator(settings.seed, settings.stage, self.args.process_index, step, micro_step)
        masks = sample_block_masks(self.grid, spec, n_img, generator)
        device = inputs["input_ids"].device
        return {"jepa_context": masks.context.to(device), "jepa_targets": masks.targets.to(device)}

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, Any]:
        if not self._checked_wrapper:
            self._check_distributed_wrapper(model)
        training = model.training
        micro = self._next_micro_step() if training else 0
        jepa = self.jepa_inputs(inputs, micro) if training else {}
        outputs = model(**inputs, **jepa)
        loss = outputs.loss
        if training:
            is_jepa = bool(jepa)
            self.jepa_decisions.append((self.state.global_step, micro, is_jepa))
            ntp = outputs.loss_ntp.detach().float()
            self._sum_ntp = ntp if self._sum_ntp is None else self._sum_ntp + ntp
            if is_jepa:
                lj = outputs.loss_jepa.detach().float()
                self._sum_jepa = lj if self._sum_jepa is None else self._sum_jepa + lj
            self._n_micro += 1
            self._n_jepa += int(is_jepa)
            self._n_samples += int(inputs["input_ids"].shape[0])
        return (loss, outputs) if return_outputs else loss

    def _check_distributed_wrapper(self, model: nn.Module) -> None:
        self._checked_wrapper = True
        if self.args.world_size > 1 and type(model).__name__ not in _DISTRIBUTED_WRAPPERS:
            raise RuntimeError(
                f"WORLD_SIZE={self.args.world_size} but the model is a {type(model).__name__}, not DDP/DeepSpeed:"
                " gradients would not be synchronised (stack-facts §3; is use_cpu set on CPU?)"
            )

    # -- logging -----------------------------------------------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # "loss" marks the periodic training log, which every rank reaches at the same step: safe for a collective.
        if "loss" in logs and self._n_micro > 0:
            logs.update(self._reduce_interval())
        super().log(logs, start_time)

    def _reduce_interval(self) -> dict[str, float]:
        device = self._sum_ntp.device if self._sum_ntp is not None else self.args.device
        zero = torch.zeros((), device=device)
        stats = torch.stack(
            [
                self._sum_ntp if self._sum_ntp is not None else zero,
                self._sum_jepa.to(device) if self._sum_jepa is not None else zero,
                torch.tensor(float(self._n_micro), device=device),
                torch.tensor(float(self._n_jepa), device=device),
                torch.tensor(float(self._n_samples), device=device),
            ]
        )
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(stats, op=dist.ReduceOp.SUM)
        ntp_sum, jepa_sum, n_micro, n_jepa, n_samples = stats.tolist()  # the one host sync per log
        elapsed = max(time.perf_counter() - self._interval_start, 1e-9)
        out = {
            "loss_ntp": ntp_sum / n_micro,
            "jepa_fraction": n_jepa / n_micro,
            "samples_per_second": n_samples / elapsed,
        }
        if n_jepa > 0:
            out["loss_jepa"] = jepa_sum / n_jepa  # mean over JEPA micro-steps only (skip steps have no JEPA loss)
        self._reset_log_accumulators()
        return out


# --------------------------------------------------------------------------------------------------------------------
# Preemption
# --------------------------------------------------------------------------------------------------------------------


class PreemptionCallback(TrainerCallback):
    """SIGTERM / SIGUSR1 → save a checkpoint at the end of the current optimizer step, stop, exit 128 + signal.

    The handler only records the signal; the decision is taken in ``on_step_end`` after a MAX all-reduce so that all
    ranks stop at the same step even when the signal reaches them at different times (a rank that saved alone would
    hang the collective save). The cost is one scalar all-reduce per optimizer step.
    """

    def __init__(self, signals: tuple[signal.Signals, ...] = PREEMPT_SIGNALS) -> None:
        self.signals = signals
        self.received: int | None = None  # the signal number, once one arrived (on this rank)
        self.stopped_at: int | None = None  # global step of the preemption checkpoint (all ranks)
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._handle)

    def uninstall(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        if self.received is None:
            logger.warning("signal %d received: checkpointing at the end of this optimizer step, then exiting", signum)
            self.received = signum

    def _agreed_signal(self, device: torch.device) -> int:
        flag = torch.tensor(float(self.received or 0), device=device)
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        return int(flag.item())

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> TrainerControl:
        signum = self._agreed_signal(args.device)
        if signum and self.stopped_at is None:
            self.received = self.received or signum
            self.stopped_at = state.global_step
            control.should_save = True
            control.should_training_stop = True
        return control

    @property
    def exit_code(self) -> int:
        return 128 + int(self.received or signal.SIGTERM)


class TrainProgress(TrainerCallback):
    """One tqdm bar over the optimizer steps on rank 0 (log-file friendly off-terminal, ``jarvis.progress``)."""

    def __init__(self, desc: str) -> None:
        self.desc = desc
        self.bar: Any = None

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.is_world_process_zero:
            from jarvis.progress import progress

            self.bar = progress(total=state.max_steps, initial=state.global_step, desc=self.desc, unit="step")

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
        logs: dict[str, Any] | None = None, **kwargs: Any,
    ) -> None:
        if self.bar is not None and logs and "loss" in logs:
            self.bar.set_postfix(loss=f"{float(logs['loss']):.4g}", refresh=False)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


class Preempted(SystemExit):
    """Raised by :func:`run_training` after the preemption checkpoint; exits the process with 128 + signal."""


# --------------------------------------------------------------------------------------------------------------------
# Run
# --------------------------------------------------------------------------------------------------------------------


def last_checkpoint(work_dir: Path) -> Path | None:
    """The newest *complete* ``checkpoint-N`` in ``work_dir`` (trainer_state.json is written last), else None."""
    if not work_dir.is_dir():
        return None
    found: list[tuple[int, Path]] = []
    for child in work_dir.iterdir():
        name = child.name
        if child.is_dir() and name.startswith(f"{PREFIX_CHECKPOINT_DIR}-") and name.split("-")[-1].isdigit():
            if (child / _TRAINER_STATE).is_file():
                found.append((int(name.split("-")[-1]), child))
            else:
                logger.warning("ignoring incomplete checkpoint %s (no %s)", child, _TRAINER_STATE)
    return max(found)[1] if found else None


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def teardown_distributed() -> None:
    """barrier + destroy_process_group: without it 2/7 two-process DS runs died with SIGABRT (stack-facts §3)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _summarise(
    history: list[dict[str, Any]], train_metrics: Mapping[str, Any], wall_s: float, steps: int
) -> dict[str, Any]:
    """Final metrics from the log history (which survives resume in trainer_state.json) and the Trainer output."""
    steps_logged = [h for h in history if "loss" in h]
    last = steps_logged[-1] if steps_logged else {}
    # Run-level JEPA fraction, weighting each log interval by its number of optimizer steps.
    weighted, total, prev = 0.0, 0, 0
    for h in steps_logged:
        n = int(h["step"]) - prev
        prev = int(h["step"])
        if "jepa_fraction" in h:
            weighted += h["jepa_fraction"] * n
            total += n
    jepa_vals = [h["loss_jepa"] for h in steps_logged if "loss_jepa" in h]

    def finite(x: Any) -> float | None:
        return float(x) if x is not None and math.isfinite(float(x)) else None

    return {
        "loss": finite(last.get("loss")),
        "loss_ntp": finite(last.get("loss_ntp")),
        "loss_jepa": finite(jepa_vals[-1]) if jepa_vals else None,
        "jepa_fraction": weighted / total if total else None,
        "train_loss": finite(train_metrics.get("train_loss")),
        "steps": steps,
        "samples_per_second": finite(train_metrics.get("train_samples_per_second")),
        "wall_time_s": wall_s,
    }


def run_training(
    model: nn.Module,
    train_dataset: torch.utils.data.Dataset,
    collator: Any,
    settings: TrainSettings,
    out_dir: Path,
    work_dir: Path,
    mlflow_run: Any | None,
    *,
    processing_class: Any | None = None,
    callbacks: Sequence[TrainerCallback] = (),
    trainer_cls: type[JarvisTrainer] | None = None,
    metrics_path: Path | None = None,
    history_path: Path | None = None,
    teardown: bool = True,
    model_card: Callable[[dict[str, Any]], str] | None = None,
) -> dict[str, Any]:
    """Train (resuming from the newest checkpoint in ``work_dir``), then write the declared outputs.

    Outputs (rank 0): ``out_dir`` (HF checkpoint, safetensors; written to a temp dir and renamed), ``metrics_path``
    (default ``out_dir/../metrics.json``) and ``history_path`` (default ``out_dir/../history.jsonl``, one JSON
    object per log line: the loss curves). ``mlflow_run`` is the run from :func:`jarvis.tracking.stage_run` on rank 0
    (None elsewhere); None on rank 0 disables MLflow for this run. On SIGTERM/SIGUSR1 a checkpoint is saved in
    ``work_dir`` and :class:`Preempted` (a ``SystemExit`` with code 128 + signal) is raised after teardown.
    ``callbacks`` are extra Trainer callbacks; ``trainer_cls`` a :class:`JarvisTrainer` subclass (tests, variants).
    ``model_card`` maps the final metrics to the checkpoint's ``README.md`` (written before the rename).
    Returns the metrics dict on every rank.
    """
    from jarvis import tracking

    out_dir, work_dir = Path(out_dir), Path(work_dir)
    metrics_path = metrics_path or out_dir.parent / "metrics.json"
    history_path = history_path or out_dir.parent / "history.jsonl"
    work_dir.mkdir(parents=True, exist_ok=True)
    tracking.configure_trainer_env()
    preemption = PreemptionCallback()
    preemption.install()  # before anything slow, so an early signal is not lost
    try:
        run_name = mlflow_run.info.run_name if mlflow_run is not None else settings.stage
        args = training_arguments(settings, work_dir, run_name=run_name)
        rank = args.process_index
        if rank == 0 and mlflow_run is not None:
            tracking.assert_active(mlflow_run)
        trainer = (trainer_cls or JarvisTrainer)(
            model=model,
            args=args,
            train_dataset=train_dataset,
            data_collator=collator,
            processing_class=processing_class,
            callbacks=[preemption, TrainProgress(settings.stage), *callbacks],
            settings=settings,
        )
        if mlflow_run is None and rank == 0:
            from transformers.integrations import MLflowCallback

            trainer.remove_callback(MLflowCallback)
        resume = last_checkpoint(work_dir)
        logger.info("stage %s: %s", settings.stage, f"resuming from {resume}" if resume else "starting fresh")
        start = time.perf_counter()
        result = trainer.train(resume_from_checkpoint=str(resume) if resume else None)
        wall = time.perf_counter() - start
        if preemption.stopped_at is not None:
            logger.warning("preempted: checkpoint-%d saved in %s; exiting", preemption.stopped_at, work_dir)
            raise Preempted(preemption.exit_code)

        # Final model: every rank joins save_model (ZeRO-3 gathers the 16-bit weights collectively); rank 0 writes.
        tmp = out_dir.with_name(f".{out_dir.name}.partial")
        if rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        _barrier()
        trainer.save_model(str(tmp))
        _barrier()
        metrics = _summarise(trainer.state.log_history, result.metrics, wall, trainer.state.global_step)
        metrics.update(
            stage=settings.stage,
            world_size=args.world_size,
            global_batch=settings.global_batch,
            distributed_wrapper=type(trainer.model_wrapped).__name__,  # how it really ran (DDP / DeepSpeedEngine)
        )
        if rank == 0:
            # Trainer.save_model also writes TrainingArguments as a pickle; the declared output is safetensors only.
            (tmp / "training_args.bin").unlink(missing_ok=True)
            if model_card is not None:
                write_text_atomic(tmp / "README.md", model_card(metrics))
            replace_dir(tmp, out_dir)
            write_json_atomic(metrics_path, metrics)
            lines = [json.dumps(h, sort_keys=True) for h in trainer.state.log_history]
            write_text_atomic(history_path, "\n".join(lines) + "\n")
            if mlflow_run is not None:
                tracking.log_final_metrics(metrics)
        _barrier()
        return metrics
    finally:
        # After a preemption the handlers stay: a second SIGTERM (torchrun forwarding it once a peer has exited)
        # must not kill this rank before it has closed its MLflow run and exited with 128 + signal.
        if preemption.stopped_at is None:
            preemption.uninstall()
        if teardown:
            teardown_distributed()
