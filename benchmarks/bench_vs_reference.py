"""Our stage-1 steps against the authors' code (aimagelab/JARVIS), interleaved step by step in one process.

Run: ``python benchmarks/bench_vs_reference.py --reference PATH [--config medium|medium24|tiny] [--rounds 10]``.

``PATH`` is a checkout (or ``git archive``) of aimagelab/JARVIS holding ``src/models/``; it is imported, never
copied into this repository. Both sides get identical weights (the reference's modules are deep copies of ours),
the same batch and, per round, the same block masks (sampled before the timed region, as the reference samples them
in its DataLoader collator). One step = forward + backward + AdamW over the stage-1 trainable set (projector, and for
JEPA the mask token and the JEPA head; towers and LM frozen). Each round runs every variant once, in turn, so load from
other processes hits all variants alike; the report is the median over rounds after ``--warmup`` rounds.

Variants: ``ref_llava`` / ``ours_llava`` (causal, as ``st1_llava.sh``); ``ref_jepa`` / ``ours_jepa`` (live towers) and
``ours_jepa_full`` (the same step without dropping the unattended tokens), ``ours_jepa_cached`` (cached tower
features); ``floor``: the LM decoder alone on the full JEPA sequence with its dense mask, forward + input-grad backward.
The first round also prints the largest loss difference between the two implementations (they must agree).

``medium``: bench_step's medium shapes (16×16 grid, B = 8, LLM sequence 296); ``medium24``: the same LM and towers on
the paper's 24×24 grid (image 336, patch 14).
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import CONFIGS, BenchConfig, build_model, make_batch  # noqa: E402

from jarvis.masking import sample_block_masks  # noqa: E402
from jarvis.model.attention import base_allowed, jepa_allowed, to_additive  # noqa: E402
from jarvis.model.modeling import JarvisForCausalLM  # noqa: E402
from jarvis.seeding import make_generator  # noqa: E402

Step = Callable[[int], torch.Tensor]
VARIANTS = ("ref_llava", "ours_llava", "ref_jepa", "ours_jepa", "ours_jepa_full", "ours_jepa_cached", "floor")


def import_reference(path: Path) -> Any:
    """The reference's model package, with the two shims transformers 5 needs (as the parity fixture's README)."""
    if not (path / "src" / "models" / "mllm_jepa").is_dir():
        raise FileNotFoundError(f"{path} is not an aimagelab/JARVIS checkout (no src/models/mllm_jepa)")
    sys.path.insert(0, str(path))
    import src.models as ref  # type: ignore[import-not-found]
    from transformers import logging as hf_logging

    hf_logging.set_verbosity_warning()  # the reference turns transformers' logging to INFO on import
    ref.MLLMPreTrainedModel._tied_weights_keys = None  # v5 expects a dict or None
    ref.MLLMPreTrainedModel.all_tied_weights_keys = {}  # v5 sets it in post_init, which the reference never calls
    return ref


def reference_model(ref: Any, ours: JarvisForCausalLM) -> torch.nn.Module:
    """The authors' MLLMJEPA / MLLMForCausalLM with deep copies of our modules (identical weights)."""
    cfg = ours.config
    common = dict(
        text_config=cfg.text_config,
        vision_config=ours.vision_tower.model.config,
        projector_type="mlp",
        projector_bias=cfg.projector_bias,
        image_token_id=cfg.image_token_id,
        bidir_visual_attn=cfg.bidir_visual_attn,
        vision_layer_idx=ours.vision_tower.feature_layer,
        skip_left_visual_tokens=ours.vision_tower.drop_prefix_tokens,
    )
    parts = dict(
        language_model=copy.deepcopy(ours.language_model),
        vision_model=copy.deepcopy(ours.vision_tower.model),
        projector=copy.deepcopy(ours.projector),
    )
    if not cfg.has_jepa:
        model = ref.MLLMForCausalLM(ref.MLLMConfig(**common), **parts)
    else:
        config = ref.MLLMJEPAConfig(
            tgt_proj_type="mlp",
            tgt_vision_layer_idx=ours.target_tower.feature_layer,
            tgt_skip_left_visual_tokens=ours.target_tower.drop_prefix_tokens,
            jepa_loss_fn="cos_sim" if cfg.jepa_loss == "cos" else "smooth_l1",
            jepa_loss_weight=cfg.jepa_weight,
            jepa_llm_layer_idx=cfg.jepa_layer,
            **common,
        )
        model = ref.MLLMJEPA(config, tgt_vision_model=copy.deepcopy(ours.target_tower.model), **parts)
        with torch.no_grad():
            model.z.weight.copy_(ours.mask_token.weight)
            model.tgt_proj.load_state_dict(ours.jepa_head.state_dict())
    model.requires_grad_(False)
    for part in (model.projector, getattr(model, "z", None), getattr(model, "tgt_proj", None)):
        if part is not None:
            part.requires_grad_(True)
    return model.train()


def reference_batch(batch: dict[str, torch.Tensor], n: int, image_id: int) -> dict[str, torch.Tensor]:
    """The reference's input: one ``<image>`` id per sample (it expands it itself), same caption and labels."""
    ids, labels = batch["input_ids"][:, n - 1 :], batch["labels"][:, n - 1 :]
    assert bool((ids[:, 0] == image_id).all())
    return {
        "input_ids": ids.contiguous(),
        "labels": labels.contiguous(),
        "attention_mask": torch.ones_like(ids),
    }


def optimizer_step(model: torch.nn.Module) -> Callable[[torch.Tensor], None]:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)

    def apply(loss: torch.Tensor) -> None:
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return apply


def build_steps(cfg: BenchConfig, ref: Any, rounds: int) -> tuple[dict[str, Step], dict[str, list[float]]]:
    ours_jepa = build_model(cfg, jepa=True)
    ours_llava = build_model(cfg, jepa=False)
    ref_jepa, ref_llava = reference_model(ref, ours_jepa), reference_model(ref, ours_llava)
    n, image_id = ours_jepa.vision_tower.num_patches, ours_jepa.config.image_token_id
    live = make_batch(cfg, ours_jepa, cached=False)
    cached = make_batch(cfg, ours_jepa, cached=True)
    plain = make_batch(cfg, ours_llava, cached=False)
    plain.pop("pixel_values_target", None)
    ref_ids = reference_batch(live, n, image_id)
    pixels = live["pixel_values"]
    grid = ours_jepa.vision_tower.grid
    masks = [
        sample_block_masks(grid, cfg.mask, cfg.batch, make_generator("bench", "mask", r))
        for r in range(rounds)
    ]
    losses: dict[str, list[float]] = {}

    def record(name: str, loss: torch.Tensor) -> torch.Tensor:
        losses.setdefault(name, []).append(float(loss.detach()))
        return loss

    upd = {
        name: optimizer_step(m)
        for name, m in (
            ("ours_jepa", ours_jepa),
            ("ours_llava", ours_llava),
            ("ref_jepa", ref_jepa),
            ("ref_llava", ref_llava),
        )
    }
    # Cached and full-sequence variants reuse our JEPA model: each step's update is small (lr 1e-5) and every
    # variant sees the same number of them, so the timings stay comparable.

    def ours(r: int, batch: dict[str, torch.Tensor], **kw: Any) -> torch.Tensor:
        m = masks[r]
        return ours_jepa(**batch, jepa_context=m.context, jepa_targets=m.targets, **kw).loss

    def floor(r: int) -> torch.Tensor:
        m = masks[r]
        with torch.no_grad():
            embeds, span, _ = ours_jepa.embed(live["input_ids"], None, cached["context_features"])
        has = span[:, 1] > span[:, 0]
        allowed = jepa_allowed(
            base_allowed(live["attention_mask"], span, True), span, m.context, m.targets, has
        )
        embeds = embeds.detach().requires_grad_(True)
        out = ours_jepa.language_model.get_decoder()(
            inputs_embeds=embeds, attention_mask=to_additive(allowed, embeds.dtype), use_cache=False
        ).last_hidden_state
        out.float().mean().backward()
        return out.detach().mean()

    steps: dict[str, Step] = {
        "ref_llava": lambda r: upd["ref_llava"](
            record("llava", ref_llava(**ref_ids, pixel_values=pixels).loss)
        ),
        "ours_llava": lambda r: upd["ours_llava"](record("llava_ours", ours_llava(**plain).loss)),
        "ref_jepa": lambda r: upd["ref_jepa"](
            record(
                "jepa",
                ref_jepa(
                    **ref_ids,
                    pixel_values_enc=pixels,
                    pixel_values_pred=pixels,
                    mask_idxs_enc=masks[r].context,
                    mask_idxs_pred=masks[r].targets,
                    image_mask=torch.ones(cfg.batch, dtype=torch.bool),
                ).loss,
            )
        ),
        "ours_jepa": lambda r: upd["ours_jepa"](record("jepa_ours", ours(r, live))),
        "ours_jepa_full": lambda r: upd["ours_jepa"](ours(r, live, drop_unattended=False)),
        "ours_jepa_cached": lambda r: upd["ours_jepa"](ours(r, cached)),
        "floor": floor,
    }
    return steps, losses


def first_loss_diff(losses: dict[str, list[float]]) -> dict[str, float]:
    """|reference - ours| on the first round, for each step kind both sides ran."""
    return {
        k: abs(losses[k][0] - losses[f"{k}_ours"][0])
        for k in ("jepa", "llava")
        if k in losses and f"{k}_ours" in losses
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--reference", type=Path, required=True, help="aimagelab/JARVIS checkout (has src/models)"
    )
    parser.add_argument("--config", choices=sorted(CONFIGS), default="medium")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--json", type=Path)
    opts = parser.parse_args(argv)
    torch.set_num_threads(opts.threads)
    cfg = CONFIGS[opts.config]
    ref = import_reference(opts.reference.resolve())
    steps, losses = build_steps(cfg, ref, opts.warmup + opts.rounds)
    steps = {name: step for name, step in steps.items() if name in opts.variants}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(opts.warmup + opts.rounds):
        last = {}
        for name, step in steps.items():
            start = time.perf_counter()
            step(r)
            last[name] = time.perf_counter() - start
            if r >= opts.warmup:
                times[name].append(last[name])
        done = "warm-up" if r < opts.warmup else "timed"
        print(f"round {r} ({done}): " + ", ".join(f"{k} {v:.2f}s" for k, v in last.items()), flush=True)
        if r == 0:
            for kind, diff in first_loss_diff(losses).items():
                print(
                    f"round 0: |Δloss| {kind} {diff:.2e} (reference vs ours, identical weights)", flush=True
                )
    med = {name: statistics.median(t) for name, t in times.items()}
    seq = int(make_batch(cfg, build_model(cfg, jepa=False), cached=True)["input_ids"].shape[1])
    print(
        f"config {opts.config}: B={cfg.batch}, LLM sequence {seq}, {opts.rounds} rounds, {opts.threads} threads"
    )
    for name, value in med.items():
        print(f"{name:18s} {value:8.3f} s/step (min {min(times[name]):.3f}, max {max(times[name]):.3f})")
    pairs = (
        ("ref_jepa", "ours_jepa"),
        ("ref_jepa", "ours_jepa_cached"),
        ("ref_llava", "ours_llava"),
        ("ours_jepa", "ours_llava"),
        ("ours_jepa_cached", "ours_llava"),
        ("ours_jepa", "floor"),
        ("ours_jepa_cached", "floor"),
        ("ours_jepa_full", "ours_jepa"),
    )
    ratios = {f"{a}/{b}": med[a] / med[b] for a, b in pairs if a in med and b in med}
    for key, value in ratios.items():
        print(f"{key:30s} {value:6.2f}x")
    summary = {
        "config": opts.config,
        "rounds": opts.rounds,
        "threads": opts.threads,
        "seq_len": seq,
        "torch": torch.__version__,
        "median_s": med,
        "ratios": ratios,
        "first_loss_diff": first_loss_diff(losses),
    }
    if opts.json:
        opts.json.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


if __name__ == "__main__":
    main()
