"""Hugging Face integration: Auto classes after `import jarvis`, `generate` through GenerationMixin, the processor
and the files saved beside a checkpoint (issue 10, "Hugging Face")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from jarvis.model.configuration import JarvisConfig
from jarvis.model.modeling import JarvisForCausalLM
from test_model import IMG, VOCAB, N, build, hf_tower, llm


def _prompts(model: JarvisForCausalLM, img: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """3 left-padded rows: image after 4 tokens, text only, image after 2 tokens."""
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(1, VOCAB, (3, 22), generator=g)
    attn = torch.ones_like(ids)
    attn[0, :3] = 0
    attn[2, :1] = 0
    ids[attn == 0] = 0
    ids[0, 4 : 4 + N] = img
    ids[2, 2 : 2 + N] = img
    return ids, attn, torch.randn(2, 3, 32, 32, generator=g)


@pytest.mark.parametrize("bidir", [True, False])
def test_generate_equals_generate_greedy(bidir: bool) -> None:
    img = VOCAB + 5  # outside the vocabulary: never generated
    model = build(target=None, bidir_visual_attn=bidir, seed=4, image_token_id=img)
    ids, attn, pixels = _prompts(model, img)
    ours = model.generate_greedy(ids, attn, pixels, max_new_tokens=6)
    out = model.generate(
        input_ids=ids, attention_mask=attn, pixel_values=pixels, max_new_tokens=6, do_sample=False,
        eos_token_id=None, pad_token_id=0,
    )
    assert out.shape == (3, 22 + 6)
    assert torch.equal(out[:, :22], ids) and torch.equal(out[:, 22:], ours)

    # With an eos: finished rows are padded (pad = eos here, as generate_greedy repeats eos).
    eos = int(ours[1, 1])
    ours_eos = model.generate_greedy(ids, attn, pixels, max_new_tokens=6, eos_token_id=eos)
    out_eos = model.generate(
        input_ids=ids, attention_mask=attn, pixel_values=pixels, max_new_tokens=6, do_sample=False,
        eos_token_id=eos, pad_token_id=eos,
    )
    assert torch.equal(out_eos[:, 22:], ours_eos)


def test_generate_from_cached_features_and_without_padding() -> None:
    model = build(target=None, seed=3, image_token_id=IMG)
    ids, attn, pixels = _prompts(model, IMG)
    ids, attn = ids[2:], torch.ones_like(attn[2:])  # one row, no padding: generate drops the mask
    ids[0, 0] = 5
    pixels = pixels[1:]
    feats = model.vision_tower(pixels)
    ours = model.generate_greedy(ids, attn, pixels, max_new_tokens=5)
    from_pixels = model.generate(input_ids=ids, pixel_values=pixels, max_new_tokens=5, do_sample=False,
                                 eos_token_id=None, pad_token_id=0)
    from_feats = model.generate(input_ids=ids, context_features=feats, max_new_tokens=5, do_sample=False,
                                eos_token_id=None, pad_token_id=0)
    assert torch.equal(from_pixels[:, ids.shape[1]:], ours) and torch.equal(from_feats, from_pixels)


def test_prepare_inputs_for_generation_sends_images_on_the_first_step_only() -> None:
    model = build(target=None, image_token_id=IMG)
    ids = torch.ones(1, 4, dtype=torch.long)
    extra = {"pixel_values": torch.zeros(1, 3, 32, 32), "context_features": torch.zeros(1, N, 32)}
    first = model.prepare_inputs_for_generation(ids, is_first_iteration=True, **extra)
    later = model.prepare_inputs_for_generation(ids, is_first_iteration=False, next_sequence_length=1, **extra)
    assert "pixel_values" in first and "context_features" in first
    assert "pixel_values" not in later and "context_features" not in later and later["input_ids"].shape == (1, 1)


def test_auto_classes_after_import_jarvis(tmp_path: Path) -> None:
    """A fresh interpreter: `import jarvis`, then plain transformers Auto classes load the checkpoint."""
    model = build(target=None, image_token_id=IMG)
    model.save_pretrained(tmp_path / "ckpt")
    code = (
        "import jarvis, sys\n"
        "from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText\n"
        f"d = {str(tmp_path / 'ckpt')!r}\n"
        "c = AutoConfig.from_pretrained(d)\n"
        "m = AutoModelForCausalLM.from_pretrained(d)\n"
        "v = AutoModelForImageTextToText.from_pretrained(d)\n"
        "print(type(c).__name__, type(m).__name__, type(v).__name__, m.can_generate())\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["JarvisConfig", "JarvisForCausalLM", "JarvisForCausalLM", "True"]


def test_generation_config_saved_with_the_lm_ids(tmp_path: Path) -> None:
    text = {**llm(), "bos_token_id": 2, "eos_token_id": 3, "pad_token_id": 0}
    model = JarvisForCausalLM(JarvisConfig(text_config=text, vision_config=hf_tower("clip_vision_model"),
                                           image_token_id=IMG))
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "generation_config.json").read_text())
    assert (saved["bos_token_id"], saved["eos_token_id"], saved["pad_token_id"]) == (2, 3, 0)


@pytest.fixture(scope="module")
def tokenizer():
    from jarvis.data.tokenizer import build_tokenizer

    return build_tokenizer(["what colour is the square", "the square is red", "a blue circle"], 300, "vicuna_v1")


def _chat_model(tokenizer) -> JarvisForCausalLM:
    from jarvis.data.templates import IMAGE_TOKEN

    text = {**llm(), "vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id,
            "bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id}
    torch.manual_seed(0)
    config = JarvisConfig(text_config=text, vision_config=hf_tower("clip_vision_model", feature_layer=-2),
                          image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
    return JarvisForCausalLM(config).eval()


def test_auto_processor_reproduces_our_evaluation_inputs(tmp_path: Path, tokenizer) -> None:
    from transformers import AutoProcessor

    from jarvis.data.conversation import build_prompt, expand_image_token, image_token_id
    from jarvis.data.templates import IMAGE_TOKEN
    from jarvis.model.processing import processor_for
    from jarvis.stages.common import image_transform

    model = _chat_model(tokenizer)
    processor_for(model, tokenizer).save_pretrained(tmp_path)
    question = "what colour is the square?"
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 24, 3), dtype=np.uint8))
    expected_ids, _ = expand_image_token(build_prompt(tokenizer, question), None, image_token_id(tokenizer),
                                         model.vision_tower.num_patches)
    expected_pixels = image_transform(model.vision_tower, "pad")(image)

    pil = AutoProcessor.from_pretrained(tmp_path, backend="pil")
    prompt = pil.apply_chat_template([{"role": "user", "content": f"{IMAGE_TOKEN}\n{question}"}],
                                     add_generation_prompt=True, tokenize=False)
    enc = pil(images=image, text=prompt, return_tensors="pt")
    assert enc["input_ids"][0].tolist() == expected_ids
    assert torch.allclose(enc["pixel_values"][0], expected_pixels, atol=1e-5)

    default = AutoProcessor.from_pretrained(tmp_path)  # torchvision backend: not bit-identical (stack-facts §4)
    diff = (default(images=image, text=prompt, return_tensors="pt")["pixel_values"][0] - expected_pixels).abs()
    assert 0 < float(diff.max()) < 0.05

    new = model.generate(**enc, max_new_tokens=4, do_sample=False)[:, enc["input_ids"].shape[1]:]
    ours = model.generate_greedy(enc["input_ids"], enc["attention_mask"], expected_pixels[None], max_new_tokens=4,
                                 eos_token_id=tokenizer.eos_token_id)
    assert torch.equal(new[:, : ours.shape[1]], ours)


def test_trained_checkpoint_folder_loads_with_auto_classes(tmp_path: Path, tokenizer, monkeypatch) -> None:
    """run_training as the train stage calls it: the declared folder holds exactly the model's files."""
    from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

    from conftest import ROOT
    from jarvis.config import load_params
    from jarvis.data.collate import Collator
    from jarvis.data.templates import IMAGE_TOKEN
    from jarvis.model.card import model_card
    from jarvis.model.processing import generation_config_for, processor_for
    from jarvis.training import run_training
    from test_training import _tower, tiny_settings

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    img = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
    text = {**llm(), "vocab_size": len(tokenizer)}
    torch.manual_seed(0)
    model = JarvisForCausalLM(JarvisConfig(text_config=text, vision_config=_tower("clip_vision_model"),
                                           image_token_id=img, bidir_visual_attn=False))
    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(8):
        caption = torch.randint(10, len(tokenizer), (5,), generator=g)
        samples.append({"input_ids": torch.cat([torch.full((64,), img), caption]),
                        "labels": torch.cat([torch.full((64,), -100), caption]),
                        "pixel_values": torch.randn(3, 32, 32, generator=g)})
    model.generation_config = generation_config_for(tokenizer, max_new_tokens=3)
    from jarvis.config import load_raw
    from jarvis.plan import Resolver

    plan = Resolver(load_params(ROOT / "params.yaml"), load_raw(ROOT / "params.yaml")).train("finetune", "llava", 0)
    out = tmp_path / "runs" / "llava" / "finetune" / "model"
    run_training(model, samples, Collator(pad_token_id=tokenizer.pad_token_id),
                 tiny_settings(stage="finetune", mask_spec=None, max_steps=2), out, tmp_path / "_work", None,
                 processing_class=processor_for(model, tokenizer), model_card=lambda m: model_card(
                     plan, m, n_samples=len(samples)))

    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "chat_template.jinja", "config.json", "generation_config.json", "model.safetensors",
        "processor_config.json", "tokenizer.json", "tokenizer_config.json"]
    card = (out / "README.md").read_text()
    assert "# llava — finetune" in card and "## Recipe" in card and "## Data" in card and '"steps": 2' in card
    assert "runs/llava/s0/eval/BENCHMARK/scores.json" in card
    gen = json.loads((out / "generation_config.json").read_text())
    assert gen["max_new_tokens"] == 3 and gen["eos_token_id"] in (tokenizer.eos_token_id, [tokenizer.eos_token_id])
    assert gen.get("do_sample", False) is False

    assert type(AutoConfig.from_pretrained(out)).__name__ == "JarvisConfig"
    loaded = AutoModelForImageTextToText.from_pretrained(out).eval()
    processor = AutoProcessor.from_pretrained(out, backend="pil")
    image = Image.fromarray(np.random.default_rng(1).integers(0, 255, (30, 50, 3), dtype=np.uint8))
    prompt = processor.apply_chat_template([{"role": "user", "content": f"{IMAGE_TOKEN}\nwhat is it?"}],
                                           add_generation_prompt=True, tokenize=False)
    enc = processor(images=image, text=prompt, return_tensors="pt")
    new = loaded.generate(**enc)[:, enc["input_ids"].shape[1]:]  # generation_config.json: greedy, 3 tokens
    ours = loaded.generate_greedy(enc["input_ids"], enc["attention_mask"], enc["pixel_values"], max_new_tokens=3,
                                  eos_token_id=tokenizer.eos_token_id)
    assert new.shape[1] <= 3 and torch.equal(new, ours[:, : new.shape[1]])


def test_evaluate_answers_equal_hf_generate_one_question_at_a_time(tokenizer, capsys) -> None:
    """The evaluate stage's batched, left-padded greedy answers == plain `generate` per question (batch 1)."""
    from dataclasses import dataclass

    from jarvis.data.conversation import build_prompt, expand_image_token, image_token_id
    from jarvis.stages.common import image_transform
    from jarvis.stages.evaluate import generate_answers

    @dataclass
    class Q:
        qs: str
        colour: tuple[int, int, int]
        max_new_tokens: int = 4

        def load_image(self) -> Image.Image:
            return Image.new("RGB", (30, 20), self.colour)

    model = _chat_model(tokenizer)
    questions = [Q("what colour is the square?", (200, 30, 30)), Q("a blue circle?", (10, 10, 220)),
                 Q("is the square red or blue? answer", (30, 200, 30))]
    answers = generate_answers(model, tokenizer, questions, batch_size=2, max_new_tokens=4)
    assert all(answers)  # 4 greedy tokens of a random model: not all special
    transform = image_transform(model.vision_tower, "pad")
    for q, answer in zip(questions, answers, strict=True):
        ids, _ = expand_image_token(build_prompt(tokenizer, q.qs), None, image_token_id(tokenizer), N)
        new = model.generate(input_ids=torch.tensor([ids]), pixel_values=transform(q.load_image())[None],
                             max_new_tokens=4, do_sample=False)[0, len(ids):]
        assert answer == tokenizer.decode(new, skip_special_tokens=True).strip()
    assert "evaluate: 100%" in capsys.readouterr().err  # the progress bar, as plain lines off a terminal
