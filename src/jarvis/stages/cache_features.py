"""Stage `cache_features`: run the frozen context tower (and target tower) once over the stage-1 images.

Both towers are frozen in stage 1 (paper-spec §8), so their outputs are a pure function of the image: computing them
once removes the towers from every training step (the reference runs DINOv2-L and CLIP-L in each step). Output:
sharded safetensors (``context`` [n,N,Dv] before the projector, ``target`` [n,Nt,Dt]) + ``index.json``, in the
format of jarvis.data.dataset.FeatureCache. Resumable per shard: finished shards in the partial directory are kept
-- but only while the partial directory's ``.jarvis-producer.json`` names the same inputs and settings (params of both towers
and the data set, dtype, shard size, the tower configs, the sample list) and the shard's sha256 still matches;
otherwise the partial work is discarded, with a warning. The index records that producer (digest and config), the
dtype, and per shard its shapes and sha256, which the reader verifies before training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from jarvis.plan import CacheSpec, StagePlan, cache_identity
from jarvis.stages.common import image_transform
from jarvis.tracking import plan_run as stage_run

log = logging.getLogger(__name__)
SHARD_SIZE = 1024
BATCH = 32
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
FORMAT = 2  # feature-cache format: 2 = per-shard sha256, dtype and shapes in index.json


def producer(view: dict[str, Any], dtype: str, samples: list[dict[str, Any]], tower_dirs: list[Path]
             ) -> dict[str, Any]:
    """What a feature cache's numbers depend on (recorded in the partial directory and in index.json)."""
    configs = {}
    for d in tower_dirs:  # the saved tower configs (the weights are fixed by the params + download stage)
        cfg = d / "config.json"
        configs[str(d)] = hashlib.sha256(cfg.read_bytes()).hexdigest() if cfg.is_file() else None
    listing = hashlib.sha256(json.dumps([[str(x["id"]), x["image"]] for x in samples]).encode()).hexdigest()
    return {"format": FORMAT, "params": view, "dtype": dtype, "shard_size": SHARD_SIZE, "tower_configs": configs,
            "samples": listing}


def _reusable(partial: Path, name: str, start: int, count: int) -> dict[str, Any] | None:
    """The shard entry of a finished shard in ``partial`` whose file still has the recorded sha256, else None."""
    from jarvis.data.dataset import file_sha256

    done = partial / f"{name}.done"
    try:
        entry = json.loads(done.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(entry, dict) or (entry.get("start"), entry.get("count")) != (start, count):
        return None
    if not (partial / name).is_file() or file_sha256(partial / name) != entry.get("sha256"):
        log.warning("recomputing %s in %s: its content no longer matches its recorded sha256", name, partial)
        return None
    return entry


def load_tower(recipe: Any) -> Any:
    """A frozen, eval-mode VisionTower from its downloaded directory, with the recipe's feature selection."""
    from jarvis.model.vision import VisionTower

    tower = VisionTower.from_pretrained(recipe.dir, **recipe.kwargs)
    tower.requires_grad_(False)
    return tower.eval()


def _encode(samples: list[dict[str, Any]], root: Path, transform: Any, vision: Any, target: Any | None,
            dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor | None]:
    from jarvis.data.dataset import safe_image_path
    from jarvis.data.images import load_rgb

    ctx_out, tgt_out = [], []
    for i in range(0, len(samples), BATCH):
        pix, pix_t = [], []
        for s in samples[i : i + BATCH]:
            x = transform(load_rgb(safe_image_path(root, s["image"])))  # 16-bit, alpha, ... (issue 9)
            if target is None:
                pix.append(x)
            else:
                pix.append(x[0])
                pix_t.append(x[1])
        with torch.inference_mode():
            ctx_out.append(vision(torch.stack(pix)).to(dtype))
            if target is not None:
                tgt_out.append(target(torch.stack(pix_t)).to(dtype))
    return torch.cat(ctx_out), (torch.cat(tgt_out) if target is not None else None)


def run(plan: StagePlan) -> dict[str, Any]:
    from jarvis import tracking
    from jarvis.data.dataset import drop_metrics, load_and_validate, write_feature_index, write_feature_shard
    from jarvis.io import PARTIAL_RECORD, atomic_dir, claim_partial, write_text_atomic
    from jarvis.progress import progress

    spec: CacheSpec = plan.spec
    t0 = time.perf_counter()
    with stage_run(plan) as (mlrun, _):
        c = spec.corpus
        samples, report = load_and_validate(c.annotations, c.image_root, spec.max_dropped_fraction)
        with_image = [s for s in samples if s.get("image") is not None]
        vision = load_tower(spec.vision)
        target = load_tower(spec.target) if spec.target else None
        transform = image_transform(vision, "crop", target)
        dtype = _DTYPES[spec.dtype]

        out = spec.out
        partial = out.with_name(out.name + ".partial")  # undeclared, survives reruns: per-shard resume
        made_by = producer(dict(plan.values), spec.dtype, with_image,
                           [spec.vision.dir, *([spec.target.dir] if spec.target else [])])
        made_digest = claim_partial(partial, made_by, "feature cache")
        shards, reused = [], 0
        starts = list(enumerate(range(0, len(with_image), SHARD_SIZE)))
        for k, start in progress(starts, desc=plan.id, unit="shard"):
            chunk = with_image[start : start + SHARD_SIZE]
            name = f"shard-{k:05d}.safetensors"
            entry = _reusable(partial, name, start, len(chunk))
            if entry is not None:
                shards.append(entry)
                reused += 1
                continue
            ctx, tgt = _encode(chunk, c.image_root, transform, vision, target, dtype)
            entry = write_feature_shard(partial, k, start, ctx, tgt)
            shards.append(entry)
            write_text_atomic(partial / f"{name}.done", json.dumps(entry))
        meta = {"data": spec.data, "vision": spec.vision.name, "target": spec.target.name if spec.target else None,
                "dtype": spec.dtype,
                "grid": list(vision.grid), "target_grid": list(target.grid) if target else None,
                "drops": report, "format": FORMAT, "producer": made_digest, "config": made_by,
                **cache_identity(spec)}
        write_feature_index(partial, [s["id"] for s in with_image], shards, meta)
        with atomic_dir(out) as tmp:
            for f in partial.iterdir():
                if not f.name.endswith(".done") and f.name != PARTIAL_RECORD:
                    os.replace(f, tmp / f.name)
        shutil.rmtree(partial)
        metrics = {"n_images": len(with_image), "n_shards": len(shards), "reused_shards": reused,
                   "n_dropped": report.get("dropped", 0), "wall_s": round(time.perf_counter() - t0, 3),
                   **drop_metrics(report, "data/validation")}
        if mlrun is not None:
            tracking.log_final_metrics(metrics, prefix="")
    return metrics
