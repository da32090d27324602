"""Stage-1 / stage-2 steps at real shapes scaled to one GPU: step time, tokens/s, MFU, peak memory, JEPA/LLaVA.

Run on a GPU: ``python benchmarks/bench_gpu.py [--layers 4] [--steps 10] [--json out.json]`` (about 2-4 minutes
on an H100-class card, well under 10). ``--tiny`` runs the same code path on CPU at tiny shapes (no MFU unless
``--peak-tflops`` is given); that is what the test suite runs.

Shapes (issue 13, "GPU, free JEPA"): Vicuna-7B-shaped decoder layers (hidden 4096, 32 heads, MLP 11008, vocab
32000; ``--layers`` of them, JEPA read-out at L/4), a CLIP-L/336-shaped context tower (1024 wide, 24 layers,
patch 14 → 24×24 grid, penultimate layer) and a DINOv2-L-shaped target tower (1024 wide, 24 layers, 224 px →
16×16, resized to 24×24), bf16 weights, per-device batch 16, captions of 40 tokens, random weights (no download).

``--attention flex`` runs the LM with FlexAttention and the attention rules as a ``BlockMask`` instead of SDPA with
the dense float (B, 1, T, T) mask (CUDA only: torch 2.14.1 has no FlexAttention backward on the CPU).

Variants: stage 1 (projector, + mask token and JEPA head for JARVIS; towers and LM frozen) as LLaVA and JARVIS, with
live towers and with cached tower features; stage 2 (projector + LM) as LLaVA. Micro-batches come from a DataLoader
(``--workers``, pinned memory) through the training collator: for JARVIS, ``JepaMaskCollator`` samples the block
masks and finds the positions to keep (``attention.kept_positions``) in the workers, so the device step runs no
Python sampler and needs no host read. With ``--sync-debug`` the timed steps run under ``torch.cuda.set_sync_debug_mode("warn")`` and the number of
synchronising calls is reported (the mask upload itself is a host-to-device copy, not a sync).

MFU = model FLOPs of the step / (step time × peak): matmul FLOPs of the decoder (forward, input-gradient backward,
and the weight-gradient backward when the LM trains), its attention scores (dense mask: T² per layer), the
selected-position logits, the frozen towers' forward (live variants) and the projector; the JEPA head is counted
with the projector. Peak: ``--peak-tflops`` or a table of dense bf16 peaks by device name.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from jarvis.data.collate import Collator, JepaMaskCollator  # noqa: E402
from jarvis.masking import MaskSpec  # noqa: E402
from jarvis.model.configuration import JarvisConfig  # noqa: E402
from jarvis.model.freeze import STAGE1_GROUPS, STAGE2_GROUPS, set_trainable  # noqa: E402
from jarvis.model.modeling import JarvisForCausalLM  # noqa: E402
from jarvis.seeding import make_generator, seed_everything  # noqa: E402

# Dense bf16 tensor-core peaks (TFLOP/s), by a substring of torch.cuda.get_device_name().
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 70.0, "L4": 121.0}


@dataclass(frozen=True)
class Shapes:
    hidden: int = 4096
    heads: int = 32
    intermediate: int = 11008
    vocab: int = 32000
    layers: int = 4
    ctx_hidden: int = 1024
    ctx_layers: int = 24
    ctx_heads: int = 16
    ctx_image: int = 336
    tgt_hidden: int = 1024
    tgt_layers: int = 24
    tgt_heads: int = 16
    tgt_image: int = 224
    patch: int = 14
    batch: int = 16
    caption: int = 40


TINY = Shapes(
    hidden=64,
    heads=4,
    intermediate=128,
    vocab=512,
    layers=4,
    ctx_hidden=32,
    ctx_layers=2,
    ctx_heads=2,
    ctx_image=48,
    tgt_hidden=32,
    tgt_layers=2,
    tgt_heads=2,
    tgt_image=32,
    patch=8,
    batch=2,
    caption=12,
)


def config(s: Shapes, jepa: bool) -> JarvisConfig:
    text = {
        "model_type": "llama",
        "hidden_size": s.hidden,
        "num_hidden_layers": s.layers,
        "num_attention_heads": s.heads,
        "num_key_value_heads": s.heads,
        "intermediate_size": s.intermediate,
        "vocab_size": s.vocab,
        "max_position_embeddings": 4096,
    }
    clip = {
        "model_type": "clip_vision_model",
        "hidden_size": s.ctx_hidden,
        "num_hidden_layers": s.ctx_layers,
        "num_attention_heads": s.ctx_heads,
        "intermediate_size": 4 * s.ctx_hidden,
        "image_size": s.ctx_image,
        "patch_size": s.patch,
    }
    dino = {
        "model_type": "dinov2",
        "hidden_size": s.tgt_hidden,
        "num_hidden_layers": s.tgt_layers,
        "num_attention_heads": s.tgt_heads,
        "image_size": s.tgt_image,
        "patch_size": s.patch,
    }
    return JarvisConfig(
        text_config=text,
        vision_config={"library": "transformers", "config": clip, "feature_layer": -2},
        target_config={"library": "transformers", "config": dino, "feature_layer": -1} if jepa else None,
        image_token_id=s.vocab - 1,
        bidir_visual_attn=jepa,  # LLaVA baseline causal (st1_llava.sh); JARVIS bidirectional
        jepa_layer=max(1, s.layers // 4),
    )


def build(s: Shapes, jepa: bool, device: torch.device, dtype: torch.dtype) -> JarvisForCausalLM:
    seed_everything(0)
    with torch.device(device):  # initialise on the device: a 1.7 B-parameter random init on the host is slow
        model = JarvisForCausalLM(config(s, jepa))
    return model.to(dtype)


def make_batch(
    s: Shapes, model: JarvisForCausalLM, cached: bool, device: torch.device
) -> dict[str, torch.Tensor]:
    g = make_generator("bench-gpu", "batch")
    n, image_id = model.vision_tower.num_patches, model.config.image_token_id
    caption = torch.randint(1, image_id - 1, (s.batch, s.caption), generator=g)
    ids = torch.cat([torch.full((s.batch, n), image_id), caption], dim=1)
    labels = torch.cat([torch.full((s.batch, n), -100), caption], dim=1)
    batch = {
        "input_ids": ids,
        "attention_mask": torch.ones_like(ids),
        "labels": labels,
        "label_positions": (labels[:, 1:] != -100).nonzero(),
    }  # host tensors, as the collator gives them
    dtype = model.dtype
    ctx_px = torch.randn(s.batch, 3, s.ctx_image, s.ctx_image, generator=g).to(device, dtype)
    tgt_px = torch.randn(s.batch, 3, s.tgt_image, s.tgt_image, generator=g).to(device, dtype)
    if cached:
        with torch.no_grad():  # what the cache_features stage stores
            batch["context_features"] = model.vision_tower(ctx_px)
            if model.target_tower is not None:
                batch["target_features"] = model.target_tower(tgt_px)
    else:
        batch["pixel_values"] = ctx_px
        if model.target_tower is not None:
            batch["pixel_values_target"] = tgt_px
    return batch


class _StepBatches(torch.utils.data.Dataset):
    """Micro-batch ``i`` of the benchmark as a DataLoader gives training its micro-batches: the fixed batch's rows as
    samples with dataset indices ``i*B ...``, so every step draws its own masks in a worker."""

    def __init__(self, batch: dict[str, torch.Tensor], n: int) -> None:
        self.rows = {k: v.cpu() for k, v in batch.items() if k not in ("attention_mask", "label_positions")}
        self.n, self.size = n, int(batch["input_ids"].shape[0])

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> list[dict[str, Any]]:
        return [{"index": i * self.size + b, **{k: v[b] for k, v in self.rows.items()}} for b in range(self.size)]


def batches(
    batch: dict[str, torch.Tensor], model: JarvisForCausalLM, spec: MaskSpec | None, n: int, workers: int
) -> torch.utils.data.DataLoader:
    """``n`` micro-batches through the training collator (``JepaMaskCollator`` for JARVIS: block masks and kept
    positions found in the DataLoader workers, not in the step)."""
    collate: Any = Collator(pad_token_id=0)
    if spec is not None:
        collate = JepaMaskCollator(collate, model.vision_tower.grid, spec, seed=0, stage="bench-gpu",
                                   image_token_id=model.config.image_token_id)
    return torch.utils.data.DataLoader(_StepBatches(batch, n), batch_size=None, collate_fn=collate,
                                       num_workers=workers, pin_memory=torch.cuda.is_available())


def _params(module: torch.nn.Module | None) -> int:
    return 0 if module is None else sum(p.numel() for p in module.parameters())


def step_flops(
    s: Shapes, model: JarvisForCausalLM, seq: float, n_labels: int, live: bool, lm_trains: bool
) -> float:
    """Model FLOPs of one optimizer step (see the module docstring)."""
    decoder = model.language_model.get_decoder()
    layer_params = _params(decoder.layers)
    passes = 3 if lm_trains else 2  # forward + input-grad backward (+ weight-grad backward)
    lm = passes * (2 * layer_params * s.batch * seq + 4 * s.layers * s.batch * seq * seq * s.hidden)
    logits = passes * 2 * s.hidden * s.vocab * n_labels
    n = model.vision_tower.num_patches
    heads = 3 * 2 * (_params(model.projector) + _params(model.jepa_head)) * s.batch * n
    towers = 0.0
    if live:
        for tower, width, depth in (
            (model.vision_tower, s.ctx_hidden, s.ctx_layers),
            (model.target_tower, s.tgt_hidden, s.tgt_layers),
        ):
            if tower is not None:
                tokens = tower.num_patches + 1
                towers += 2 * _params(tower) * s.batch * tokens + 4 * depth * s.batch * tokens**2 * width
    return float(lm + logits + heads + towers)


VARIANTS = {  # name: (jepa, cached, stage)
    "st1_llava": (False, False, 1),
    "st1_llava_cached": (False, True, 1),
    "st1_jarvis": (True, False, 1),
    "st1_jarvis_cached": (True, True, 1),
    "st2_llava": (False, False, 2),
}


def run_variant(
    s: Shapes, name: str, opts: argparse.Namespace, device: torch.device, dtype: torch.dtype
) -> dict[str, Any]:
    jepa, cached, stage = VARIANTS[name]
    model = build(s, jepa, device, dtype)
    if opts.attention == "flex":  # the JEPA rules as a BlockMask (jarvis.model.attention.block_mask)
        model.language_model.set_attn_implementation("flex_attention")
    groups = set(STAGE1_GROUPS) if jepa else {"projector"}
    set_trainable(model, groups if stage == 1 else STAGE2_GROUPS)
    model.train()
    batch = make_batch(s, model, cached, device)
    spec = MaskSpec(min_keep=2) if opts.tiny else MaskSpec()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
    kept: list[float] = []
    stream = iter(batches(batch, model, spec if jepa else None, opts.warmup + opts.steps, opts.workers))

    def step(i: int) -> None:
        host = next(stream)  # prepared by a worker while the previous step ran
        if jepa:
            kept.append(float(host["jepa_keep"].shape[1]))
        inputs = {k: v.to(device, non_blocking=True) for k, v in host.items()}
        out = model(**inputs)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    cuda = device.type == "cuda"
    for i in range(opts.warmup):
        step(i)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times, n_sync = [], 0
    for i in range(opts.warmup, opts.warmup + opts.steps):
        start = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if cuda and opts.sync_debug:
                torch.cuda.set_sync_debug_mode("warn")
            try:
                step(i)
            finally:
                if cuda and opts.sync_debug:
                    torch.cuda.set_sync_debug_mode("default")
        n_sync += sum("synchroniz" in str(w.message) for w in caught)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    seq = statistics.mean(kept) if kept else float(batch["input_ids"].shape[1])
    median = statistics.median(times)
    n_labels = int(batch["label_positions"].shape[0])
    flops = step_flops(s, model, seq, n_labels, live=not cached, lm_trains=stage == 2)
    result = {
        "median_s": median,
        "min_s": min(times),
        "max_s": max(times),
        "tokens_per_s": s.batch * batch["input_ids"].shape[1] / median,
        "llm_seq_full": int(batch["input_ids"].shape[1]),
        "llm_seq_run": seq,
        "model_tflop": flops / 1e12,
        "achieved_tflops": flops / median / 1e12,
        "host_syncs_in_timed_steps": n_sync if opts.sync_debug else None,
    }
    if opts.peak:
        result["mfu"] = flops / median / (opts.peak * 1e12)
    if cuda:
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny shapes on CPU (the code path only)")
    parser.add_argument("--layers", type=int, default=4, help="Vicuna-7B-shaped decoder layers (JEPA at L/4)")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--variants", nargs="+", choices=sorted(VARIANTS), default=list(VARIANTS))
    parser.add_argument(
        "--peak-tflops", dest="peak", type=float, help="dense bf16 peak; default: by device name"
    )
    parser.add_argument(
        "--sync-debug", action="store_true", help="count host syncs in the timed steps (CUDA)"
    )
    parser.add_argument(
        "--attention", choices=("sdpa", "flex"), default="sdpa",
        help="the LM's attention: SDPA with the dense additive mask, or FlexAttention with a block mask",
    )
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers preparing the micro-batches")
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args(argv)
    if opts.attention == "flex" and opts.tiny:
        parser.error("--attention flex needs CUDA: torch has no FlexAttention backward on the CPU")
    if opts.tiny:
        device, dtype = torch.device("cpu"), torch.float32
        shapes = Shapes(**{**asdict(TINY), "batch": min(opts.batch, TINY.batch)})
    else:
        if not torch.cuda.is_available():
            parser.error("no CUDA device: run with --tiny for the CPU code path")
        device, dtype = torch.device("cuda"), torch.bfloat16
        shapes = Shapes(layers=opts.layers, batch=opts.batch)
        name = torch.cuda.get_device_name()
        opts.peak = opts.peak or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
        torch.backends.cuda.matmul.allow_tf32 = True
    results: dict[str, Any] = {}
    for name in opts.variants:
        r = results[name] = run_variant(shapes, name, opts, device, dtype)
        if device.type == "cuda":
            torch.cuda.empty_cache()  # the variant's model is gone with run_variant's frame
        mfu = f"  MFU {100 * r['mfu']:.1f}%" if "mfu" in r else ""
        mem = f"  peak {r['peak_mem_gib']:.1f} GiB" if "peak_mem_gib" in r else ""
        sync = "" if r["host_syncs_in_timed_steps"] is None else f"  syncs {r['host_syncs_in_timed_steps']}"
        print(
            f"{name:18s} {r['median_s'] * 1e3:9.1f} ms/step  {r['tokens_per_s']:10.0f} tok/s  T={r['llm_seq_full']}"
            f" (run {r['llm_seq_run']:.0f})  {r['achieved_tflops']:.2f} TFLOP/s{mfu}{mem}{sync}",
            flush=True,
        )
    ratios = {}
    for num, den in (
        ("st1_jarvis", "st1_llava"),
        ("st1_jarvis_cached", "st1_llava_cached"),
        ("st1_jarvis_cached", "st1_llava"),
    ):
        if num in results and den in results:
            ratios[f"{num}/{den}"] = results[num]["median_s"] / results[den]["median_s"]
    for key, value in ratios.items():
        print(f"{key:36s} {value:6.2f}x")
    summary = {
        "device": str(device),
        "name": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "shapes": asdict(shapes),
        "dtype": str(dtype),
        "attention": opts.attention,
        "steps": opts.steps,
        "warmup": opts.warmup,
        "peak_tflops": opts.peak,
        "torch": torch.__version__,
        "variants": results,
        "ratios": ratios,
    }
    if opts.json:
        opts.json.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
