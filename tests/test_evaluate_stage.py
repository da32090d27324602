"""The evaluate stage: one process per (experiment, seed) answers every selected benchmark from one loaded
checkpoint, and each benchmark's answers and scores equal those of a process evaluating it alone (issue 13); its one
MLflow run carries benchmark- and group-named metric keys (issue 10)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from conftest import ROOT
from jarvis.config import load_raw, validate_params
from jarvis.model.configuration import JarvisConfig
from jarvis.model.modeling import JarvisForCausalLM
from jarvis.plan import Resolver
from test_model import hf_tower, llm

BENCHES = ("pope", "mme")


@pytest.fixture()
def project(tmp_path: Path, monkeypatch) -> tuple[Path, Resolver]:
    """A project root with a tiny stage-2 checkpoint of `jarvis` seed 0 and the synthetic POPE and MME."""
    from jarvis.data.templates import IMAGE_TOKEN
    from jarvis.data.tokenizer import build_tokenizer
    from jarvis.eval.synthetic_bench import generate_general_benchmarks

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("JARVIS_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.delenv("JARVIS_SCRATCH", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    tok = build_tokenizer(["is there a red square in the image", "yes no", "a blue circle on the left"], 300,
                          "vicuna_v1")
    text = {**llm(), "vocab_size": len(tok), "pad_token_id": tok.pad_token_id, "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id}
    torch.manual_seed(0)
    model = JarvisForCausalLM(JarvisConfig(text_config=text, vision_config=hf_tower("clip_vision_model",
                                                                                   feature_layer=-2),
                                           image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN)))
    ckpt = tmp_path / "runs" / "jarvis" / "s0" / "finetune" / "model"
    model.save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    generate_general_benchmarks(tmp_path / "data" / "synth", n_per_benchmark=6, image_size=16, seed=0)
    raw = load_raw(ROOT / "params.yaml")
    raw["run"]["benchmarks"] = list(BENCHES)
    raw["evaluation"].update(batch_size=4, max_new_tokens={"pope": 5, "mme": 3})  # 6 questions: two batches
    return tmp_path, Resolver(validate_params(raw), raw)


def _results(root: Path) -> dict[str, tuple[str, dict]]:
    out = {}
    for b in BENCHES:
        d = root / "runs" / "jarvis" / "s0" / "eval" / b
        scores = json.loads((d / "scores.json").read_text())
        assert scores.pop("eval_wall_s") >= 0  # timing: the one field that may differ
        out[b] = ((d / "answers.jsonl").read_text(), scores)
    return out


def test_all_benchmarks_in_one_process_equal_each_alone(project) -> None:
    from mlflow import MlflowClient

    from jarvis.eval.groups import group_averages
    from jarvis.stages import evaluate

    root, resolver = project
    plan = resolver.evaluate("jarvis", 0)
    assert plan.id == "evaluate-jarvis-s0" and [b.name for b in plan.spec.benchmarks] == list(BENCHES)
    assert [b.max_new_tokens for b in plan.spec.benchmarks] == [5, 3]
    printed = evaluate.run(plan)
    together = _results(root)
    summary = json.loads((root / "runs/jarvis/s0/eval/scores.json").read_text())
    assert all(len(together[b][0].splitlines()) == 6 for b in BENCHES)
    assert summary["benchmarks"] == {b: together[b][1]["overall"] for b in BENCHES}
    general = group_averages({b: together[b][1] for b in BENCHES})["General"]
    assert summary["groups"] == {"General": {"average": None, "partial_average": general["partial_average"],
                                             "n_present": 2, "n_members": 5}}  # gqa, mmbench_en, seed not run
    expected_general = (together["pope"][1]["overall"] + together["mme"][1]["overall"] / 20) / 2
    assert general["partial_average"] == pytest.approx(expected_general)
    assert printed["group/General"] == pytest.approx(expected_general) and printed["n_questions"] == 12

    shutil.rmtree(root / "runs" / "jarvis" / "s0" / "eval")
    for b in BENCHES:  # `jarvis evaluate --benchmark B`: a process of its own, no summary
        alone = resolver.evaluate("jarvis", 0, (b,))
        assert alone.id == f"evaluate-jarvis-s0-{b}" and alone.spec.summary is None
        evaluate.run(alone)
        assert _results_one(root, b) == together[b], b
    assert not (root / "runs/jarvis/s0/eval/scores.json").exists()

    client = MlflowClient()
    runs = {r.data.tags["jarvis.stage_id"]: r for e in client.search_experiments()
            for r in client.search_runs([e.experiment_id])}
    assert set(runs) == {"evaluate-jarvis-s0", *(f"evaluate-jarvis-s0-{b}" for b in BENCHES)}
    metrics = runs["evaluate-jarvis-s0"].data.metrics
    assert {"pope", "mme", "group/General", "group/General/n_present", "n_questions"} <= set(metrics)
    assert not any(k.startswith("pope/") for k in metrics)  # sub-scores stay in scores.json
    assert metrics["pope"] == together["pope"][1]["overall"] and metrics["group/General/n_present"] == 2
    assert not any("jarvis" in k for k in metrics)  # keys name benchmarks and groups, never the arm
    assert runs["evaluate-jarvis-s0-pope"].data.metrics["pope"] == metrics["pope"]


def _results_one(root: Path, bench: str) -> tuple[str, dict]:
    d = root / "runs" / "jarvis" / "s0" / "eval" / bench
    scores = json.loads((d / "scores.json").read_text())
    scores.pop("eval_wall_s")
    return (d / "answers.jsonl").read_text(), scores


def test_blind_evaluation_differs_only_in_the_image(project) -> None:
    """evaluation.blind (issue 12): the same loaded model and batching answer each benchmark again into eval_blind/,
    every image replaced by a solid one of the tower's mean colour and the image's size; the blind answers equal
    those of the plain path given hand-blanked questions; the run's MLflow metrics stay the arm's own (the report
logs the blind rows)."""
    from dataclasses import replace

    from mlflow import MlflowClient
    from PIL import Image

    from jarvis.eval.benchmarks import load_questions
    from jarvis.stages import evaluate
    from jarvis.stages.common import image_transform

    root, resolver = project
    plan = resolver.evaluate("jarvis", 0)
    assert plan.spec.blind_summary == Path("runs/jarvis/s0/eval_blind/scores.json")
    evaluate.run(plan)
    model, tok = evaluate.load_checkpoint(plan.spec.checkpoint)
    fill = tuple(int(m * 255) for m in model.vision_tower.image_mean)
    blind_summary = json.loads((root / "runs/jarvis/s0/eval_blind/scores.json").read_text())
    for bench in plan.spec.benchmarks:
        real = [json.loads(x) for x in (root / bench.answers).read_text().splitlines()]
        blind = [json.loads(x) for x in (root / bench.blind.answers).read_text().splitlines()]
        assert [{k: v for k, v in r.items() if k != "answer"} for r in blind] == [
            {k: v for k, v in r.items() if k != "answer"} for r in real]  # same questions, ids, ground truth
        questions = list(load_questions(bench.name, bench.bench_root))
        blanked = [replace(q, image=Image.new("RGB", q.load_image().size, fill)) for q in questions]
        expected = evaluate.generate_answers(model, tok, blanked, plan.spec.batch_size, bench.max_new_tokens)
        assert [r["answer"] for r in blind] == expected, bench.name
        # the pixels the model saw did change: the padded blank is one colour, the real image is not
        transform = image_transform(model.vision_tower, "pad")
        real_px, blank_px = transform(questions[0].load_image()), transform(blanked[0].load_image())
        assert not torch.equal(real_px, blank_px) and torch.equal(blank_px, blank_px[:, :1, :1].expand_as(blank_px))
        scores = json.loads((root / bench.blind.scores).read_text())
        assert blind_summary["benchmarks"][bench.name] == scores["overall"]
        assert scores["answer_distribution"]["n"] == len(blind) and "question_types" in scores

    runs = [r for e in MlflowClient().search_experiments() for r in MlflowClient().search_runs([e.experiment_id])]
    (metrics,) = [r.data.metrics for r in runs if r.data.tags["jarvis.stage_id"] == "evaluate-jarvis-s0"]
    for bench in plan.spec.benchmarks:
        assert metrics[bench.name] == json.loads((root / bench.scores).read_text())["overall"]
    assert not [k for k in metrics if k.startswith("blind")]  # the compare view's rows are the arm's own numbers
