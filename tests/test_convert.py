"""convert_reference: a checkpoint in the reference's save_pretrained layout -> ours, same outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from jarvis.model.convert import KEY_MAP, convert_reference, map_key
from jarvis.model.modeling import JarvisForCausalLM
from test_model import IMG, batch, build, masks  # tests dir is on sys.path under pytest


def _to_reference_key(key: str) -> str:
    for ref, ours in KEY_MAP:
        if key.startswith(ours):
            return ref + key[len(ours) :]
    raise AssertionError(key)


def write_reference_checkpoint(
    model: JarvisForCausalLM, directory: Path, with_target_weights: bool = True
) -> None:
    """What the authors' save_pretrained writes: MLLMConfig / MLLMJEPAConfig fields + prefixed weights."""
    cfg = model.config
    vision = cfg.vision_config
    ref = {
        "model_type": "mllm_jepa" if cfg.has_jepa else "mllm",
        "text_config": cfg.text_config.to_dict(),
        "vision_config": vision["config"],
        "projector_type": cfg.projector_type,
        "projector_bias": cfg.projector_bias,
        "image_token_id": cfg.image_token_id,
        "bidir_visual_attn": cfg.bidir_visual_attn,
        "vision_layer_idx": vision["feature_layer"],
        "skip_left_visual_tokens": vision["drop_prefix_tokens"],
        "img_size": None,
    }
    if cfg.has_jepa:
        tgt = cfg.target_config
        ref.update(
            tgt_vision_model_name_or_path="facebook/dinov2-large",
            tgt_proj_type=cfg.jepa_head_type,
            tgt_proj_intermediate_size=0,
            tgt_proj_output_size=0,
            tgt_skip_left_visual_tokens=tgt["drop_prefix_tokens"],
            tgt_vision_layer_idx=tgt["feature_layer"],
            tgt_img_size=tgt["image_size"],
            jepa_loss_fn="cos_sim" if cfg.jepa_loss == "cos" else "smooth_l1",
            jepa_loss_weight=cfg.jepa_weight,
            jepa_llm_layer_idx=cfg.jepa_layer,
        )
    directory.mkdir(parents=True)
    (directory / "config.json").write_text(json.dumps(ref))
    state = {
        _to_reference_key(k): v.contiguous()
        for k, v in model.state_dict().items()
        if with_target_weights or not k.startswith("target_tower.")
    }
    save_file(state, str(directory / "model.safetensors"))


def _same_outputs(a: JarvisForCausalLM, b: JarvisForCausalLM, jepa: bool) -> None:
    x = batch(a)
    if not jepa:
        x.pop("pixel_values_target", None)
    m = masks() if jepa else {}
    out_a, out_b = a(**x, **m, return_logits=True), b(**x, **m, return_logits=True)
    assert torch.equal(out_a.logits, out_b.logits) and torch.equal(out_a.loss, out_b.loss)


def test_convert_jepa_checkpoint(tmp_path: Path) -> None:
    model = build(lm="llama", context="clip", target="dinov2_grid6", jepa_layer=1)
    write_reference_checkpoint(model, tmp_path / "ref")
    model.target_tower.save_pretrained(tmp_path / "dinov2")
    config = convert_reference(tmp_path / "ref", tmp_path / "ours", target_dir=tmp_path / "dinov2")
    assert config.has_jepa and config.jepa_loss == "cos" and config.image_token_id == IMG
    converted = JarvisForCausalLM.from_pretrained(tmp_path / "ours").eval()
    _same_outputs(model, converted, jepa=True)


def test_convert_plain_checkpoint_and_missing_target_weights(tmp_path: Path) -> None:
    plain = build(context="siglip", target=None)
    write_reference_checkpoint(plain, tmp_path / "ref_plain")
    convert_reference(tmp_path / "ref_plain", tmp_path / "ours_plain")
    _same_outputs(plain, JarvisForCausalLM.from_pretrained(tmp_path / "ours_plain").eval(), jepa=False)

    model = build(context="clip", target="dinov2_grid6")
    write_reference_checkpoint(model, tmp_path / "ref", with_target_weights=False)
    model.target_tower.save_pretrained(tmp_path / "dinov2")
    convert_reference(tmp_path / "ref", tmp_path / "ours", target_dir=tmp_path / "dinov2")
    _same_outputs(model, JarvisForCausalLM.from_pretrained(tmp_path / "ours").eval(), jepa=True)


def test_missing_target_config_fails_clearly(tmp_path: Path) -> None:
    model = build(context="clip", target="dinov2_grid6")
    write_reference_checkpoint(model, tmp_path / "ref")
    with pytest.raises(FileNotFoundError, match="tgt_vision_model_name_or_path='facebook/dinov2-large'"):
        convert_reference(tmp_path / "ref", tmp_path / "ours")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        convert_reference(tmp_path / "ref", tmp_path / "ours", target_dir=tmp_path / "nowhere")


def test_unknown_key_and_model_type_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unexpected key"):
        map_key("lm_head.weight")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "config.json").write_text(json.dumps({"model_type": "llava"}))
    with pytest.raises(ValueError, match="'mllm' or 'mllm_jepa'"):
        convert_reference(tmp_path / "bad", tmp_path / "out")
