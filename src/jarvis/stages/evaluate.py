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

from jarvis.io import StageFailed, write_json_atomic, write_text_atomic
from jarvis.plan import EvalSpec, StagePlan
from jarvis.stages.common import image_transform
from jarvis.tracking import plan_run as stage_run

log = logging.getLogger(__name__)


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


def run(plan: StagePlan) -> dict[str, Any]:
    from jarvis import tracking
    from jarvis.eval.answers import check_against_questions, check_compat_crashes, finite_or_null
    from jarvis.eval.benchmarks import answer_row, load_questions
    from jarvis.eval.decoding import max_new_tokens
    from jarvis.eval.scorers import score_answers

    spec: EvalSpec = plan.spec
    bench = spec.benchmark
    t0 = time.perf_counter()
    with stage_run(plan) as (mlrun, _):
        torch.manual_seed(spec.seed)  # greedy decoding draws nothing; anything random would follow the run's seed
        model, tokenizer = load_checkpoint(spec.checkpoint)
        every = list(load_questions(bench, spec.bench_root))  # the whole benchmark: coverage's denominator
        if not every:
            raise StageFailed(f"benchmark {bench}: no questions under {spec.bench_root}; an empty benchmark has no"
                              " score")
        questions = every[: spec.limit] if spec.limit is not None else every
        answers = generate_answers(model, tokenizer, questions, spec.batch_size,
                                   max_new_tokens(bench, spec.max_new_tokens))
        gen_s = time.perf_counter() - t0
        rows = [answer_row(q, a, model_id=spec.model_id) for q, a in zip(questions, answers, strict=True)]
        write_text_atomic(spec.answers, "".join(json.dumps(r) + "\n" for r in rows))
        # Coverage (answered / total) goes with every score, as with `jarvis score`; a subset is scored only when
        # params ask for it (evaluation.limit), and then the scores say so.
        coverage = check_against_questions(bench, rows, range(1, len(rows) + 1), every,
                                           allow_partial=spec.limit is not None)
        if spec.mode == "compat":  # the compat POPE/MMStar scorers crash on an empty answer: name it instead
            check_compat_crashes(bench, rows, range(1, len(rows) + 1))
        scores = score_answers(bench, rows, mode=spec.mode)
        scores["eval_wall_s"] = round(time.perf_counter() - t0, 3)
        scores["n_questions"] = len(rows)
        scores["coverage"] = coverage
        if coverage["partial"]:
            scores["partial"] = True
            log.warning("%s: PARTIAL, scored on %d/%d questions (evaluation.limit=%d); not comparable with "
                        "full-benchmark scores", plan.id, coverage["answered"], coverage["total"], spec.limit)
        undefined: list[str] = []
        scores = finite_or_null(scores, undefined=undefined)  # strict JSON: an undefined score is null, not NaN
        if undefined:
            log.warning("%s: undefined (no questions) and written as null: %s", plan.id, ", ".join(undefined))
        write_json_atomic(spec.scores, scores)
        if mlrun is not None:
            flat = {f"{bench}/{k}": v for k, v in _numbers(scores).items()}
            tracking.log_final_metrics(flat, prefix="")
        log.info("%s: %d questions in %.1f s (generation %.1f s)", plan.id, len(rows), scores["eval_wall_s"], gen_s)
    return {k: v for k, v in _numbers(scores).items() if "/" not in k}


def _numbers(d: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_numbers(v, f"{prefix}{k}/"))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}{k}"] = float(v)
    return out
