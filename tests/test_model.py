"""JarvisForCausalLM on tiny random models (CPU): architecture matrix, equivalences, round trips."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
import torch

from jarvis.masking import MaskSpec, sample_block_masks
from jarvis.model.attention import base_allowed, jepa_allowed, to_additive
from jarvis.model.configuration import JarvisConfig
from jarvis.model.freeze import STAGE1_GROUPS, STAGE2_GROUPS, set_trainable
from jarvis.model.modeling import JarvisForCausalLM
from jarvis.model.vision import VisionTower
from jarvis.seeding import make_generator

IMG = 63
VOCAB = 64
N = 16  # 4x4 context grid
SPEC = MaskSpec(num_targets=2, target_scale=(0.2, 0.3), min_keep=1)


def llm(kind: str = "llama", layers: int = 2) -> dict[str, Any]:
    return dict(
        model_type=kind,
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=1,
        intermediate_size=64,
        vocab_size=VOCAB,
        max_position_embeddings=128,
    )


def hf_tower(model_type: str, hidden: int = 32, image: int = 32, **extra: Any) -> dict[str, Any]:
    cfg = dict(
        model_type=model_type,
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        image_size=image,
        patch_size=8,
    )
    return {"library": "transformers", "config": cfg, **extra}


def timm_tower(width: int = 32, **extra: Any) -> dict[str, Any]:
    kwargs = dict(img_size=32, patch_size=8, embed_dim=width, depth=2, num_heads=2)
    return {"library": "timm", "name": "vit_tiny_patch16_224", "kwargs": kwargs, **extra}


CONTEXT = {
    "timm_vit": lambda: timm_tower(),
    "clip": lambda: hf_tower("clip_vision_model", feature_layer=-2),
    "siglip": lambda: hf_tower("siglip_vision_model"),
}
TARGET = {
    "timm_vit": lambda: timm_tower(width=24),
    "dinov2_grid6": lambda: hf_tower("dinov2", hidden=24, image=48),  # 6x6 grid -> resized to 4x4
}


def build(
    lm: str = "llama",
    context: str = "timm_vit",
    target: str | None = "timm_vit",
    seed: int = 0,
    layers: int = 2,
    **kw: Any,
) -> JarvisForCausalLM:
    torch.manual_seed(seed)
    config = JarvisConfig(
        text_config=llm(lm, layers),
        vision_config=CONTEXT[context](),
        target_config=None if target is None else TARGET[target](),
        image_token_id=kw.pop("image_token_id", IMG),
        jepa_layer=kw.pop("jepa_layer", 1),
        **kw,
    )
    return JarvisForCausalLM(config).eval()


def batch(model: JarvisForCausalLM, seed: int = 0) -> dict[str, torch.Tensor]:
    """3 samples: image at 0 (stage-1 plain), text only, image after a 2-token prefix; right padding."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, IMG, (3, 24), generator=g)
    ids[0, :N] = IMG
    ids[2, 2 : 2 + N] = IMG
    attn = torch.ones_like(ids)
    attn[1, -5:] = 0
    attn[2, -2:] = 0
    ids[attn == 0] = 0
    labels = ids.masked_fill((ids == IMG) | (attn == 0), -100)
    out = {
        "input_ids": ids,
        "attention_mask": attn,
        "labels": labels,
        "pixel_values": torch.randn(2, 3, 32, 32, generator=g),
    }
    if model.target_tower is not None:
        s = model.target_tower.image_size
        out["pixel_values_target"] = torch.randn(2, 3, s, s, generator=g)
    return out


def masks(n_img: int = 2, seed: int = 0) -> dict[str, torch.Tensor]:
    m = sample_block_masks((4, 4), SPEC, n_img, make_generator("model-test", seed))
    return {"jepa_context": m.context, "jepa_targets": m.targets}


MATRIX = [
    ("llama", "timm_vit", "timm_vit"),
    ("llama", "clip", "dinov2_grid6"),
    ("llama", "siglip", "timm_vit"),
    ("qwen2", "timm_vit", "dinov2_grid6"),
    ("qwen2", "clip", "timm_vit"),
    ("qwen2", "siglip", "dinov2_grid6"),
    ("mistral", "timm_vit", "timm_vit"),
    ("mistral", "clip", "dinov2_grid6"),
    ("mistral", "siglip", "timm_vit"),
]


@pytest.mark.parametrize(("lm", "context", "target"), MATRIX)
def test_architecture_matrix_forward_backward_stage1(lm: str, context: str, target: str) -> None:
    model = build(lm, context, target)
    set_trainable(model, STAGE1_GROUPS)
    model.train()
    out = model(**batch(model), **masks())
    assert torch.isfinite(out.loss) and torch.isfinite(out.loss_jepa) and out.logits is None
    assert torch.allclose(out.loss, out.loss_ntp + model.config.jepa_weight * out.loss_jepa)
    out.loss.backward()
    for part in (model.projector, model.mask_token, model.jepa_head):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    for part in (model.language_model, model.vision_tower, model.target_tower):
        assert all(p.grad is None for p in part.parameters())
    assert not model.target_tower.training and not model.vision_tower.training


def test_readout_hook_equals_hidden_states() -> None:
    """jepa_layer is a 1-indexed hidden_states index; the hook must read exactly that tensor."""
    model = build(layers=3)
    b = batch(model)
    embeds, span, _ = model.embed(b["input_ids"], b["pixel_values"], None)
    mask = to_additive(base_allowed(b["attention_mask"], span, True), embeds.dtype)
    positions = (b["attention_mask"].cumsum(-1) - 1).clamp(min=0)
    ref = model.language_model.get_decoder()(
        inputs_embeds=embeds, attention_mask=mask, position_ids=positions, output_hidden_states=True
    )
    for layer in (1, 2, 3, -1):
        model.config.jepa_layer = layer
        _, readout = model.run_language_model(embeds, mask, b["attention_mask"], capture=True)
        assert torch.allclose(readout, ref.hidden_states[layer], atol=1e-6), layer


def test_zero_target_blocks_with_whole_grid_context_equals_plain_bidir_forward() -> None:
    model = build()
    b = batch(model)
    full = {
        "jepa_context": torch.arange(N).expand(2, N),
        "jepa_targets": torch.zeros(2, 0, 0, dtype=torch.long),
    }
    jepa = model(**b, **full, return_logits=True)
    plain = model(**{k: v for k, v in b.items() if k != "pixel_values_target"}, return_logits=True)
    assert torch.allclose(jepa.loss_ntp, plain.loss_ntp, atol=1e-6)
    assert torch.allclose(jepa.logits, plain.logits, atol=1e-5)
    assert jepa.loss_jepa.item() == 0.0


def test_selective_logits_give_the_same_loss() -> None:
    model = build()
    b = batch(model)
    fast = model(**b, **masks())
    full = model(**b, **masks(), return_logits=True)
    assert fast.logits is None and full.logits.shape == (3, 24, VOCAB)
    assert torch.allclose(fast.loss_ntp, full.loss_ntp, atol=1e-6)
    assert torch.allclose(fast.loss, full.loss, atol=1e-6)
    positions = (b["labels"][:, 1:] != -100).nonzero()  # what the collator precomputes on the CPU
    gathered = model(**b, **masks(), label_positions=positions)
    assert torch.allclose(gathered.loss_ntp, full.loss_ntp, atol=1e-6)


def test_cached_features_equal_pixels() -> None:
    model = build(target="dinov2_grid6")
    b = batch(model)
    with torch.no_grad():
        ctx = model.vision_tower(b["pixel_values"])
        tgt = model.target_tower(b["pixel_values_target"])
    from_pixels = model(**b, **masks())
    cached = {k: v for k, v in b.items() if not k.startswith("pixel_values")}
    from_cache = model(**cached, context_features=ctx, target_features=tgt, **masks())
    assert torch.allclose(from_pixels.loss, from_cache.loss, atol=1e-6)


def _reference_style_loss(
    model: JarvisForCausalLM, b: dict[str, torch.Tensor], m: dict[str, torch.Tensor]
) -> tuple:
    """Recompute the JEPA step with loops, following the reference's forward (paper-spec §5–§7)."""
    ids, attn, labels = b["input_ids"], b["attention_mask"], b["labels"]
    ctx_idx, tgt_idx = m["jepa_context"], m["jepa_targets"]
    with torch.no_grad():
        vis = model.projector(model.vision_tower(b["pixel_values"]))
        feats = model.target_tower(b["pixel_values_target"])
        feats = (
            torch.nn.functional.interpolate(
                feats.transpose(1, 2).reshape(2, -1, *model.target_tower.grid),
                size=(4, 4),
                mode="bilinear",
                align_corners=False,
            )
            .flatten(2)
            .transpose(1, 2)
        )
        z = model.mask_token.weight[0]
        for i in range(2):
            for block in tgt_idx[i]:
                vis[i, block] = z
        emb = model.get_input_embeddings()(ids.masked_fill(ids == IMG, 0)).clone()
        starts = []
        k = 0
        for r in range(3):
            pos = (ids[r] == IMG).nonzero().flatten().tolist()
            if pos:
                emb[r, pos] = vis[k]
                starts.append(pos[0])
                k += 1
        span = torch.tensor([[s, s + N] for s in [starts[0], 0, starts[1]]])
        span[1] = 0
        has = torch.tensor([True, False, True])
        allowed = jepa_allowed(base_allowed(attn, span, True), span, ctx_idx, tgt_idx, has)
        out = model.language_model.get_decoder()(
            inputs_embeds=emb, attention_mask=to_additive(allowed, emb.dtype), output_hidden_states=True
        )
        logits = model.language_model.lm_head(out.last_hidden_state)
        ntp = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100
        )
        hs = out.hidden_states[model.config.jepa_layer][[0, 2]]
        total = 0.0
        for j in range(tgt_idx.shape[1]):
            pred = model.jepa_head(
                hs.gather(1, (tgt_idx[:, j] + torch.tensor(starts)[:, None]).unsqueeze(-1).expand(-1, -1, 32))
            )
            tgt = feats.gather(1, tgt_idx[:, j].unsqueeze(-1).expand(-1, -1, feats.shape[-1]))
            total = (
                total
                - torch.nn.functional.cosine_similarity(pred.flatten(0, 1), tgt.flatten(0, 1), dim=-1).mean()
            )
        return ntp, total / tgt_idx.shape[1]


def test_jepa_step_matches_reference_style_loop() -> None:
    model = build(target="dinov2_grid6")
    b, m = batch(model), masks(seed=3)
    out = model(**b, **m)
    ntp, jepa = _reference_style_loss(model, b, m)
    assert torch.allclose(out.loss_ntp, ntp, atol=1e-5)
    assert torch.allclose(out.loss_jepa, jepa, atol=1e-5)


def test_batch_without_images() -> None:
    model = build()
    set_trainable(model, STAGE1_GROUPS)
    b = batch(model)
    ids = b["input_ids"].masked_fill(b["input_ids"] == IMG, 5)
    labels = b["labels"].clone()
    before = (ids.clone(), labels.clone())
    empty = {
        "jepa_context": torch.zeros(0, 5, dtype=torch.long),
        "jepa_targets": torch.zeros(0, 2, 3, dtype=torch.long),
    }
    out = model(input_ids=ids, attention_mask=b["attention_mask"], labels=labels, **empty)
    assert out.loss_jepa.item() == 0.0 and torch.isfinite(out.loss)
    assert torch.allclose(out.loss, out.loss_ntp)
    out.loss.backward()  # every trainable part is in the graph (no unused parameters under DDP)
    assert model.jepa_head[0].weight.grad is not None and model.mask_token.weight.grad is not None
    assert torch.equal(ids, before[0]) and torch.equal(labels, before[1])
    plain = model(input_ids=ids, attention_mask=b["attention_mask"], labels=labels)
    assert plain.loss_jepa.item() == 0.0


def test_text_only_causal_model_matches_the_language_model() -> None:
    model = build(target=None, bidir_visual_attn=False)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(1, IMG, (2, 10), generator=g)
    out = model(input_ids=ids, labels=ids)
    ref = model.language_model(input_ids=ids, labels=ids)
    assert torch.allclose(out.loss, ref.loss, atol=1e-6)


def test_image_mask_and_mask_errors() -> None:
    model = build()
    b = batch(model)
    with pytest.raises(ValueError, match="both jepa_context and jepa_targets"):
        model(**b, jepa_context=masks()["jepa_context"])
    with pytest.raises(ValueError, match="images"):
        model(**b, **masks(n_img=3))
    with pytest.raises(ValueError, match="without target encoder"):
        build(target=None)(**{k: v for k, v in b.items() if k != "pixel_values_target"}, **masks())
    with pytest.raises(ValueError, match="requires bidir_visual_attn"):
        build(bidir_visual_attn=False)
    with pytest.raises(ValueError, match="decoder layers"):
        build(jepa_layer=3)


def _outputs(
    model: JarvisForCausalLM, b: dict[str, torch.Tensor], m: dict[str, torch.Tensor] | None
) -> tuple:
    out = model(**b, **(m or {}), return_logits=True)
    return out.loss, out.logits


def test_save_load_roundtrip_jepa_and_plain(tmp_path: Path) -> None:
    model = build(lm="qwen2", context="clip", target="dinov2_grid6")
    b, m = batch(model), masks()
    model.save_pretrained(tmp_path / "jepa")
    assert (tmp_path / "jepa" / "model.safetensors").is_file()
    loaded = JarvisForCausalLM.from_pretrained(tmp_path / "jepa").eval()
    assert loaded.config.target_config == model.config.target_config
    for x, y in zip(_outputs(model, b, m), _outputs(loaded, b, m), strict=True):
        assert torch.equal(x, y)

    plain = model.to_plain()
    assert plain.target_tower is None and plain.mask_token is None and plain.config.target_config is None
    plain.save_pretrained(tmp_path / "plain")
    loaded_plain = JarvisForCausalLM.from_pretrained(tmp_path / "plain").eval()
    b_plain = {k: v for k, v in b.items() if k != "pixel_values_target"}
    for x, y in zip(_outputs(model, b_plain, None), _outputs(loaded_plain, b_plain, None), strict=True):
        assert torch.equal(x, y)
    # A stage-1 JEPA checkpoint also loads directly as a plain model (stage-2 hand-off).
    as_plain = JarvisForCausalLM.from_pretrained(tmp_path / "jepa", target_config=None).eval()
    assert as_plain.target_tower is None
    assert torch.equal(_outputs(as_plain, b_plain, None)[1], _outputs(model, b_plain, None)[1])


def _greedy_no_cache(model: JarvisForCausalLM, ids, attn, pixels, steps: int) -> torch.Tensor:
    new = []
    for _ in range(steps):
        logits = model(input_ids=ids, attention_mask=attn, pixel_values=pixels, return_logits=True).logits
        token = logits[:, -1].argmax(-1)
        new.append(token)
        ids = torch.cat([ids, token[:, None]], dim=1)
        attn = torch.cat([attn, torch.ones_like(attn[:, :1])], dim=1)
    return torch.stack(new, dim=1)


@pytest.mark.parametrize("bidir", [True, False])
def test_generate_greedy_equals_no_cache_loop(bidir: bool) -> None:
    # The placeholder lies outside the vocabulary, so generated tokens can never be mistaken for it.
    img = VOCAB + 5
    model = build(target=None, bidir_visual_attn=bidir, seed=4, image_token_id=img)
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, VOCAB, (3, 22), generator=g)
    attn = torch.ones_like(ids)
    attn[0, :3] = 0  # left padding
    attn[2, :1] = 0
    ids[attn == 0] = 0
    ids[0, 4 : 4 + N] = img
    ids[2, 2 : 2 + N] = img
    pixels = torch.randn(2, 3, 32, 32, generator=g)
    cached = model.generate_greedy(ids, attn, pixels, max_new_tokens=6)
    assert cached.shape == (3, 6)
    assert torch.equal(cached, _greedy_no_cache(model, ids, attn, pixels, 6))
    eos = int(cached[1, 1])
    stopped = model.generate_greedy(ids, attn, pixels, max_new_tokens=6, eos_token_id=eos)
    first = (stopped[1] == eos).nonzero()[0, 0]
    assert (stopped[1, first:] == eos).all()


def test_set_trainable_table_and_stages(caplog: pytest.LogCaptureFixture) -> None:
    model = build()
    with caplog.at_level(logging.INFO, logger="jarvis.model.freeze"):
        table = set_trainable(model, STAGE2_GROUPS)
    assert "trainable parameters" in caplog.text and "language_model" in caplog.text
    assert table["projector"]["trainable"] and table["language_model"]["trainable"]
    assert not table["vision_tower"]["trainable"] and not table["jepa_head"]["trainable"]
    n_proj = sum(p.numel() for p in model.projector.parameters())
    assert table["projector"]["n_params"] == n_proj
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"projector", "language_model"}
    set_trainable(model, STAGE1_GROUPS)
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {"projector", "mask_token", "jepa_head"}
    table = set_trainable(model, {"projector", "predictor"})
    first_layer = model.language_model.get_decoder().layers[0]
    assert all(p.requires_grad for p in first_layer.parameters())
    assert not any(p.requires_grad for p in model.language_model.get_decoder().layers[1].parameters())
    with pytest.raises(ValueError, match="unknown trainable groups"):
        set_trainable(model, {"projecter"})
    with pytest.raises(ValueError, match="no jepa_head"):
        set_trainable(build(target=None), {"jepa_head"}, strict=True)


def test_from_components(tmp_path: Path) -> None:
    donor = build(context="clip", target="timm_vit", seed=7)
    donor.language_model.save_pretrained(tmp_path / "llm")
    donor.vision_tower.save_pretrained(tmp_path / "clip")
    donor.target_tower.save_pretrained(tmp_path / "vit")
    model = JarvisForCausalLM.from_components(
        tmp_path / "llm",
        tmp_path / "clip",
        tmp_path / "vit",
        vision_options={"feature_layer": -2},
        image_token_id=IMG,
        jepa_layer=1,
    ).eval()
    for ours, theirs in zip(
        model.language_model.state_dict().values(), donor.language_model.state_dict().values(), strict=True
    ):
        assert torch.equal(ours, theirs)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(model.vision_tower(x), donor.vision_tower(x))
    assert torch.equal(model.target_tower(x), donor.target_tower(x))
    assert model.config.vision_config["feature_layer"] == -2
    out = model(**batch(model), **masks())
    assert torch.isfinite(out.loss)


def test_vision_tower_properties_and_prefix_check() -> None:
    clip = VisionTower(hf_tower("clip_vision_model"))
    assert clip.grid == (4, 4) and clip.num_patches == 16 and clip.hidden_size == 32 and clip.image_size == 32
    assert clip.drop_prefix_tokens == 1 and len(clip.image_mean) == 3
    assert VisionTower(hf_tower("siglip_vision_model")).drop_prefix_tokens == 0
    # The reference's SigLIP bug (dropping a real patch) is caught loudly.
    bad = VisionTower(hf_tower("siglip_vision_model", drop_prefix_tokens=1))
    with pytest.raises(ValueError, match="expected the 4x4 grid"):
        bad(torch.randn(1, 3, 32, 32))
    vit = VisionTower(timm_tower(feature_layer=-2))
    assert vit(torch.randn(2, 3, 32, 32)).shape == (2, 16, 32)


def test_from_components_trains_in_float32_whatever_the_checkpoints_dtype(tmp_path: Path) -> None:
    """vicuna-7b-v1.5 is published in float16, and transformers 5 loads a checkpoint in its own dtype: the LM came up
    float16 beside a float32 projector and JEPA head, and stage 1 failed at its first step ("expected m1 and m2 to
    have the same dtype", found by the rehearsal). Components load in float32; the Trainer sets the precision."""
    donor = build(context="clip", target="dinov2_grid6", seed=7)
    donor.language_model.to(torch.float16).save_pretrained(tmp_path / "llm")
    donor.vision_tower.model.to(torch.float16)
    donor.vision_tower.save_pretrained(tmp_path / "clip")
    donor.target_tower.model.to(torch.float16)
    donor.target_tower.save_pretrained(tmp_path / "dino")
    assert json.loads((tmp_path / "llm" / "config.json").read_text())["dtype"] == "float16"
    model = JarvisForCausalLM.from_components(tmp_path / "llm", tmp_path / "clip", tmp_path / "dino",
                                              vision_options={"feature_layer": -2}, image_token_id=IMG,
                                              jepa_layer=1)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    out = model(**batch(model), **masks())
    assert torch.isfinite(out.loss)
