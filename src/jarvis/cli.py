"""`jarvis <stage>`: one subcommand per pipeline stage, plus tools (score, chat, convert-reference, dag).

The CLI takes ids (experiment, benchmark, component names) and flags that do not change results; every
hyper-parameter lives in params.yaml (house rule 4). Imports are lazy so `jarvis --help` is instant.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path


def _plan(args: argparse.Namespace, kind: str, **ids: object):
    """The stage's plan, resolved from params.yaml (jarvis.plan: the one resolution of a stage)."""
    from jarvis.plan import load

    return load(args.params).resolve(kind, **ids)


def _print_metrics(metrics: dict) -> int:
    print(json.dumps(metrics, indent=2, sort_keys=True, default=str))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from jarvis.stages import download

    kind, name = next((k, getattr(args, k)) for k in ("data", "llm", "tower") if getattr(args, k))
    return _print_metrics(download.run(_plan(args, "download", component=kind, name=name)))


def cmd_cache_features(args: argparse.Namespace) -> int:
    from jarvis.stages import cache_features

    plan = _plan(args, "cache_features", data=args.data, vision=args.vision, target=args.target)
    return _print_metrics(cache_features.run(plan))


def cmd_train(args: argparse.Namespace) -> int:
    from jarvis.launch import maybe_relaunch

    plan = _plan(args, args.command, experiment=args.experiment, seed=args.seed)
    training = plan.spec.training
    maybe_relaunch(training.nproc, training.nodes)  # re-execs under torchrun when a stage needs several processes
    from jarvis.launch import hard_exit
    from jarvis.stages import train

    try:
        rc = _print_metrics(train.run(plan))
    except SystemExit as exc:  # jarvis.training.Preempted: checkpoint saved, exit 128 + signal
        rc = exc.code if isinstance(exc.code, int) else 1
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        hard_exit(rc)
    return rc


def cmd_evaluate(args: argparse.Namespace) -> int:
    from jarvis.stages import evaluate

    plan = _plan(args, "evaluate", experiment=args.experiment, seed=args.seed, benchmark=args.benchmark)
    return _print_metrics(evaluate.run(plan))


def cmd_report(args: argparse.Namespace) -> int:
    from jarvis.stages import report

    return _print_metrics(report.run(_plan(args, "report")))


def cmd_score(args: argparse.Namespace) -> int:
    from jarvis.eval import scorers

    return scorers.main_score(args.rest)  # its arguments are the scorer's own (parsed there, not at start-up)


def cmd_chat(args: argparse.Namespace) -> int:
    from jarvis.stages import chat

    print(chat.answer(Path(args.checkpoint), Path(args.image) if args.image else None, args.question,
                      max_new_tokens=args.max_new_tokens))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    from jarvis.model.convert import convert_reference

    convert_reference(Path(args.src), Path(args.dst), target_dir=Path(args.target) if args.target else None)
    print(f"wrote {args.dst}")
    return 0


def cmd_dag(args: argparse.Namespace) -> int:
    from jarvis import dag
    from jarvis.io import write_text_atomic

    stages = dag.load(args.params)
    text = dag.render_dvc(stages)
    if args.action == "render":
        write_text_atomic("dvc.yaml", text)
        print(f"dvc.yaml: {len(stages)} stages")
        return 0
    if args.action == "check":
        current = Path("dvc.yaml").read_text() if Path("dvc.yaml").exists() else ""
        if current != text:
            print("dvc.yaml is stale: run `jarvis dag render`", file=sys.stderr)
            return 1
        print("dvc.yaml is fresh")
        return 0
    for s in stages:
        print(s.id)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="jarvis", description=__doc__)
    p.add_argument("--params", default="params.yaml", help="params file (default: ./params.yaml)")
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("download", help="fetch (hub) or materialise (tiny) one data set / LLM / vision tower")
    g = d.add_mutually_exclusive_group(required=True)
    g.add_argument("--data")
    g.add_argument("--llm")
    g.add_argument("--tower")
    d.set_defaults(func=cmd_download)

    c = sub.add_parser("cache-features", help="cache frozen context/target tower features of the stage-1 images")
    c.add_argument("--data", required=True)
    c.add_argument("--vision", required=True)
    c.add_argument("--target")
    c.set_defaults(func=cmd_cache_features)

    for stage, text in (("pretrain", "stage 1: alignment (LLaVA or JARVIS), ZeRO-2"),
                        ("finetune", "stage 2: instruction tuning, ZeRO-3")):
        t = sub.add_parser(stage, help=text)
        t.add_argument("--experiment", required=True)
        t.add_argument("--seed", type=int, required=True, help="one of run.seeds")
        t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="greedy answers + scores for one benchmark")
    e.add_argument("--experiment", required=True)
    e.add_argument("--seed", type=int, required=True, help="one of run.seeds")
    e.add_argument("--benchmark", required=True)
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("report", help="experiments x benchmarks table and plots")
    r.set_defaults(func=cmd_report)

    s = sub.add_parser("score", add_help=False,
                       help="score a Cambrian-format answers file; prints scores JSON (`jarvis score --help`)")
    s.set_defaults(func=cmd_score)

    ch = sub.add_parser("chat", help="answer one question about one image (greedy)")
    ch.add_argument("--checkpoint", required=True)
    ch.add_argument("--image")
    ch.add_argument("--max-new-tokens", type=int, default=64)
    ch.add_argument("question")
    ch.set_defaults(func=cmd_chat)

    cv = sub.add_parser("convert-reference", help="convert an aimagelab/JARVIS checkpoint to this format")
    cv.add_argument("src")
    cv.add_argument("dst")
    cv.add_argument("--target", help="target-encoder directory (mllm_jepa checkpoints store only its name)")
    cv.set_defaults(func=cmd_convert)

    dg = sub.add_parser("dag", help="render/check dvc.yaml from params.yaml, or list stage ids")
    dg.add_argument("action", choices=["render", "check", "list"])
    dg.set_defaults(func=cmd_dag)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "score":
        args.rest = rest
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from jarvis.config import ConfigError

    try:
        return int(args.func(args) or 0)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (KeyError, FileNotFoundError) as err:  # unknown ids, missing inputs: a message, not a traceback
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
