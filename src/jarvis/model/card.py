"""The model card (``README.md``) written into every trained checkpoint folder: recipe, data, results, usage.

Scores are not known when a checkpoint is written (evaluation runs after it, and a declared output is never edited
by a later stage), so the card lists the training metrics and points at the score files the DAG writes.
"""

from __future__ import annotations

import json
from typing import Any

from jarvis import paths
from jarvis.config import StageTraining


def _yaml_block(data: Any) -> str:
    import yaml

    return "```yaml\n" + yaml.safe_dump(data, sort_keys=False, width=110).rstrip() + "\n```"


def model_card(plan: Any, metrics: dict[str, Any], n_samples: int | None = None) -> str:
    """Markdown card for the checkpoint of one training stage plan (jarvis.plan.StagePlan of kind pretrain/finetune):
    everything in it comes from the plan, the one resolution of the stage."""
    spec = plan.spec
    exp, stage, recipe = plan.experiment, spec.stage, spec.jepa
    # the recipe as params.yaml gives it (its run identity, seed and stage, is in the card's text)
    training = spec.train.model_dump(mode="json", include=set(StageTraining.model_fields))
    data = {k.removeprefix("datasets."): v for k, v in plan.values.items() if k.startswith("datasets.")}
    m = spec.model
    bidir = m.bidir_visual_attn if m is not None else None
    components = (f"- language model: `{m.llm}`; vision tower: `{m.vision.name}`; projector: `{m.projector}`\n"
                  f"- visual attention: {'bidirectional inside the image span' if bidir else 'causal'}"
                  if m is not None else f"- initialised from the stage-1 checkpoint `{spec.init_from.as_posix()}`")
    lines = [
        "---",
        "library_name: transformers",
        "pipeline_tag: image-text-to-text",
        "tags: [jarvis, llava, i-jepa, multimodal]",
        "---",
        "",
        f"# {exp} — {stage}",
        "",
        "A LLaVA-style MLLM trained by the `jarvis` suite (reproduction of JARVIS, arXiv 2512.15885):",
        f"stage `{stage}` of experiment `{exp}`, seed {spec.seed} (stage id `{plan.id}`,"
        f" {'stage 1, alignment' if stage == 'pretrain' else 'stage 2, instruction tuning'}).",
        "",
        "## Recipe",
        "",
        components,
        f"- JEPA objective: {f'target tower `{recipe.target}`, loss `{recipe.loss}`, weight {recipe.weight}, skip probability {recipe.skip_prob}' if recipe else 'none in this stage'}",
        f"- seed: {spec.seed}",
        "",
        _yaml_block({"training": training, **({"jepa": recipe.model_dump(mode="json")} if recipe else {})}),
        "",
        "## Data",
        "",
        f"- {'alignment captions' if stage == 'pretrain' else 'instruction conversations'} from"
        f" `{spec.corpus.annotations.as_posix()}`"
        + (f", {n_samples} samples after validation" if n_samples is not None else ""),
        "",
        _yaml_block(data),
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
        f"`{paths.eval_dir(exp, spec.seed, 'BENCHMARK').as_posix()}/scores.json` (one folder per benchmark); "
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
           "`jarvis export --format llava-hf` (for lmms-eval, vLLM)." if bidir is False else
           "A bidirectional-attention checkpoint has no `LlavaForConditionalGeneration` equivalent, so "
           "`jarvis export --format llava-hf` refuses it." if bidir else
           "`jarvis export --format llava-hf` exports it when its stage-1 model had causal visual attention."),
        "",
    ]
    return "\n".join(lines)
