"""Stage-1 step cost: plain LLaVA vs JARVIS (live towers / cached features), and selected vs full-vocabulary logits.

Run: ``python benchmarks/bench_step.py [--config tiny|medium] [--json out.json]``.

One optimizer step = forward + backward + AdamW over the stage-1 trainable set (projector, mask token, JEPA head;
towers and LM frozen, paper-spec §8). For JARVIS every step is a JEPA step (skip_prob 0, the worst case) and the
block masks are sampled inside the step, as the trainer does. Reported: the median of ``--steps`` timed steps after
``--warmup`` warm-up steps, ``torch.set_num_threads(--threads)``, and the peak RSS of each variant (VmHWM, reset
between variants through /proc/self/clear_refs where the kernel allows it).

``medium``: Llama-style LM (hidden 512, 8 layers, 8 heads, vocab 32000), CLIP-style context tower and DINOv2-style
target tower (image 224, patch 14 → 16×16 grid, hidden 384, 4 layers), batch 8, captions of 40 tokens; ``medium24``:
the same on the paper's 24×24 grid (image 336).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from jarvis.masking import MaskSpec, sample_block_masks  # noqa: E402
from jarvis.model.configuration import JarvisConfig  # noqa: E402
from jarvis.model.freeze import set_trainable  # noqa: E402
from jarvis.model.modeling import JarvisForCausalLM  # noqa: E402
from jarvis.seeding import make_generator, seed_everything  # noqa: E402


@dataclass(frozen=True)
class BenchConfig:
    hidden: int
    layers: int
    heads: int
    intermediate: int
    vocab: int
    image: int
    patch: int
    tower_hidden: int
    tower_layers: int
    tower_heads: int
    batch: int
    caption: int
    mask: MaskSpec


CONFIGS = {
    "tiny": BenchConfig(hidden=64, layers=2, heads=4, intermediate=128, vocab=512, image=32, patch=4, tower_hidden=32,
                        tower_layers=2, tower_heads=2, batch=4, caption=12,
                        mask=MaskSpec(num_targets=2, min_keep=4)),
    # Llama-style intermediate ≈ 8/3 · hidden rounded to a multiple of 32; reference mask spec (paper-spec §4).
    "medium": BenchConfig(hidden=512, layers=8, heads=8, intermediate=1376, vocab=32000, image=224, patch=14,
                          tower_hidden=384, tower_layers=4, tower_heads=6, batch=8, caption=40, mask=MaskSpec()),
    # The same LM and towers on the paper's 24×24 grid (CLIP-L/336: image 336, patch 14).
    "medium24": BenchConfig(hidden=512, layers=8, heads=8, intermediate=1376, vocab=32000, image=336, patch=14,
                            tower_hidden=384, tower_layers=4, tower_heads=6, batch=8, caption=40, mask=MaskSpec()),
}


def _tower(cfg: BenchConfig, model_type: str) -> dict[str, Any]:
    config = {"model_type": model_type, "image_size": cfg.image, "patch_size": cfg.patch,
              "hidden_size": cfg.tower_hidden, "num_hidden_layers": cfg.tower_layers,
              "num_attention_heads": cfg.tower_heads, "intermediate_size": 4 * cfg.tower_hidden}
    if model_type == "dinov2":
        config.pop("intermediate_size")  # DINOv2 sizes its MLP by mlp_ratio (4)
    return {"library": "transformers", "config": config, "feature_layer": -1}


def build_model(cfg: BenchConfig, jepa: bool) -> JarvisForCausalLM:
    text = {"model_type": "llama", "hidden_size": cfg.hidden, "num_hidden_layers": cfg.layers,
            "num_attention_heads": cfg.heads, "num_key_value_heads": cfg.heads, "intermediate_size": cfg.intermediate,
            "vocab_size": cfg.vocab}
    config = JarvisConfig(
        text_config=text,
        vision_config=_tower(cfg, "clip_vision_model"),
        target_config=_tower(cfg, "dinov2") if jepa else None,
        projector_type="mlp",
        image_token_id=cfg.vocab - 1,
        bidir_visual_attn=jepa,  # LLaVA baseline: causal; JARVIS: bidirectional (paper-spec §9)
        jepa_layer=max(1, cfg.layers // 4),  # L/4, as the reference scripts
        jepa_head_type="mlp",
    )
    seed_everything(0)
    model = JarvisForCausalLM(config)
    set_trainable(model, {"projector", "mask_token", "jepa_head"} if jepa else {"projector"})
    return model.train()


def make_batch(cfg: BenchConfig, model: JarvisForCausalLM, cached: bool) -> dict[str, torch.Tensor]:
    g = make_generator("bench", "batch")
    n = model.vision_tower.num_patches
    image_id = model.config.image_token_id
    caption = torch.randint(1, image_id - 1, (cfg.batch, cfg.caption), generator=g)
    input_ids = torch.cat([torch.full((cfg.batch, n), image_id), caption], dim=1)  # (B, N + caption)
    labels = torch.cat([torch.full((cfg.batch, n), -100), caption], dim=1)
    pixels = torch.randn(cfg.batch, 3, cfg.image, cfg.image, generator=g).to(model.device)
    batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": labels,
             "label_positions": (labels[:, 1:] != -100).nonzero()}  # as jarvis.data.collate.Collator adds
    if not cached:
        batch["pixel_values"] = pixels
        if model.target_tower is not None:
            batch["pixel_values_target"] = pixels
        return batch
    with torch.no_grad():  # what the cache_features stage stores (before the projector)
        batch["context_features"] = model.vision_tower(pixels)
        if model.target_tower is not None:
            batch["target_features"] = model.target_tower(pixels)
    return batch


def _reset_peak_rss() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux >= 4.0)
        return True
    except OSError:
        return False


def _peak_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_variant(
    cfg: BenchConfig, jepa: bool, cached: bool, full_logits: bool, warmup: int, steps: int, device: torch.device
) -> dict[str, float]:
    model = build_model(cfg, jepa).to(device)
    batch = {k: v.to(device) for k, v in make_batch(cfg, model, cached).items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    grid = model.vision_tower.grid

    def step(i: int) -> None:
        extra: dict[str, Any] = {}
        if jepa:
            masks = sample_block_masks(grid, cfg.mask, cfg.batch, make_generator("bench", "mask", i))
            extra = {"jepa_context": masks.context.to(device), "jepa_targets": masks.targets.to(device)}
        out = model(**batch, **extra, return_logits=full_logits)
        out.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    sync: Callable[[], None] = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    reset_ok = _reset_peak_rss()
    for i in range(warmup):
        step(i)
    sync()
    times = []
    for i in range(warmup, warmup + steps):
        start = time.perf_counter()
        step(i)
        sync()
        times.append(time.perf_counter() - start)
    result = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times),
              "peak_rss_mib": _peak_rss_mib(), "rss_reset": float(reset_ok),
              "seq_len": float(batch["input_ids"].shape[1])}
    if device.type == "cuda":
        result["peak_cuda_mib"] = torch.cuda.max_memory_allocated() / 2**20
        torch.cuda.reset_peak_memory_stats()
    return result


VARIANTS = {  # name: (jepa, cached, full_logits)
    "llava": (False, False, False),
    "llava_cached": (False, True, False),
    "jarvis_live": (True, False, False),
    "jarvis_cached": (True, True, False),
    "llava_full_logits": (False, False, True),
    "jarvis_live_full_logits": (True, False, True),
}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--json", type=Path, help="also write the results here")
    opts = parser.parse_args(argv)
    torch.set_num_threads(opts.threads)
    cfg, device = CONFIGS[opts.config], torch.device(opts.device)
    results: dict[str, Any] = {}
    for name in opts.variants:
        results[name] = time_variant(cfg, *VARIANTS[name], opts.warmup, opts.steps, device)
        r = results[name]
        print(f"{name:26s} {r['median_s'] * 1e3:9.1f} ms/step (min {r['min_s'] * 1e3:.1f}, max {r['max_s'] * 1e3:.1f})"
              f"  peak RSS {r['peak_rss_mib']:.0f} MiB  T={r['seq_len']:.0f}", flush=True)
    ratios = {}

    def ratio(key: str, num: str, den: str) -> None:
        if num in results and den in results:
            ratios[key] = results[num]["median_s"] / results[den]["median_s"]

    ratio("jarvis_live/llava", "jarvis_live", "llava")
    ratio("jarvis_cached/llava", "jarvis_cached", "llava")
    ratio("jarvis_cached/llava_cached", "jarvis_cached", "llava_cached")
    ratio("cached/live", "jarvis_cached", "jarvis_live")
    ratio("llava full/selected logits", "llava_full_logits", "llava")
    ratio("jarvis full/selected logits", "jarvis_live_full_logits", "jarvis_live")
    for key, value in ratios.items():
        print(f"{key:30s} {value:6.2f}x")
    summary = {"config": opts.config, "device": str(device), "threads": opts.threads, "warmup": opts.warmup,
               "steps": opts.steps, "torch": torch.__version__, "variants": results, "ratios": ratios}
    if opts.json:
        opts.json.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
