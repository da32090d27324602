"""`jarvis export --format llava-hf`: plain transformers' LlavaForConditionalGeneration gives our logits."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from jarvis.model.configuration import JarvisConfig
from jarvis.model.export import ExportError, export_llava_hf
from jarvis.model.modeling import JarvisForCausalLM
from test_model import N, hf_tower, llm, timm_tower


@pytest.fixture(scope="module")
def tokenizer():
    from jarvis.data.tokenizer import build_tokenizer

    return build_tokenizer(["what colour is the square", "the square is red", "a blue circle"], 300, "vicuna_v1")


def _checkpoint(path: Path, tokenizer, tower: dict[str, Any], **kw: Any) -> JarvisForCausalLM:
    from jarvis.data.templates import IMAGE_TOKEN

    torch.manual_seed(1)
    text = {**llm(kw.pop("lm", "llama")), "vocab_size": len(tokenizer)}
    config = JarvisConfig(text_config=text, vision_config=tower,
                          image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
                          bidir_visual_attn=kw.pop("bidir_visual_attn", False), **kw)
    model = JarvisForCausalLM(config).eval()
    with torch.no_grad():  # non-trivial projector biases, so a dropped bias would show
        for p in model.projector.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return model


def _batch(model: JarvisForCausalLM, img: int) -> dict[str, torch.Tensor]:
    """2 rows, right padding: image after 3 tokens / at 0 (LLaVA's positions agree with ours there)."""
    g = torch.Generator().manual_seed(3)
    ids = torch.randint(10, 64, (2, N + 9), generator=g)
    attn = torch.ones_like(ids)
    attn[1, -3:] = 0
    ids[attn == 0] = 0
    ids[0, 3 : 3 + N] = img
    ids[1, :N] = img
    return {"input_ids": ids, "attention_mask": attn, "pixel_values": torch.randn(2, 3, 32, 32, generator=g)}


@pytest.mark.parametrize(
    ("tower", "lm", "strategy"),
    [(hf_tower("clip_vision_model", feature_layer=-2), "llama", "default"),
     (hf_tower("clip_vision_model"), "qwen2", "default"),
     (hf_tower("siglip_vision_model", feature_layer=-2), "llama", "full")],
    ids=["clip-penultimate-llama", "clip-last-qwen2", "siglip-penultimate-llama"],
)
def test_llava_export_gives_our_logits(tmp_path: Path, tokenizer, tower: dict, lm: str, strategy: str) -> None:
    from transformers import LlavaForConditionalGeneration

    model = _checkpoint(tmp_path / "ours", tokenizer, tower, lm=lm)
    assert export_llava_hf(tmp_path / "ours", tmp_path / "llava") == []
    llava = LlavaForConditionalGeneration.from_pretrained(tmp_path / "llava").eval()
    assert llava.config.vision_feature_select_strategy == strategy
    b = _batch(model, model.config.image_token_id)
    with torch.no_grad():
        ours = model(**b, return_logits=True).logits
        theirs = llava(**b).logits
    valid = b["attention_mask"].bool()
    assert torch.allclose(ours[valid], theirs[valid], atol=1e-5, rtol=1e-4)
    assert (ours[valid] - theirs[valid]).abs().max() < 1e-5


def test_llava_export_processor_counts_tokens_like_our_prompts(tmp_path: Path, tokenizer) -> None:
    from transformers import AutoProcessor

    from jarvis.data.conversation import build_prompt, expand_image_token, image_token_id
    from jarvis.data.templates import IMAGE_TOKEN
    from jarvis.stages.common import image_transform

    model = _checkpoint(tmp_path / "ours", tokenizer, hf_tower("clip_vision_model", feature_layer=-2))
    export_llava_hf(tmp_path / "ours", tmp_path / "llava")
    processor = AutoProcessor.from_pretrained(tmp_path / "llava", backend="pil")
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 44, 3), dtype=np.uint8))
    prompt = processor.apply_chat_template([{"role": "user", "content": f"{IMAGE_TOKEN}\nhi"}],
                                           add_generation_prompt=True, tokenize=False)
    enc = processor(images=image, text=prompt, return_tensors="pt")
    ids, _ = expand_image_token(build_prompt(tokenizer, "hi"), None, image_token_id(tokenizer), N)
    assert enc["input_ids"][0].tolist() == ids
    assert torch.allclose(enc["pixel_values"][0], image_transform(model.vision_tower, "pad")(image), atol=1e-5)


def test_llava_export_refuses_what_llava_cannot_express(tmp_path: Path, tokenizer) -> None:
    _checkpoint(tmp_path / "bidir", tokenizer, hf_tower("clip_vision_model"), bidir_visual_attn=True)
    with pytest.raises(ExportError, match="bidirectional attention inside the image span"):
        export_llava_hf(tmp_path / "bidir", tmp_path / "out")
    assert not (tmp_path / "out").exists()

    _checkpoint(tmp_path / "lin", tokenizer, timm_tower(), projector_type="linear")
    with pytest.raises(ExportError) as err:
        export_llava_hf(tmp_path / "lin", tmp_path / "out")
    assert "not a transformers CLIP or SigLIP" in str(err.value) and "Linear-GELU-Linear" in str(err.value)

    # SigLIP's last_hidden_state is post-layernorm; LLaVA reads hidden_states[-1] before it: caught numerically.
    _checkpoint(tmp_path / "siglip_last", tokenizer, hf_tower("siglip_vision_model"))
    with pytest.raises(ExportError, match="differs from our features"):
        export_llava_hf(tmp_path / "siglip_last", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_llava_export_with_attention_change_warns_and_differs(tmp_path: Path, tokenizer) -> None:
    from transformers import LlavaForConditionalGeneration

    model = _checkpoint(tmp_path / "bidir", tokenizer, hf_tower("clip_vision_model"), bidir_visual_attn=True)
    with pytest.warns(UserWarning, match="ATTENTION CHANGED"):
        export_llava_hf(tmp_path / "bidir", tmp_path / "llava", allow_attention_change=True)
    llava = LlavaForConditionalGeneration.from_pretrained(tmp_path / "llava").eval()
    b = _batch(model, model.config.image_token_id)
    with torch.no_grad():
        diff = (model(**b, return_logits=True).logits - llava(**b).logits).abs().max()
    assert diff > 1e-3  # honest: the causal export is a different model


def test_cli_export_writes_or_refuses_in_one_line(tmp_path: Path, tokenizer) -> None:
    from conftest import bin_path
    from pipeline_utils import run

    _checkpoint(tmp_path / "causal", tokenizer, hf_tower("clip_vision_model", feature_layer=-2))
    _checkpoint(tmp_path / "bidir", tokenizer, hf_tower("clip_vision_model"), bidir_visual_attn=True)
    ok = run(tmp_path, bin_path("jarvis"), "export", "--format", "llava-hf", "causal", "out")
    assert "wrote out (llava-hf)" in ok.stdout
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == [
        "LlavaForConditionalGeneration"]
    refused = run(tmp_path, bin_path("jarvis"), "export", "--format", "llava-hf", "bidir", "out2", check=False)
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and len(lines) == 1 and "bidirectional attention" in lines[0]
    assert not (tmp_path / "out2").exists()
