"""Training engine for stage 1 (pretrain, ZeRO-2) and stage 2 (finetune, ZeRO-3).

One entry point, :func:`run_training`, shared by both stages:

- :class:`~jarvis.config.TrainSettings` is one stage's validated training recipe with its run's stage and seed (the
  stage plan holds it, ``TrainSpec.train``); :func:`training_arguments` is the *one* translation into
  ``TrainingArguments`` (house rule 5).
- :class:`JarvisTrainer` uses public ``Trainer`` hooks only (``compute_loss``, ``log``, callbacks), unlike the
  reference's override of the private ``_maybe_log_save_evaluate`` (paper-spec §11.2, ``trainers.py`` L226).
  In ``compute_loss`` it draws the JEPA skip coin from (seed, stage, global step, micro-step) -- identical on every
  rank by construction (paper-spec §7). The block masks come with the batch: the trainer wraps the collator in
  :class:`~jarvis.data.collate.JepaMaskCollator`, which samples them where the batch is built (a DataLoader worker
  with ``num_workers`` > 0), keyed by (seed, stage, epoch, the micro-batch's sample indices), so a resumed run
  replays the same masks (design.md, "Masks") and the step runs no Python sampler.
  Component losses are accumulated as tensors and reduced across ranks only at log time (no ``.item()`` per step,
  paper-spec §11.2 ``modeling_mllm_jepa.py`` L229).
- :class:`PreemptionCallback` turns SIGTERM/SIGUSR1 (SLURM preemption, ``--signal``) into "checkpoint now and stop";
  the decision is all-reduced so every rank stops at the same optimizer step, and the process exits 128 + signal.
- Scratch checkpoints live in ``work_dir`` (``_work/``, never a declared output, style.md rule 14); the declared
  model directory is written once, at the end, atomically (temp dir + rename).
- Divergence guard: after every optimizer step the step's loss, gradient norm and trainable weights are checked
  (one all-reduce, together with the step's loss sums); a non-finite one raises :class:`TrainingDiverged` naming the
  step and the quantity, before anything of that step is logged, checkpointed or written.
- Resume never changes a run's numbers: the run-level sums (loss, samples, training seconds and the open log
  interval) are carried in every checkpoint (``jarvis_state.json``, with the digest of the settings/model/data that
  produced it and the size of every file); ``train_loss``, ``samples_per_second`` and the logged interval means come
  from them, not from the Trainer's per-session counters. A checkpoint from other inputs is deleted, an unreadable
  one is skipped for the previous one, with a log line each; MLflow points already logged are not logged again.

DeepSpeed on CPU follows stack-facts.md §3 (gloo, ``use_cpu``, "auto" JSONs, barrier + destroy at exit).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.integrations import MLflowCallback
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from jarvis.config import TrainSettings
from jarvis.io import StageFailed, replace_dir, write_text_atomic
from jarvis.launch import free_port

if TYPE_CHECKING:
    from transformers import TrainerControl, TrainerState

logger = logging.getLogger(__name__)

# Wrappers that prove the run is really distributed (stack-facts §3: without use_cpu a launcher run silently
# skips DDP and gradients are not synchronised).
_DISTRIBUTED_WRAPPERS = frozenset({"DistributedDataParallel", "DeepSpeedEngine"})
# Signals that mean "the scheduler is about to take the node": SIGTERM (scancel, preemption, torchrun forwarding)
# and SIGUSR1 (sbatch --signal=USR1@<seconds>).
PREEMPT_SIGNALS: tuple[signal.Signals, ...] = (signal.SIGTERM, signal.SIGUSR1)
_TRAINER_STATE = "trainer_state.json"
JARVIS_STATE = "jarvis_state.json"  # in every checkpoint-N: producer digest, carried totals, file sizes (last write)
# Run-level sums carried across resumes; the ``i_*`` entries belong to the log interval still open at the checkpoint.
_TOTAL_KEYS = ("steps", "loss_sum", "samples", "seconds",
               "i_steps", "i_loss", "i_ntp", "i_jepa", "i_micro", "i_njepa", "i_samples", "i_seconds")


class TrainingDiverged(StageFailed):
    """A non-finite loss, gradient norm or weight: the stage fails and writes none of its declared outputs."""


def zero_totals() -> dict[str, float]:
    return dict.fromkeys(_TOTAL_KEYS, 0.0)


# --------------------------------------------------------------------------------------------------------------------
# Settings and TrainingArguments
# --------------------------------------------------------------------------------------------------------------------


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
    return TrainingArguments(
        output_dir=str(work_dir),
        run_name=run_name or settings.stage,
        seed=settings.seed,
        data_seed=settings.seed,
        per_device_train_batch_size=settings.per_device_batch,
        gradient_accumulation_steps=settings.grad_accum,
        learning_rate=settings.learning_rate,
        num_train_epochs=settings.epochs,
        max_steps=settings.max_steps,  # -1 (train `epochs`) or a positive count: the schema allows nothing else
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


_MASK_KEYS = ("jepa_context", "jepa_targets")
_KEEP_KEY = "jepa_keep"  # optional: the positions the JEPA step keeps, found with the masks (JepaMaskCollator)


def _take_masks(inputs: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Remove and return the batch's JEPA masks (and kept positions) put there by ``JepaMaskCollator``."""
    return {k: inputs.pop(k) for k in (*_MASK_KEYS, _KEEP_KEY) if k in inputs}


def _image_token_id(model: nn.Module) -> int | None:
    value = getattr(getattr(model, "config", None), "image_token_id", None)
    return int(value) if isinstance(value, int) else None


class _MaskEpochCallback(TrainerCallback):
    """Tell the mask collator the epoch before the epoch's DataLoader iterator (and its workers) starts."""

    def __init__(self, collator: Any) -> None:
        self.collator = collator

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        # state.epoch is k exactly when epoch k begins (k - 1 + steps/steps), and k + a fraction on a mid-epoch resume
        self.collator.epoch = int(state.epoch or 0)


class JarvisTrainer(Trainer):
    """``Trainer`` with the JEPA step (skip coin + masks), per-component loss logging and the divergence guard, via
    public hooks only (``compute_loss``, ``log``, callbacks)."""

    # Our model returns a per-micro-batch mean; the Trainer must divide by the accumulation steps itself, whatever
    # the forward signature suggests (it would skip the division if it thought the loss used num_items_in_batch).
    loss_is_scaled_for_ga = False

    def __init__(self, *args: Any, settings: TrainSettings, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings = settings
        self.grid = context_grid(self.model) if settings.jepa_enabled else None
        if self.grid is not None and settings.mask_spec is not None:
            from jarvis.data.collate import JepaMaskCollator

            self.data_collator = JepaMaskCollator(self.data_collator, self.grid, settings.mask_spec, settings.seed,
                                                  settings.stage, _image_token_id(self.model))
            self.add_callback(_MaskEpochCallback(self.data_collator))
        # Host-side micro-step bookkeeping (deterministic, identical on all ranks).
        self._micro_step = -1
        self._micro_of_step = -1
        self.jepa_decisions: list[tuple[int, int, bool]] = []  # (global_step, micro_step, is_jepa) this session
        self._checked_wrapper = False
        self.totals = zero_totals()  # run-level, identical on every rank (reduced each step); see load_totals
        self._grad_norm: torch.Tensor | float | None = None
        self._last_tick: float | None = None
        self._reset_step_accumulators()
        self.add_callback(_GuardCallback(self))

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        """LLaVA's modality-length grouping when the recipe asks (``group_by_modality_length``); the dataset gives
        ``modality_lengths`` (jarvis.data.sampler). Otherwise the Trainer's own sampler."""
        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if not self.settings.group_by_modality_length:
            return super()._get_train_sampler(train_dataset)
        from jarvis.data.sampler import ModalityLengthGroupedSampler

        lengths = getattr(dataset, "modality_lengths", None)
        if lengths is None:
            raise TypeError(f"group_by_modality_length: {type(dataset).__name__} has no modality_lengths")
        n_text = sum(1 for n in lengths if n < 0)
        logger.info("train sampler: modality-length grouped (%d with image, %d text-only; megabatch %d x %d ranks)",
                    len(lengths) - n_text, n_text, self.args.train_batch_size * self.args.gradient_accumulation_steps,
                    self.args.world_size)
        return ModalityLengthGroupedSampler(lengths, self.args.train_batch_size * self.args.gradient_accumulation_steps,
                                            self.args.world_size, self.settings.seed)

    def load_totals(self, totals: Mapping[str, float]) -> None:
        """Continue the run-level sums of a checkpoint (resume)."""
        self.totals = {k: float(totals[k]) for k in _TOTAL_KEYS}

    # -- per-micro-step ----------------------------------------------------------------------------------------------

    def _reset_step_accumulators(self) -> None:
        self._sum_loss: torch.Tensor | None = None  # device tensors, summed without host syncs within a step
        self._sum_ntp: torch.Tensor | None = None
        self._sum_jepa: torch.Tensor | None = None
        self._n_micro = 0
        self._n_jepa = 0
        self._n_samples = 0

    def _next_micro_step(self) -> int:
        step = self.state.global_step
        self._micro_step = self._micro_step + 1 if step == self._micro_of_step else 0
        self._micro_of_step = step
        return self._micro_step

    def jepa_inputs(self, inputs: dict[str, Any], micro_step: int) -> dict[str, torch.Tensor]:
        """Take the batch's block masks out of ``inputs`` and draw the skip coin; ``{}`` means a plain NTP step (full
        image, no masks)."""
        from jarvis.masking import draw_skip  # model-side module, imported lazily

        masks = _take_masks(inputs)
        settings = self.settings
        if settings.mask_spec is None or self.grid is None:
            return {}
        from jarvis.data.collate import num_images

        if num_images(inputs) == 0:
            # No image in this micro-batch: the model's loss_jepa is 0 by contract; pass no masks.
            return {}
        if draw_skip(settings.seed, settings.stage, self.state.global_step, micro_step, settings.jepa_skip_prob):
            return {}
        if not all(k in masks for k in _MASK_KEYS):
            raise ValueError("a JEPA micro-batch without its block masks: its collator must be the trainer's"
                             f" JepaMaskCollator (got keys {sorted(inputs)})")
        return masks

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
        if training:
            jepa = self.jepa_inputs(inputs, micro)
        else:  # an evaluation pass is plain NTP: the batch's masks, if any, are dropped
            _take_masks(inputs)
            jepa = {}
        outputs = model(**inputs, **jepa)
        loss = outputs.loss
        if training:
            is_jepa = bool(jepa)
            self.jepa_decisions.append((self.state.global_step, micro, is_jepa))
            total = loss.detach().double()  # float64 sums: a resumed run adds the same numbers in the same order
            self._sum_loss = total if self._sum_loss is None else self._sum_loss + total
            ntp = outputs.loss_ntp.detach().double()
            self._sum_ntp = ntp if self._sum_ntp is None else self._sum_ntp + ntp
            if is_jepa:
                lj = outputs.loss_jepa.detach().double()
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

    # -- divergence guard and run-level sums (called by _GuardCallback) ---------------------------------------------

    def _trainable_tensors(self) -> list[tuple[str, torch.Tensor]]:
        # ZeRO-3 keeps only this rank's partition in ``ds_tensor``; the parameter itself is an empty placeholder.
        return [(n, getattr(p, "ds_tensor", None) if getattr(p, "ds_tensor", None) is not None else p.detach())
                for n, p in self.model.named_parameters() if p.requires_grad]

    def record_grad_norm(self) -> None:
        """After clipping, before ``optimizer.step``: the step's gradient norm, kept on device until the step ends."""
        engine = self.model_wrapped
        if type(engine).__name__ == "DeepSpeedEngine":
            self._grad_norm = engine.get_global_grad_norm()  # DeepSpeed holds the gradients; its step already ran
            return
        norms = [torch.linalg.vector_norm(p.grad.detach().float()) for p in self.model.parameters()
                 if p.grad is not None]
        # Clipping scales by max_norm / norm: a non-finite pre-clip norm leaves non-finite gradients, hence norm.
        self._grad_norm = torch.linalg.vector_norm(torch.stack(norms)) if norms else None

    def end_step(self, step: int) -> None:
        """Reduce this step's sums across ranks (one all-reduce + one host sync), check them, add them to the run."""
        device = self._sum_loss.device if self._sum_loss is not None else self.args.device
        zero = torch.zeros((), device=device, dtype=torch.float64)

        def flag(x: torch.Tensor | float | None) -> torch.Tensor:
            if x is None:
                return zero
            t = x if isinstance(x, torch.Tensor) else torch.tensor(float(x), device=device)
            return (~torch.isfinite(t.to(device))).all().double()

        tensors = self._trainable_tensors()
        weights_bad = torch.stack([(~torch.isfinite(t)).any() for _, t in tensors]).any().to(device).double() \
            if tensors else zero
        loss = self._sum_loss if self._sum_loss is not None else zero
        stats = torch.stack([
            flag(loss), flag(self._grad_norm), weights_bad,
            loss, self._sum_ntp if self._sum_ntp is not None else zero,
            self._sum_jepa.to(device) if self._sum_jepa is not None else zero,
            torch.tensor(float(self._n_micro), device=device, dtype=torch.float64),
            torch.tensor(float(self._n_jepa), device=device, dtype=torch.float64),
            torch.tensor(float(self._n_samples), device=device, dtype=torch.float64),
        ])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(stats, op=dist.ReduceOp.SUM)
        loss_bad, grad_bad, weight_bad, loss_sum, ntp, jepa, n_micro, n_jepa, n_samples = stats.tolist()
        if loss_bad or grad_bad or weight_bad:
            raise TrainingDiverged(self._divergence_message(step, loss_bad, grad_bad, loss_sum, n_micro, tensors))
        now = time.perf_counter()
        dt = now - (self._last_tick if self._last_tick is not None else now)
        self._last_tick = now
        t = self.totals
        step_loss = loss_sum / max(n_micro, 1.0)  # mean over the step's micro-batches on all ranks
        t["steps"] += 1
        t["loss_sum"] += step_loss
        t["samples"] += n_samples
        t["seconds"] += dt
        t["i_steps"] += 1
        t["i_loss"] += step_loss
        t["i_ntp"] += ntp
        t["i_jepa"] += jepa
        t["i_micro"] += n_micro
        t["i_njepa"] += n_jepa
        t["i_samples"] += n_samples
        t["i_seconds"] += dt
        self._grad_norm = None
        self._reset_step_accumulators()

    def _divergence_message(self, step: int, loss_bad: float, grad_bad: float, loss_sum: float, n_micro: float,
                            tensors: list[tuple[str, torch.Tensor]]) -> str:
        where = f"stage {self.settings.stage!r} diverged at optimizer step {step}"
        if loss_bad:
            return f"{where}: the training loss is non-finite ({loss_sum / max(n_micro, 1.0)})"
        if grad_bad:
            return f"{where}: the gradient norm is non-finite ({self._grad_norm})"
        bad = [n for n, t in tensors if not bool(torch.isfinite(t).all())]
        return (f"{where}: non-finite trainable weights after the optimizer step"
                f" ({', '.join(bad[:5]) if bad else 'on another rank'})")

    # -- logging -----------------------------------------------------------------------------------------------------

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        # The periodic training log ("loss") and the end-of-training summary ("train_runtime") take their numbers
        # from the run-level sums, which survive a resume; the Trainer's own counters restart with every session.
        if "loss" in logs and self.totals["i_steps"] > 0:
            logs.update(self._close_interval())
        if "train_runtime" in logs:
            logs.update(self.run_summary())
        super().log(logs, start_time)

    def _close_interval(self) -> dict[str, float]:
        t = self.totals
        out = {
            "loss": t["i_loss"] / t["i_steps"],
            "loss_ntp": t["i_ntp"] / max(t["i_micro"], 1.0),
            "jepa_fraction": t["i_njepa"] / max(t["i_micro"], 1.0),
            "samples_per_second": t["i_samples"] / max(t["i_seconds"], 1e-9),
        }
        if t["i_njepa"] > 0:
            out["loss_jepa"] = t["i_jepa"] / t["i_njepa"]  # mean over JEPA micro-steps only (skip steps have none)
        for k in _TOTAL_KEYS:
            if k.startswith("i_"):
                t[k] = 0.0
        return out

    def run_summary(self) -> dict[str, float]:
        """Run-level numbers over every session of this run (a resumed run reports the uninterrupted run's)."""
        t = self.totals
        seconds = max(t["seconds"], 1e-9)
        return {
            "train_loss": t["loss_sum"] / t["steps"] if t["steps"] else float("nan"),
            "train_samples": int(t["samples"]),
            "train_runtime": t["seconds"],
            "train_samples_per_second": t["samples"] / seconds,
            "train_steps_per_second": t["steps"] / seconds,
        }


class _GuardCallback(TrainerCallback):
    """Feeds :class:`JarvisTrainer`'s divergence guard and run-level sums from the Trainer's public events."""

    def __init__(self, trainer: JarvisTrainer) -> None:
        self.trainer = trainer

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       **kwargs: Any) -> None:
        self.trainer._last_tick = time.perf_counter()

    def on_pre_optimizer_step(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                              **kwargs: Any) -> None:
        self.trainer.record_grad_norm()

    def on_step_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                    **kwargs: Any) -> None:
        self.trainer.end_step(state.global_step)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any) -> None:
        _barrier()  # every rank has written its part of the checkpoint
        if state.is_world_process_zero:
            ckpt = Path(args.output_dir) / f"{PREFIX_CHECKPOINT_DIR}-{state.global_step}"
            write_jarvis_state(ckpt, getattr(self.trainer, "producer_digest", ""), state.global_step,
                               self.trainer.totals)
        _barrier()


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


def producer_digest(settings: TrainSettings, model: nn.Module, train_dataset: Any, world_size: int) -> str:
    """sha256 (16 hex) of what a checkpoint's numbers depend on besides the stage params (which key the work dir):
    the settings, the world size, the trainable/frozen parameter layout and the number of training samples."""
    layout = [(n, list(p.shape), str(p.dtype), p.requires_grad) for n, p in model.named_parameters()]
    try:
        n_train: int | None = len(train_dataset)
    except TypeError:  # an IterableDataset has no length
        n_train = None
    settings_dump = settings.model_dump(exclude={"num_workers"})  # workers change no number (JepaMaskCollator)
    blob = json.dumps({"settings": settings_dump, "world_size": world_size, "layout": layout,
                       "n_train": n_train}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _checkpoint_files(ckpt: Path) -> dict[str, int]:
    return {str(f.relative_to(ckpt)): f.stat().st_size for f in sorted(ckpt.rglob("*"))
            if f.is_file() and f.name != JARVIS_STATE}


def write_jarvis_state(ckpt: Path, producer: str, step: int, totals: Mapping[str, float]) -> None:
    """The checkpoint's completion marker (written last, atomically): producer digest, step, totals, file sizes."""
    from jarvis.io import write_text_atomic

    body = {"producer": producer, "step": int(step), "totals": dict(totals), "files": _checkpoint_files(ckpt)}
    write_text_atomic(ckpt / JARVIS_STATE, json.dumps(body, indent=1, sort_keys=True, allow_nan=False) + "\n")


def _checkpoint_problem(ckpt: Path, step: int, producer: str | None) -> tuple[str, str] | None:
    """None if ``ckpt`` is complete, readable and made by ``producer``; else ("mismatch" | "unreadable", why)."""
    try:
        state = json.loads((ckpt / JARVIS_STATE).read_text())
        missing = [k for k in _TOTAL_KEYS if k not in state["totals"]]
        if missing:
            return "unreadable", f"{JARVIS_STATE} lacks totals {missing}"
    except FileNotFoundError:
        return "unreadable", f"no {JARVIS_STATE} (the save did not finish)"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return "unreadable", f"{JARVIS_STATE} is unreadable ({err})"
    if producer is not None and state.get("producer") != producer:
        return "mismatch", f"made by other settings/model/data (digest {state.get('producer')} != {producer})"
    try:
        trainer_state = json.loads((ckpt / _TRAINER_STATE).read_text())
        if int(trainer_state["global_step"]) != step or int(state["step"]) != step:
            return "unreadable", f"{_TRAINER_STATE} says step {trainer_state['global_step']}, the name says {step}"
    except (OSError, ValueError, KeyError, TypeError) as err:
        return "unreadable", f"{_TRAINER_STATE} is unreadable ({type(err).__name__}: {err})"
    sizes = _checkpoint_files(ckpt)
    changed = [f for f, size in state["files"].items() if sizes.get(f) != size]
    if changed:
        return "unreadable", f"files missing or changed size since the save: {changed[:5]}"
    return None


def _checkpoints(work_dir: Path) -> list[tuple[int, Path]]:
    if not work_dir.is_dir():
        return []
    found = []
    for child in work_dir.iterdir():
        name = child.name
        if child.is_dir() and name.startswith(f"{PREFIX_CHECKPOINT_DIR}-") and name.split("-")[-1].isdigit():
            found.append((int(name.split("-")[-1]), child))
    return sorted(found, reverse=True)


def resume_point(work_dir: Path, producer: str | None = None, *, discard: bool = False
                 ) -> tuple[Path, dict[str, float]] | None:
    """The newest usable ``checkpoint-N`` in ``work_dir`` and its carried totals, else None.

    A checkpoint made by another producer digest is discarded; an unreadable one (a save cut short, a truncated
    ``trainer_state.json``) is passed over for the previous one. Each gets a warning; with ``discard`` (rank 0, once
    every rank has chosen) both kinds are deleted, so a later save of the same step never mixes with their files.
    """
    for step, ckpt in _checkpoints(Path(work_dir)):
        problem = _checkpoint_problem(ckpt, step, producer)
        if problem is None:
            totals = json.loads((ckpt / JARVIS_STATE).read_text())["totals"]
            return ckpt, {k: float(totals[k]) for k in _TOTAL_KEYS}
        kind, why = problem
        action = "discarding" if kind == "mismatch" else "falling back past"
        logger.warning("%s checkpoint %s: %s", action, ckpt, why)
        if discard:
            shutil.rmtree(ckpt, ignore_errors=True)
    return None


def last_checkpoint(work_dir: Path, producer: str | None = None) -> Path | None:
    """The newest complete, readable ``checkpoint-N`` in ``work_dir`` (see :func:`resume_point`), else None."""
    found = resume_point(work_dir, producer)
    return found[0] if found else None


class _ResumedMLflowCallback(MLflowCallback):
    """MLflowCallback that logs no point twice: after a resume, steps already in the run (replayed since the last
    checkpoint) are skipped per metric, so the run holds exactly one point per step."""

    def __init__(self, logged: Mapping[str, int]) -> None:
        super().__init__()
        self.logged = dict(logged)

    def on_log(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, logs: dict[str, Any],
               model: Any = None, **kwargs: Any) -> None:
        fresh = {k: v for k, v in logs.items() if state.global_step > self.logged.get(k, -1)}
        if fresh:
            super().on_log(args, state, control, fresh, model=model, **kwargs)


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.barrier()


def teardown_distributed() -> None:
    """barrier + destroy_process_group: without it 2/7 two-process DS runs died with SIGABRT (stack-facts §3)."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def _summarise(history: list[dict[str, Any]], summary: Mapping[str, Any], wall_s: float, steps: int
               ) -> dict[str, Any]:
    """Final metrics from the log history (which survives resume in trainer_state.json) and the run-level sums."""
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
    return {
        "loss": last.get("loss"),
        "loss_ntp": last.get("loss_ntp"),
        "loss_jepa": jepa_vals[-1] if jepa_vals else None,
        "jepa_fraction": weighted / total if total else None,
        "train_loss": summary["train_loss"],  # mean step loss over the whole run, every session included
        "train_samples": summary["train_samples"],
        "train_seconds": summary["train_runtime"],  # seconds inside optimizer steps, summed over sessions
        "steps": steps,
        "samples_per_second": summary["train_samples_per_second"],  # train_samples / train_seconds
        "wall_time_s": wall_s,  # this session's trainer.train() call
    }


def strict_json(obj: Any, what: str, **kwargs: Any) -> str:
    """``json.dumps`` that refuses NaN/Infinity (not JSON; strict parsers reject them), naming the file."""
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError as err:
        raise TrainingDiverged(f"refusing to write {what}: it holds a non-finite number ({obj})") from err


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
            trainer.remove_callback(MLflowCallback)
        producer = producer_digest(settings, model, train_dataset, args.world_size)
        trainer.producer_digest = producer  # type: ignore[attr-defined]  # read by _GuardCallback.on_save
        found = resume_point(work_dir, producer)  # every rank reads; rank 0 then deletes what it passed over
        resume = found[0] if found else None
        _barrier()
        if rank == 0:
            keep = int(resume.name.split("-")[-1]) if resume else -1
            for step, ckpt in _checkpoints(work_dir):
                if step > keep:
                    shutil.rmtree(ckpt, ignore_errors=True)
        _barrier()
        if found:
            trainer.load_totals(found[1])
            if rank == 0 and mlflow_run is not None:
                logged = tracking.logged_steps(mlflow_run.info.run_id)
                if logged:  # points of steps after the checkpoint were logged by the interrupted session
                    trainer.remove_callback(MLflowCallback)
                    trainer.add_callback(_ResumedMLflowCallback(logged))
        logger.info("stage %s: %s", settings.stage, f"resuming from {resume}" if resume else "starting fresh")
        start = time.perf_counter()
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)
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
        metrics = _summarise(trainer.state.log_history, trainer.run_summary(), wall, trainer.state.global_step)
        metrics.update(
            stage=settings.stage,
            world_size=args.world_size,
            global_batch=settings.global_batch,
            distributed_wrapper=type(trainer.model_wrapped).__name__,  # how it really ran (DDP / DeepSpeedEngine)
        )
        if rank == 0:
            # Serialise first: a non-finite number fails the stage before any declared output exists.
            metrics_text = strict_json(metrics, str(metrics_path), indent=2, sort_keys=True) + "\n"
            history_text = "".join(strict_json(h, str(history_path), sort_keys=True) + "\n"
                                   for h in trainer.state.log_history)
            # Trainer.save_model also writes TrainingArguments as a pickle; the declared output is safetensors only.
            (tmp / "training_args.bin").unlink(missing_ok=True)
            if model_card is not None:
                write_text_atomic(tmp / "README.md", model_card(metrics))
            replace_dir(tmp, out_dir)
            write_text_atomic(metrics_path, metrics_text)
            write_text_atomic(history_path, history_text)
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
