"""Assembly shared by the stages: where a data set's files are, how towers and transforms are built from params."""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jarvis import paths
from jarvis.config import HubData, Params

# File layout of a data set directory (synthetic world and hub snapshots alike; benchmarks-spec §5).
PRETRAIN_JSON = "blip_laion_cc_sbu_558k.json"
INSTRUCT_JSON = "llava_v1_5_mix665k.json"


@dataclass(frozen=True)
class Corpus:
    annotations: Path
    image_root: Path


def corpus(params: Params, data: str, part: Literal["pretrain", "instruct"]) -> Corpus:
    spec = params.datasets[data]
    base = paths.dataset_dir(data) / part
    name = getattr(spec, part).annotations if isinstance(spec, HubData) else (
        PRETRAIN_JSON if part == "pretrain" else INSTRUCT_JSON)
    return Corpus(annotations=base / name, image_root=base)


def load_tower(params: Params, name: str) -> Any:
    """A frozen, eval-mode VisionTower from its downloaded directory, with params' feature selection."""
    from jarvis.model.vision import VisionTower
    from jarvis.stages.download import tower_selection

    tower = VisionTower.from_pretrained(paths.tower_dir(name), **tower_selection(params.towers[name]))
    tower.requires_grad_(False)
    return tower.eval()


def image_transform(tower: Any, mode: Literal["crop", "pad"], target: Any | None = None) -> Any:
    """Context transform for ``tower``; with ``target``, one crop normalised twice (paper-spec §3)."""
    from jarvis.data.images import ContextTargetTransform, ImageTransform

    ctx = ImageTransform(tower.image_size, mode, tower.image_mean, tower.image_std)
    if target is None:
        return ctx
    return ContextTargetTransform(ctx, target.image_mean, target.image_std,
                                  target_size=target.image_size if target.image_size != tower.image_size else None)


def stage_params_view(params: Params, keys: list[str]) -> dict[str, Any]:
    """The resolved values of a stage's declared params (logged to MLflow, digested for resume checks)."""
    from jarvis.config import lookup

    raw = params.model_dump(mode="json")
    return {k: lookup(raw, k) for k in keys}


@contextlib.contextmanager
def stage_run(group: str, stage: str, view: dict[str, Any], world_size: int | None = None
              ) -> Iterator[tuple[Any, Path]]:
    """The stage's MLflow run and its scratch directory ``_work/<group>/<stage>/<params digest>/``.

    Keyed by the params digest, so a rerun with other params never resumes stale checkpoints and a rerun with the
    same params after an interruption resumes (and continues its MLflow run). On success the scratch is removed:
    the declared outputs are the record. Rank 0 holds ``_work/<group>/<stage>.lock`` for the whole block, so a
    second process on the same stage output refuses to start (before it opens or touches the MLflow run).
    """
    from jarvis import tracking
    from jarvis.io import exclusive_lock

    base = paths.work_dir(group, stage)
    work = base / tracking.params_digest(view)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    lock = exclusive_lock(base.with_name(f"{base.name}.lock"), f"stage {group}/{stage}") if rank0 \
        else contextlib.nullcontext()
    with lock:
        with tracking.stage_run(group, stage, view, work, world_size=world_size) as run:
            yield run, work
        if rank0:
            shutil.rmtree(base, ignore_errors=True)
