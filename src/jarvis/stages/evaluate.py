"""Stage `evaluate`: greedy answers of the stage-2 checkpoint on one benchmark, then scores (benchmarks-spec §1-2).

Prompts are built as the Cambrian harness builds them: ``<image>\\n{question}\\n{extension}`` through the
checkpoint's chat template, images padded to a square with the tower's mean colour. Unlike the harness (batch 1),
questions are batched with left padding; greedy decoding with a KV cache gives the same tokens as batch 1
(tests/test_model.py checks cache == no-cache).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from jarvis import paths
from jarvis.config import Params, experiment_refs
from jarvis.io import write_json_atomic, write_text_atomic
from jarvis.stages.common import image_transform, stage_params_view, stage_run

log = logging.getLogger(__name__)


def benchmark_root(params: Params, data: str, bench: str) -> Path:
    """Where a benchmark's files live inside a data set directory (same layout for synthetic and hub data)."""
    sub = "cvbench" if bench.startswith("cvbench") or bench in ("ade", "coco", "omni") else bench
    return paths.dataset_dir(data) / sub


def load_checkpoint(ckpt: Path) -> tuple[Any, Any]:
    from transformers import AutoTokenizer

    from jarvis.model.modeling import JarvisForCausalLM

    if not (ckpt / "config.json").is_file():
        raise FileNotFoundError(f"{ckpt}: not a checkpoint directory (no config.json)")
    return JarvisForCausalLM.from_pretrained(ckpt).eval(), AutoTokenizer.from_pretrained(ckpt)


def generate_answers(model: Any, tokenizer: Any, questions: list[Any], batch_size: int,
                     max_new_tokens: int) -> list[str]:
    """Greedy answers, batched with left padding; decoded with skip_special_tokens and stripped (spec §1)."""
    from jarvis.data.collate import Collator
    from jarvis.data.conversation import build_prompt, expand_image_token, image_token_id

    transform = image_transform(model.vision_tower, "pad")
    collate = Collator(tokenizer.pad_token_id, padding_side="left")
    img_id = image_token_id(tokenizer)
    from jarvis.progress import progress

    answers: list[str] = []
    bar = progress(total=len(questions), desc="evaluate", unit="question")
    for i in range(0, len(questions), batch_size):
        chunk = questions[i : i + batch_size]
        samples = []
        for q in chunk:
            ids, _ = expand_image_token(build_prompt(tokenizer, q.qs), None, img_id, model.vision_tower.num_patches)
            samples.append({"input_ids": torch.tensor(ids), "labels": torch.full((len(ids),), -100),
                            "pixel_values": transform(q.load_image())})
        batch = collate(samples)
        limit = max_new_tokens  # per benchmark (jarvis.eval.decoding); generation stops at EOS
        with torch.inference_mode():
            new = model.generate_greedy(batch["input_ids"], batch["attention_mask"], batch["pixel_values"],
                                        max_new_tokens=limit, eos_token_id=tokenizer.eos_token_id)
        answers += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
        bar.update(len(chunk))
    bar.close()
    return answers


def run(params: Params, exp: str, bench: str) -> dict[str, Any]:
    from jarvis import tracking
    from jarvis.eval.benchmarks import answer_row, load_questions
    from jarvis.eval.decoding import max_new_tokens
    from jarvis.eval.scorers import score_answers

    e = params.experiment(exp)
    cfg = params.evaluation
    t0 = time.perf_counter()
    view = stage_params_view(params, experiment_refs(params, exp, "evaluate"))
    with stage_run(exp, f"evaluate-{bench}", view) as (mlrun, _):
        torch.manual_seed(params.seed)
        model, tokenizer = load_checkpoint(paths.checkpoint_dir(exp, "finetune"))
        questions = list(load_questions(bench, benchmark_root(params, e.data, bench), cfg.limit))
        if not questions:
            raise ValueError(f"benchmark {bench}: no questions under {benchmark_root(params, e.data, bench)}")
        answers = generate_answers(model, tokenizer, questions, cfg.batch_size,
                                   max_new_tokens(bench, cfg.max_new_tokens))
        gen_s = time.perf_counter() - t0
        rows = [answer_row(q, a, model_id=exp) for q, a in zip(questions, answers, strict=True)]
        write_text_atomic(paths.answers_file(exp, bench), "".join(json.dumps(r) + "\n" for r in rows))
        scores = score_answers(bench, rows, mode=cfg.mode)
        scores["eval_wall_s"] = round(time.perf_counter() - t0, 3)
        scores["n_questions"] = len(rows)
        write_json_atomic(paths.scores_file(exp, bench), scores)
        if mlrun is not None:
            flat = {f"{bench}/{k}": v for k, v in _numbers(scores).items()}
            tracking.log_final_metrics(flat, prefix="")
        log.info("%s/%s: %d questions in %.1f s (generation %.1f s)", exp, bench, len(rows),
                 scores["eval_wall_s"], gen_s)
    return {k: v for k, v in _numbers(scores).items() if "/" not in k}


def _numbers(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_numbers(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out
