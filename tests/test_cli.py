"""The `jarvis` command line, run as a subprocess of the project venv (the way users and the DAG call it)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import jarvis
from conftest import ROOT, bin_path
from jarvis.config import load_raw
from jarvis.model.configuration import JarvisConfig
from jarvis.model.modeling import JarvisForCausalLM
from pipeline_utils import run
from test_convert import write_reference_checkpoint  # tests dir is on sys.path under pytest
from test_model import batch, build, hf_tower, llm, masks

JARVIS = bin_path("jarvis")
SUBCOMMANDS = (
    "download",
    "cache-features",
    "pretrain",
    "finetune",
    "evaluate",
    "report",
    "score",
    "chat",
    "export",
    "convert-reference",
    "dag",
)


def test_help_lists_every_subcommand_in_user_terms(tmp_path: Path) -> None:
    res = run(tmp_path, JARVIS, "--help")
    for sub in SUBCOMMANDS:
        assert f"\n    {sub} " in res.stdout or f"\n    {sub}\n" in res.stdout  # each has its own help line
    for internal in ("house rule", "Imports are lazy", "paper-spec", "stack-facts"):
        assert internal not in res.stdout
    assert run(tmp_path, JARVIS, "--version").stdout.strip() == f"jarvis {jarvis.__version__}"


def test_every_option_of_every_command_has_help() -> None:
    from jarvis.cli import build_parser

    parser = build_parser()
    (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert tuple(commands.choices) == SUBCOMMANDS
    missing = [f"jarvis {name} {'/'.join(a.option_strings) or a.dest}"
               for name, sub in [("", parser), *commands.choices.items()]
               for a in sub._actions if not a.help and not isinstance(a, argparse._SubParsersAction)]
    assert missing == []
    assert "mmvp" in commands.choices["evaluate"].format_help()  # choices are listed


def test_bad_arguments_are_one_line_errors_with_exit_2_and_no_mlflow_run(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    cases = [
        (("evaluate", "--experiment", "jarvis", "--seed", "0", "--benchmark", "nope"), "'nope'"),
        (("evaluate", "--experiment", "nope", "--seed", "0", "--benchmark", "mmvp"), "'nope'"),
        (("evaluate", "--experiment", "jarvis", "--seed", "0", "--benchmark", "mmvp"),
         "run `jarvis download --data synth`"),
        (("evaluate", "--experiment", "jarvis", "--seed", "0"), "run `jarvis download --data synth`"),
        (("pretrain", "--experiment", "nope", "--seed", "0"), "'nope'"),
        (("pretrain", "--experiment", "jarvis", "--seed", "7"), "seed 7 is not in run.seeds"),
        (("finetune", "--experiment", "llava", "--seed", "1"), "run `jarvis pretrain --experiment llava --seed 1` first"),
        (("download", "--tower", "nope"), "'nope'"),
        (("cache-features", "--data", "synth", "--vision", "nope"), "'nope'"),
        (("chat", "--checkpoint", "x", "--max-new-tokens", "0", "hi"), "must be at least 1"),
        (("export", "--format", "gguf", "a", "b"), "'gguf'"),
        (("dag", "draw"), "'draw'"),
    ]
    for argv, named in cases:
        res = run(tmp_path, JARVIS, *argv, check=False)
        assert res.returncode == 2, (argv, res.stderr)
        lines = [line for line in res.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and named in lines[0], (argv, res.stderr)
    assert not (tmp_path / "mlruns").exists()  # the MLflow store under the project root was never opened


def test_params_typo_exits_2_naming_the_key(tmp_path: Path) -> None:
    raw = load_raw(ROOT / "params.yaml")
    raw["towers"]["tiny_clip"]["feature_layr"] = -2
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    res = run(tmp_path, JARVIS, "download", "--tower", "tiny_clip", check=False)
    assert res.returncode == 2, res.stderr
    assert "towers.tiny_clip" in res.stderr and "unknown key 'feature_layr'" in res.stderr
    assert "Traceback" not in res.stderr
    assert not (tmp_path / "models").exists()


def test_missing_params_file_exits_2(tmp_path: Path) -> None:
    res = run(tmp_path, JARVIS, "download", "--tower", "tiny_clip", check=False)
    assert res.returncode == 2 and "params.yaml: no such params file" in res.stderr


def test_dag_check_on_the_repo_and_on_a_stale_copy(tmp_path: Path) -> None:
    res = run(ROOT, JARVIS, "dag", "check")
    assert "dvc.yaml is fresh" in res.stdout

    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    (tmp_path / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text() + "# hand edit\n")
    stale = run(tmp_path, JARVIS, "dag", "check", check=False)
    assert stale.returncode == 1 and "dvc.yaml is stale" in stale.stderr


def _mmvp_row(qid: int, answer: str, gt: str) -> dict:
    return {
        "question_id": qid,
        "prompt": "Is the door open?",
        "answer": answer,
        "gt_answer": gt,
        "model_id": "test",
        "text_options": ["Open", "Closed"],
    }


def test_score_mmvp_hand_checked(tmp_path: Path) -> None:
    # Pairs by question_id // 2 (benchmarks-spec §3 #6). Pair 0: "A" right, "B. Closed" right (fixed accepts letter +
    # that letter's option text). Pair 1: "(a)" right, "A" wrong. Fixed: 1 of 2 pairs, 3 of 4 questions.
    # Compat: "B. Closed" -> "b. closed" is wrong, and the parity counter goes 1, 0, 1, 0 -> 0 %.
    rows = [
        _mmvp_row(0, "A", "(a)"),
        _mmvp_row(1, "B. Closed", "(b)"),
        _mmvp_row(2, "(a)", "(a)"),
        _mmvp_row(3, "A", "(b)"),
    ]
    answers = tmp_path / "answers.jsonl"
    answers.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # the question set (MMVP's Questions.csv): the answers are checked against it
    (tmp_path / "Questions.csv").write_text(
        "lndex,Question,Options,Correct Answer\n"
        + "".join(f"{i + 1},Is the door open?,(a) Open (b) Closed,{r['gt_answer']}\n" for i, r in enumerate(rows))
    )
    q = ("--questions", str(tmp_path))

    fixed = json.loads(run(tmp_path, JARVIS, "score", "--benchmark", "mmvp", *q, str(answers)).stdout)
    assert fixed["benchmark"] == "mmvp" and fixed["mode"] == "fixed" and fixed["metric"] == "pair_accuracy"
    assert fixed["overall"] == 50.0 and fixed["pairs_correct"] == 1 and fixed["pairs"] == 2
    assert fixed["n"] == 4 and fixed["correct"] == 3 and fixed["question_accuracy"] == 75.0
    assert fixed["incorrect"] == [3] and fixed["unparseable"] == 0

    compat = json.loads(
        run(tmp_path, JARVIS, "score", "--benchmark", "mmvp", "--mode", "compat", *q, str(answers)).stdout
    )
    assert compat["overall"] == 0.0 and compat["correct"] == 2 and compat["incorrect"] == [1, 3]


def _same_outputs(a: JarvisForCausalLM, b: JarvisForCausalLM, jepa: bool) -> None:
    x = batch(a)
    if not jepa:
        x.pop("pixel_values_target", None)
    m = masks() if jepa else {}
    out_a, out_b = a(**x, **m, return_logits=True), b(**x, **m, return_logits=True)
    assert torch.equal(out_a.logits, out_b.logits) and torch.equal(out_a.loss, out_b.loss)


def test_convert_reference_plain(tmp_path: Path) -> None:
    plain = build(context="clip", target=None)
    write_reference_checkpoint(plain, tmp_path / "ref_plain")
    res = run(tmp_path, JARVIS, "convert-reference", "ref_plain", "ours_plain")
    assert "wrote ours_plain" in res.stdout
    converted = JarvisForCausalLM.from_pretrained(tmp_path / "ours_plain").eval()
    assert not converted.config.has_jepa
    _same_outputs(plain, converted, jepa=False)


def test_convert_reference_jepa_with_target_dir(tmp_path: Path) -> None:
    model = build(context="clip", target="dinov2_grid6")
    write_reference_checkpoint(model, tmp_path / "ref", with_target_weights=False)
    model.target_tower.save_pretrained(tmp_path / "dinov2")
    run(tmp_path, JARVIS, "convert-reference", "ref", "ours", "--target", "dinov2")
    converted = JarvisForCausalLM.from_pretrained(tmp_path / "ours").eval()
    assert converted.config.has_jepa
    _same_outputs(model, converted, jepa=True)


@pytest.fixture
def chat_checkpoint(tmp_path: Path) -> Path:
    """A tiny trained-layout checkpoint: JarvisForCausalLM + its tokenizer in one directory, plus an image."""
    from PIL import Image

    from jarvis.data.templates import IMAGE_TOKEN
    from jarvis.data.tokenizer import build_tokenizer

    tok = build_tokenizer(
        ["what colour is the square", "the square is red", "a blue circle"], 300, "vicuna_v1"
    )
    text = {
        **llm("llama"),
        "vocab_size": len(tok),
        "pad_token_id": tok.pad_token_id,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
    }
    torch.manual_seed(0)
    config = JarvisConfig(
        text_config=text,
        vision_config=hf_tower("clip_vision_model", feature_layer=-2),
        image_token_id=tok.convert_tokens_to_ids(IMAGE_TOKEN),
        jepa_layer=1,
    )
    ckpt = tmp_path / "ckpt"
    JarvisForCausalLM(config).save_pretrained(ckpt)
    tok.save_pretrained(ckpt)
    Image.new("RGB", (40, 24), (200, 30, 30)).save(tmp_path / "red.png")
    return ckpt


def test_chat_answers_and_matches_the_in_process_answer(chat_checkpoint: Path) -> None:
    from jarvis.stages.chat import answer

    project = chat_checkpoint.parent
    res = run(
        project,
        JARVIS,
        "chat",
        "--checkpoint",
        str(chat_checkpoint),
        "--image",
        "red.png",
        "--max-new-tokens",
        "6",
        "what colour is the square?",
    )
    expected = answer(chat_checkpoint, project / "red.png", "what colour is the square?", max_new_tokens=6)
    assert isinstance(expected, str) and expected  # 6 greedy tokens of a random model: not all special
    assert res.stdout == expected + "\n"  # the answer alone on stdout; logs go to stderr


def test_chat_missing_image_fails_naming_it(chat_checkpoint: Path) -> None:
    project = chat_checkpoint.parent
    res = run(
        project,
        JARVIS,
        "chat",
        "--checkpoint",
        str(chat_checkpoint),
        "--image",
        "nope.png",
        "hi",
        check=False,
    )
    assert res.returncode != 0
    assert "nope.png" in res.stderr and "does not exist" in res.stderr
    assert res.stdout == ""


def test_diverged_stage_exits_1_with_one_error_line_no_output_and_a_failed_mlflow_run(tmp_path: Path) -> None:
    # Before: a diverged stage printed a Python traceback (TrainingDiverged) instead of one line. Stage 0 of the
    # tiny LM (inside `jarvis download --llm`) is the cheapest stage that trains; its guard is the stages' guard.
    import mlflow

    raw = load_raw(ROOT / "params.yaml")
    raw["datasets"]["synth"].update(n_pretrain=8, n_instruct=8, n_bench_per_task=2, n_general_per_benchmark=2)
    raw["llms"]["tiny_llama"]["text_pretrain"].update(steps=40, learning_rate=1.0e30)  # finite, overflows
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    run(tmp_path, JARVIS, "download", "--data", "synth")
    res = run(tmp_path, JARVIS, "download", "--llm", "tiny_llama", check=False)
    assert res.returncode == 1, res.stderr
    assert "Traceback" not in res.stderr
    errors = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.stderr
    assert re.fullmatch(r"error: text pretraining diverged at step \d+: non-finite .+", errors[0]), errors[0]
    assert not (tmp_path / "models" / "llm").exists()  # no declared output, nor a temp dir beside it
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    (exp,) = [e for e in client.search_experiments() if e.name == raw["run"]["study"]]  # one experiment per study
    runs = client.search_runs([exp.experiment_id], "tags.mlflow.runName = 'download-llm-tiny_llama'")
    assert [r.info.status for r in runs] == ["FAILED"]


def _eval_project(chat_checkpoint: Path, monkeypatch: pytest.MonkeyPatch, **evaluation: object) -> tuple[Any, int]:
    """A project with the tiny checkpoint as llava/s0's stage-2 model and a synthetic POPE; (plan, questions)."""
    import shutil

    from jarvis.eval.synthetic_bench import generate_general_benchmarks
    from jarvis.plan import load

    project = chat_checkpoint.parent / "project"
    project.mkdir()
    raw = load_raw(ROOT / "params.yaml")
    raw["evaluation"].update(evaluation)
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    monkeypatch.chdir(project)
    monkeypatch.setenv("JARVIS_ROOT", str(project))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    monkeypatch.delenv("JARVIS_SCRATCH", raising=False)
    total = generate_general_benchmarks(project / "data" / "synth", n_per_benchmark=5, image_size=32, seed=0)["pope"]
    plan = load(project / "params.yaml").resolve("evaluate", experiment="llava", seed=0, benchmarks=("pope",))
    shutil.copytree(chat_checkpoint, plan.spec.checkpoint)
    return plan, total


@pytest.mark.parametrize("limit", [None, 3])
def test_evaluate_scores_carry_coverage_and_a_subset_says_so(chat_checkpoint: Path, limit: int | None,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: scores.json had no coverage, and `evaluation.limit` scored a subset as if it were the benchmark.
    from jarvis.stages import evaluate

    plan, total = _eval_project(chat_checkpoint, monkeypatch, limit=limit)
    metrics = evaluate.run(plan)
    text = plan.spec.benchmarks[0].scores.read_text()
    scores = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in scores.json"))
    answered = limit or total
    assert scores["coverage"] == {"answered": answered, "total": total, "fraction": answered / total,
                                  "partial": limit is not None}
    assert scores.get("partial", False) is (limit is not None)
    assert scores["n_questions"] == answered == len(plan.spec.benchmarks[0].answers.read_text().splitlines())
    assert metrics["n_questions"] == answered


def test_evaluate_compat_empty_answer_is_named_not_a_crash(chat_checkpoint: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    # Before: the compat POPE scorer failed on an empty answer with a bare traceback from inside the scorer.
    from jarvis.eval.answers import AnswersError
    from jarvis.stages import evaluate

    plan, _ = _eval_project(chat_checkpoint, monkeypatch, mode="compat")
    monkeypatch.setattr(evaluate, "generate_answers", lambda model, tok, questions, *a, **kw: ["yes"] + [""] * (
        len(questions) - 1))  # a model that answers nothing after the first question
    with pytest.raises(AnswersError, match=r"pope: line 2: empty answer"):
        evaluate.run(plan)
    assert not plan.spec.benchmarks[0].scores.exists()


def test_evaluate_on_an_empty_benchmark_fails(chat_checkpoint: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from jarvis.io import StageFailed
    from jarvis.stages import evaluate

    plan, _ = _eval_project(chat_checkpoint, monkeypatch)
    import pyarrow.parquet as pq

    # the benchmark's files, with no rows
    for f in (plan.spec.benchmarks[0].bench_root / "data").glob("test-*.parquet"):
        pq.write_table(pq.read_table(f).slice(0, 0), f)
    with pytest.raises(StageFailed, match=r"benchmark pope: no questions under"):
        evaluate.run(plan)
    assert not plan.spec.benchmarks[0].scores.exists() and not plan.spec.benchmarks[0].answers.exists()
