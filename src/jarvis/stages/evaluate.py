"""Stage `evaluate`: greedy answers of the stage-2 checkpoint on every selected benchmark, then scores
(benchmarks-spec §1-2).

One process per (experiment, seed): the checkpoint is loaded once and the benchmarks run one after the other, each
writing its own ``answers.jsonl`` and ``scores.json`` exactly as a process of its own would (nothing is carried
from one benchmark to the next; tests/test_evaluate_stage.py checks together == alone). A summary file holds every
benchmark's overall and the group averages (jarvis.eval.groups), and the stage's one MLflow run carries the same
metric keys for every arm: ``<benchmark>`` (overall), ``<benchmark>/<sub-score>``, ``group/<group>`` (the mean of
the members evaluated) with ``group/<group>/n_present``.

Controls (issue 12), written by this stage and not by the Cambrian-compatible scorers, whose numbers stay as they
are: each scores.json also carries ``question_types`` (accuracy per question type next to its chance level,
jarvis.eval.qtypes) and ``answer_distribution`` (the share of the most common answer; a WARNING at >= 90 %,
jarvis.eval.controls). With ``evaluation.blind`` the same model, with the same batching, answers every benchmark a
second time with blank images (the tower's mean colour at each image's size) into ``eval_blind/``. The blind numbers
stay out of this run's MLflow metrics: MLflow's compare view shows some 17 metric rows, and the arms' own headline
numbers must be the ones it shows; the report run logs each blind row (``blind/<arm>/<column>``) and DVC tracks
``eval_blind/scores.json`` as a metric.

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
from jarvis.plan import BenchSpec, EvalSpec, StagePlan
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
                     max_new_tokens: int, desc: str = "evaluate", blind: bool = False) -> list[str]:
    """Greedy answers, batched with left padding; decoded with skip_special_tokens and stripped (spec §1).

    ``blind``: each image is replaced by a blank one of its size (jarvis.eval.controls.blank_image); nothing else
    changes."""
    from jarvis.data.collate import Collator
    from jarvis.data.conversation import build_prompt, expand_image_token, image_token_id
    from jarvis.eval.controls import blank_image

    def image_of(q: Any) -> Any:
        image = q.load_image()
        return blank_image(image, model.vision_tower.image_mean) if blind else image

    transform = image_transform(model.vision_tower, "pad")
    collate = Collator(tokenizer.pad_token_id, padding_side="left")
    img_id = image_token_id(tokenizer)
    from jarvis.progress import progress

    answers: list[str] = []
    bar = progress(total=len(questions), desc=desc, unit="question")
    for i in range(0, len(questions), batch_size):
        chunk = questions[i : i + batch_size]
        samples = []
        for q in chunk:
            ids, _ = expand_image_token(build_prompt(tokenizer, q.qs), None, img_id, model.vision_tower.num_patches)
            samples.append({"input_ids": torch.tensor(ids), "labels": torch.full((len(ids),), -100),
                            "pixel_values": transform(image_of(q))})
        batch = collate(samples)
        limit = max_new_tokens  # per benchmark (jarvis.eval.decoding); generation stops at EOS
        with torch.inference_mode():
            new = model.generate_greedy(batch["input_ids"], batch["attention_mask"], batch["pixel_values"],
                                        max_new_tokens=limit, eos_token_id=tokenizer.eos_token_id)
        answers += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
        bar.update(len(chunk))
    bar.close()
    return answers


def evaluate_benchmark(model: Any, tokenizer: Any, spec: EvalSpec, bench: BenchSpec,
                       blind: bool = False) -> dict[str, Any]:
    """Answer and score one benchmark (``blind``: with blank images); writes its answers and scores files, returns
    the scores."""
    from jarvis.eval.answers import check_against_questions, check_compat_crashes, finite_or_null
    from jarvis.eval.benchmarks import answer_row, load_questions
    from jarvis.eval.controls import answer_distribution
    from jarvis.eval.qtypes import question_types
    from jarvis.eval.scorers import score_answers

    t0 = time.perf_counter()
    every = list(load_questions(bench.name, bench.bench_root))  # the whole benchmark: coverage's denominator
    if not every:
        raise StageFailed(f"benchmark {bench.name}: no questions under {bench.bench_root}; an empty benchmark has no"
                          " score")
    questions = every[: bench.limit] if bench.limit is not None else every
    what = f"{bench.name} (blind)" if blind else bench.name
    answers = generate_answers(model, tokenizer, questions, spec.batch_size, bench.max_new_tokens,
                               desc=f"evaluate {what}", blind=blind)
    rows = [answer_row(q, a, model_id=spec.model_id) for q, a in zip(questions, answers, strict=True)]
    write_text_atomic(bench.answers, "".join(json.dumps(r) + "\n" for r in rows))
    # Coverage (answered / total) goes with every score, as with `jarvis score`; a subset is scored only when
    # params ask for it (evaluation.limit), and then the scores say so.
    lines = range(1, len(rows) + 1)
    coverage = check_against_questions(bench.name, rows, lines, every, allow_partial=bench.limit is not None)
    if spec.mode == "compat":  # the compat POPE/MMStar scorers crash on an empty answer: name it instead
        check_compat_crashes(bench.name, rows, lines)
    scores = score_answers(bench.name, rows, mode=spec.mode)
    scores["eval_wall_s"] = round(time.perf_counter() - t0, 3)
    scores["n_questions"] = len(rows)
    scores["coverage"] = coverage
    scores["question_types"] = question_types(bench.name, rows, scores)
    scores["answer_distribution"] = dist = answer_distribution(answers)
    if dist["flagged"]:
        log.warning("answer flag: %s seed %d %s: %r is %.1f%% of %d answers (>= 90%%: one answer for everything)",
                    spec.model_id + (" (blind)" if blind else ""), spec.seed, bench.name, dist["top_answer"],
                    100 * dist["top_share"], dist["n"])
    if coverage["partial"]:
        scores["partial"] = True
        log.warning("%s: PARTIAL, scored on %d/%d questions (evaluation.limit=%d); not comparable with "
                    "full-benchmark scores", bench.name, coverage["answered"], coverage["total"], bench.limit)
    undefined: list[str] = []
    scores = finite_or_null(scores, undefined=undefined)  # strict JSON: an undefined score is null, not NaN
    if undefined:
        log.warning("%s: undefined (no questions) and written as null: %s", bench.name, ", ".join(undefined))
    write_json_atomic(bench.scores, scores)
    log.info("%s: %d questions in %.1f s", what, len(rows), scores["eval_wall_s"])
    return scores


def summarize(all_scores: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The summary file: each benchmark's overall, each group's averages (jarvis.eval.groups; a group none of whose
    members ran is left out), the questions answered."""
    from jarvis.eval.groups import group_averages

    defined = {b: s for b, s in all_scores.items() if s.get("overall") is not None}  # null: no questions scored
    groups = {g: {"average": r["average"], "partial_average": r["partial_average"], "n_present": r["n_present"],
                  "n_members": len(r["members"])}
              for g, r in group_averages(defined).items() if r["n_present"]}
    return {"benchmarks": {b: s["overall"] for b, s in all_scores.items()}, "groups": groups,
            "n_questions": sum(int(s["n_questions"]) for s in all_scores.values())}


def metric_keys(all_scores: dict[str, dict[str, Any]], summary: dict[str, Any]) -> dict[str, float]:
    """The run's metrics, keyed by benchmark and group names only (never the arm): arms compare column by column.

    The headline numbers only (each benchmark's overall, each group average, the questions answered): MLflow's compare view
    shows a short table of them side by side; sub-scores (categories, counts) stay in each scores.json."""
    out: dict[str, float] = {}
    for b, s in all_scores.items():
        if s.get("overall") is None:  # undefined (written as null, warned about): MLflow takes numbers only
            continue
        out[b] = float(s["overall"])
    out["n_questions"] = float(summary["n_questions"])
    for g, r in summary["groups"].items():
        out[f"group/{g}"] = float(r["partial_average"])
        out[f"group/{g}/n_present"] = float(r["n_present"])
    return out


def run(plan: StagePlan) -> dict[str, Any]:
    from jarvis import tracking

    spec: EvalSpec = plan.spec
    t0 = time.perf_counter()
    with stage_run(plan) as (mlrun, _):
        torch.manual_seed(spec.seed)  # greedy decoding draws nothing; anything random would follow the run's seed
        model, tokenizer = load_checkpoint(spec.checkpoint)
        load_s = time.perf_counter() - t0
        all_scores = {b.name: evaluate_benchmark(model, tokenizer, spec, b) for b in spec.benchmarks}
        summary = summarize(all_scores)
        summary["eval_wall_s"] = round(time.perf_counter() - t0, 3)
        if spec.summary is not None:
            write_json_atomic(spec.summary, summary)
        metrics = metric_keys(all_scores, summary)
        blind = _blind(model, tokenizer, spec)
        if mlrun is not None:
            tracking.log_final_metrics(metrics, prefix="")
        log.info("%s: %d benchmarks, %d questions in %.1f s (checkpoint load %.1f s)", plan.id, len(all_scores),
                 summary["n_questions"], summary["eval_wall_s"], load_s)
    groups = {f"group/{g}": metrics[f"group/{g}"] for g in summary["groups"]}
    return {**{b: metrics[b] for b in all_scores if b in metrics}, **groups,
            **{f"blind/{b}": blind[b] for b in all_scores if b in blind},
            "n_questions": summary["n_questions"], "eval_wall_s": summary["eval_wall_s"]}


def _blind(model: Any, tokenizer: Any, spec: EvalSpec) -> dict[str, float]:
    """The blank-image twin of every benchmark that has one (evaluation.blind), its summary, its metric keys
    (unprefixed; the CLI prints them under ``blind/``). ``{}`` when blind evaluation is off."""
    twins = [b for b in spec.benchmarks if b.blind is not None]
    if not twins:
        return {}
    t0 = time.perf_counter()
    scores = {b.name: evaluate_benchmark(model, tokenizer, spec, b.blind, blind=True) for b in twins}
    summary = summarize(scores)
    summary["eval_wall_s"] = round(time.perf_counter() - t0, 3)
    if spec.blind_summary is not None:
        write_json_atomic(spec.blind_summary, summary)
    return metric_keys(scores, summary)
