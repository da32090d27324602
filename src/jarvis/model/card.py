"""The model card (``README.md``) written into every trained checkpoint folder: recipe, data, results, usage.

Scores are not known when a checkpoint is written (evaluation runs after it, and a declared output is never edited
by a later stage), so the card lists the training metrics and points at the score files the DAG writes.
"""

from __future__ import annotations

import json
from typing import Any

from jarvis import paths


def _yaml_block(data: Any) -> str:
    import yaml

    return "```yaml\n" + yaml.safe_dump(data, sort_keys=False, width=110).rstrip() + "\n```"


def model_card(params: Any, exp: str, stage: str, metrics: dict[str, Any], n_samples: int | None = None) -> str:
    """Markdown card for the ``stage`` checkpoint of experiment ``exp`` (``params``: the validated Params)."""
    e = params.experiment(exp)
    recipe = params.jepa_recipe(exp) if stage == "pretrain" else None
    training = params.stage_training(exp, stage).model_dump(mode="json")
    data = params.datasets[e.data].model_dump(mode="json")
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: image-text-to-text",
        "tags: [jarvis, llava, i-jepa, multimodal]",
        "---",
        "",
        f"# {exp} — {stage}",
        "",
        f"{e.paper_ref}. A LLaVA-style MLLM trained by the `jarvis` suite (reproduction of JARVIS, arXiv 2512.15885):",
        f"stage `{stage}` of experiment `{exp}` ({'stage 1, alignment' if stage == 'pretrain' else 'stage 2, instruction tuning'}).",
        "",
        "## Recipe",
        "",
        f"- language model: `{e.llm}`; vision tower: `{e.vision}`; projector: `{e.projector}`",
        f"- visual attention: {'bidirectional inside the image span' if e.bidir_visual_attn else 'causal'}",
        f"- JEPA objective: {f'target tower `{recipe.target}`, loss `{recipe.loss}`, weight {recipe.weight}, skip probability {recipe.skip_prob}' if recipe else 'none in this stage'}",
        f"- seed: {params.seed}",
        "",
        _yaml_block({"training": training, **({"jepa": recipe.model_dump(mode="json")} if recipe else {})}),
        "",
        "## Data",
        "",
        f"- data set `{e.data}` ({data.get('kind')}); {'alignment captions' if stage == 'pretrain' else 'instruction conversations'}"
        + (f", {n_samples} samples after validation" if n_samples is not None else ""),
        "",
        _yaml_block({e.data: data}),
        "",
        "## Results",
        "",
        "Training metrics of this stage:",
        "",
        "```json",
        json.dumps({k: v for k, v in metrics.items() if v is not None}, indent=2, sort_keys=True, default=str),
        "```",
        "",
        "Benchmark scores are written after this checkpoint, by `jarvis evaluate`, to "
        f"`{paths.eval_dir(exp, 'BENCHMARK').as_posix()}/scores.json` (one folder per benchmark); "
        "`jarvis report` collects them in "
        f"`{(paths.reports_dir() / 'table.md').as_posix()}`.",
        "",
        "## Use",
        "",
        "```python",
        "import jarvis  # registers the `jarvis` model type with transformers' Auto classes",
        "from transformers import AutoModelForImageTextToText, AutoProcessor",
        "",
        "model = AutoModelForImageTextToText.from_pretrained(path)",
        'processor = AutoProcessor.from_pretrained(path, backend="pil")  # the PIL backend = our evaluation pixels',
        'prompt = processor.apply_chat_template([{"role": "user", "content": "<image>\\nWhat is shown?"}],',
        "                                       add_generation_prompt=True, tokenize=False)",
        'inputs = processor(images=image, text=prompt, return_tensors="pt")',
        "answer = model.generate(**inputs)[:, inputs['input_ids'].shape[1]:]",
        "```",
        "",
        "Greedy decoding with `generation_config.json` reproduces `jarvis evaluate`. "
        + ("A causal-attention checkpoint exports to `LlavaForConditionalGeneration` with "
           "`jarvis export --format llava-hf` (for lmms-eval, vLLM)." if not e.bidir_visual_attn else
           "Its bidirectional visual attention has no `LlavaForConditionalGeneration` equivalent, so "
           "`jarvis export --format llava-hf` refuses it."),
        "",
    ]
    return "\n".join(lines)
