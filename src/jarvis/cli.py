"""`jarvis <stage>`: one subcommand per pipeline stage, plus tools (score, chat, export, convert-reference, dag).

The CLI takes ids (experiment, benchmark, component names) and flags that do not change results; every
hyper-parameter lives in params.yaml (house rule 4). Imports are lazy so `jarvis --help` is instant. Names are
validated against params.yaml before a stage opens its MLflow run, so a typo leaves no failed run behind.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn


def _resolver(args: argparse.Namespace):
    """The stage resolver of the params file (jarvis.plan: the one resolution of every stage)."""
    from jarvis.plan import load

    return load(args.params)


def _print_metrics(metrics: dict) -> int:
    print(json.dumps(metrics, indent=2, sort_keys=True, default=str))
    return 0


def _known(params, table: str, name: str | None) -> None:
    """Fail before any MLflow run starts when ``name`` is not under ``table:`` in params.yaml."""
    from jarvis.config import ConfigError

    known = getattr(params, table)
    if name is not None and name not in known:
        raise ConfigError(f"unknown {table[:-1] if table != 'datasets' else 'data set'} {name!r} "
                          f"(params file `{table}:` has {', '.join(sorted(known))})")


def _need_checkpoint(ckpt: Path, hint: str) -> None:
    from jarvis.config import ConfigError

    if not (ckpt / "config.json").is_file():
        raise ConfigError(f"no checkpoint at {ckpt} (run `{hint}` first)")


def cmd_download(args: argparse.Namespace) -> int:
    from jarvis.stages import download

    kind, name = next((k, getattr(args, k)) for k in ("data", "llm", "tower") if getattr(args, k))
    r = _resolver(args)
    _known(r.params, {"data": "datasets", "llm": "llms", "tower": "towers"}[kind], name)
    return _print_metrics(download.run(r.resolve("download", component=kind, name=name),
                                       update_lock=args.update_lock, pin_checksums=args.pin_checksums))


def cmd_cache_features(args: argparse.Namespace) -> int:
    from jarvis.stages import cache_features

    r = _resolver(args)
    _known(r.params, "datasets", args.data)
    _known(r.params, "towers", args.vision)
    _known(r.params, "towers", args.target)
    plan = r.resolve("cache_features", data=args.data, vision=args.vision, target=args.target)
    return _print_metrics(cache_features.run(plan))


def cmd_train(args: argparse.Namespace) -> int:
    from jarvis.launch import maybe_relaunch

    r = _resolver(args)
    _known(r.params, "experiments", args.experiment)
    plan = r.resolve(args.command, experiment=args.experiment, seed=args.seed)
    if plan.spec.init_from is not None:
        _need_checkpoint(plan.spec.init_from, f"jarvis pretrain --experiment {args.experiment} --seed {args.seed}")
    training = plan.spec.train
    maybe_relaunch(training.nproc, training.nodes)  # re-execs under torchrun when a stage needs several processes
    from jarvis.launch import hard_exit
    from jarvis.stages import train

    try:
        rc = _print_metrics(train.run(plan))
    except SystemExit as exc:  # jarvis.training.Preempted: checkpoint saved, exit 128 + signal
        rc = exc.code if isinstance(exc.code, int) else 1
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        args.log_timing()
        hard_exit(rc)
    return rc


def cmd_evaluate(args: argparse.Namespace) -> int:
    from jarvis.config import ConfigError
    from jarvis.stages import evaluate

    r = _resolver(args)
    _known(r.params, "experiments", args.experiment)
    benchmarks = tuple(args.benchmark) if args.benchmark else None  # None: every benchmark of run.benchmarks
    plan = r.resolve("evaluate", experiment=args.experiment, seed=args.seed, benchmarks=benchmarks)
    for bench in plan.spec.benchmarks:
        if not bench.bench_root.is_dir():
            data = r.params.experiment(args.experiment).data
            raise ConfigError(f"benchmark {bench.name!r}: no data under {bench.bench_root}"
                              f" (run `jarvis download --data {data}`)")
    _need_checkpoint(plan.spec.checkpoint, f"jarvis finetune --experiment {args.experiment} --seed {args.seed}")
    return _print_metrics(evaluate.run(plan))


def cmd_report(args: argparse.Namespace) -> int:
    from jarvis.stages import report

    return _print_metrics(report.run(_resolver(args).resolve("report")))


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


def cmd_export(args: argparse.Namespace) -> int:
    from jarvis.model.export import export_llava_hf

    notes = export_llava_hf(Path(args.src), Path(args.dst), image_mode=args.image_mode,
                            allow_attention_change=args.allow_attention_change)
    for note in notes:
        print(f"warning: {note}", file=sys.stderr)
    print(f"wrote {args.dst} ({args.format})")
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
        stale = dag.stale_message(stages)
        if stale is not None:
            print(stale, file=sys.stderr)
            return 1
        print("dvc.yaml is fresh")
        return 0
    for s in stages:
        print(s.id)
    return 0


DESCRIPTION = """\
Reproducible JARVIS experiments: LLaVA-style multimodal models with and without the I-JEPA alignment objective.

Pipeline stages (normally run for you by `snakemake` or `dvc repro`, one stage per call):
  download -> cache-features -> pretrain -> finetune -> evaluate -> report
Every hyper-parameter is read from the params file; the options below only pick what to run.
"""
EPILOG = """\
examples:
  jarvis dag list                                  stage ids of the current params.yaml
  jarvis pretrain --experiment jarvis              stage 1 of one experiment
  jarvis evaluate --experiment jarvis --seed 0     every benchmark of run.benchmarks, one process
  jarvis evaluate --experiment jarvis --seed 0 --benchmark mmvp
  jarvis chat --checkpoint runs/jarvis/finetune/model --image cat.png "What is on the mat?"
  jarvis export --format llava-hf runs/llava/finetune/model exported/llava

Run `jarvis COMMAND --help` for the options of one command.
"""


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `jarvis evaluate: error: ... (see jarvis evaluate --help)`, exit 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _benchmarks() -> tuple[str, ...]:
    from jarvis.eval.benchmarks import BENCHMARKS

    return BENCHMARKS


def build_parser() -> argparse.ArgumentParser:
    from jarvis import __version__

    fmt = argparse.RawDescriptionHelpFormatter
    p = _Parser(prog="jarvis", description=DESCRIPTION, epilog=EPILOG, formatter_class=fmt)
    p.add_argument("--version", action="version", version=f"jarvis {__version__}")
    p.add_argument("--params", default="params.yaml", metavar="FILE",
                   help="the experiment parameters file (default: ./params.yaml)")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages too")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    d = sub.add_parser("download", help="fetch one data set, language model or vision tower (or build the tiny one)",
                       description="Fetch one component named in the params file from the Hugging Face Hub, or "
                                   "build it from its config when it is a tiny from-scratch component.")
    g = d.add_mutually_exclusive_group(required=True)
    g.add_argument("--data", metavar="NAME", help="a data set under `datasets:` in the params file")
    g.add_argument("--llm", metavar="NAME", help="a language model under `llms:`")
    g.add_argument("--tower", metavar="NAME", help="a vision tower under `towers:`")
    d.add_argument("--update-lock", action="store_true",
                   help="accept a floating revision that now names another commit than hub.lock.yaml (rewrites it)")
    d.add_argument("--pin-checksums", action="store_true",
                   help="URL archives whose checksum is null: trust this first download, record its sha256")
    d.set_defaults(func=cmd_download)

    c = sub.add_parser("cache-features", help="precompute frozen vision-tower features of the stage-1 images",
                       description="Run the frozen context (and target) towers once over the stage-1 images and "
                                   "store their features, so stage 1 does not recompute them every epoch.")
    c.add_argument("--data", required=True, metavar="NAME", help="data set whose stage-1 images are encoded")
    c.add_argument("--vision", required=True, metavar="NAME", help="context vision tower")
    c.add_argument("--target", metavar="NAME", help="JEPA target tower (JARVIS experiments only)")
    c.set_defaults(func=cmd_cache_features)

    for stage, text in (("pretrain", "stage 1: align the projector (LLaVA) or projector + JEPA head (JARVIS)"),
                        ("finetune", "stage 2: instruction-tune the projector and language model")):
        t = sub.add_parser(stage, help=text, description=text[0].upper() + text[1:] + ".")
        t.add_argument("--experiment", required=True, metavar="NAME",
                       help="an experiment (or sweep variant) under `experiments:` / `sweeps:` in the params file")
        t.add_argument("--seed", type=int, required=True, metavar="N", help="one of `run.seeds`")
        t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="answer the benchmarks with the stage-2 model and score them",
                       description="Greedy answers of an experiment's stage-2 checkpoint on every benchmark of "
                                   "`run.benchmarks` (or only those given with --benchmark), then their scores. "
                                   "The checkpoint is loaded once for all of them.")
    e.add_argument("--experiment", required=True, metavar="NAME",
                   help="an experiment (or sweep variant) under `experiments:` / `sweeps:` in the params file")
    e.add_argument("--seed", type=int, required=True, metavar="N", help="one of `run.seeds`")
    e.add_argument("--benchmark", action="append", choices=_benchmarks(), metavar="NAME",
                   help="evaluate only this benchmark (repeatable; default: every one of `run.benchmarks`; no "
                        "summary file is written then); one of: %(choices)s")
    e.set_defaults(func=cmd_evaluate)

    r = sub.add_parser("report", help="tables and plots comparing the experiments' scores",
                       description="Collect every selected experiment's scores into tables and figures.")
    r.set_defaults(func=cmd_report)

    s = sub.add_parser("score", help="score an answers file of one benchmark (prints JSON)", add_help=False,
                       description="Score a Cambrian-format answers file (JSON lines) and print the scores.")
    s.set_defaults(func=cmd_score)

    ch = sub.add_parser("chat", help="answer one question about one image with a trained checkpoint",
                        description="Greedy answer of a trained checkpoint to one question, optionally about an "
                                    "image; prints only the answer.")
    ch.add_argument("--checkpoint", required=True, metavar="DIR", help="a trained model folder")
    ch.add_argument("--image", metavar="FILE", help="image file the question is about")
    ch.add_argument("--max-new-tokens", type=_positive_int, default=64, metavar="N",
                    help="longest answer in tokens (default: 64)")
    ch.add_argument("question", help="the question, as one argument")
    ch.set_defaults(func=cmd_chat)

    ex = sub.add_parser("export", help="write a trained checkpoint in another model format",
                        description="Write a trained checkpoint as transformers' LlavaForConditionalGeneration with "
                                    "its processor (llava-hf), the format lmms-eval and vLLM load. Checkpoints "
                                    "trained with bidirectional visual attention, timm towers or a linear projector "
                                    "have no exact llava-hf equivalent: the export refuses them and says why.")
    ex.add_argument("--format", required=True, choices=("llava-hf",), help="target format: %(choices)s")
    ex.add_argument("--image-mode", choices=("pad", "crop"), default="pad",
                    help="image preprocessing of the exported processor: pad to a square (evaluation, default) "
                         "or centre crop (stage 1)")
    ex.add_argument("--allow-attention-change", action="store_true",
                    help="export a bidirectional-attention checkpoint anyway; the export attends causally and "
                         "its outputs differ")
    ex.add_argument("src", metavar="SRC", help="trained model folder")
    ex.add_argument("dst", metavar="DST", help="output folder (replaced if it exists)")
    ex.set_defaults(func=cmd_export)

    cv = sub.add_parser("convert-reference", help="convert an aimagelab/JARVIS checkpoint to this format",
                        description="Convert a checkpoint of the authors' code (aimagelab/JARVIS) to a model "
                                    "folder of this project.")
    cv.add_argument("src", metavar="SRC", help="reference checkpoint folder")
    cv.add_argument("dst", metavar="DST", help="output folder")
    cv.add_argument("--target", metavar="DIR",
                    help="target-encoder folder (JEPA checkpoints store only the target tower's name)")
    cv.set_defaults(func=cmd_convert)

    dg = sub.add_parser("dag", help="render or check dvc.yaml, or list the stage ids",
                        description="The stage graph comes from the params file: `render` writes dvc.yaml, "
                                    "`check` fails when dvc.yaml is stale, `list` prints the stage ids.")
    dg.add_argument("action", choices=["render", "check", "list"], help="one of: %(choices)s")
    dg.set_defaults(func=cmd_dag)
    return p


# The commands dvc.yaml runs (jarvis.plan's stage kinds); the others are tools.
PIPELINE_STAGES = frozenset({"download", "cache-features", "pretrain", "finetune", "evaluate", "report"})


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


def _process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc), or None elsewhere: the interpreter and imports before
    the command runs are part of a stage's start-up (benchmarks/bench_default.py reads the timing line)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        import time

        return time.time() - (boot + start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def main(argv: Sequence[str] | None = None) -> int:
    from jarvis.progress import quiet_library_bars

    quiet_library_bars()  # before transformers / huggingface_hub are imported: they read it once
    from jarvis.paths import root

    # DeepSpeed's JIT ops where `make setup` compiled them (scripts/prebuild_ops.py), not in ~/.cache
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(root() / ".cache" / "torch_extensions"))
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.command == "score":
        args.rest = rest  # the scorer parses its own arguments (`jarvis score --help`)
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    import time

    from jarvis.config import ConfigError
    from jarvis.io import StageFailed

    before, t0 = _process_age_s(), time.perf_counter()

    def log_timing() -> None:
        if args.command in PIPELINE_STAGES and not getattr(args, "timed", False):
            args.timed = True
            logging.getLogger("jarvis.cli").info(
                "timing: %s start-up %.2f s (process start to command), command %.2f s", args.command,
                before if before is not None else float("nan"), time.perf_counter() - t0)

    args.log_timing = log_timing  # cmd_train calls it before a distributed process leaves with os._exit
    try:
        if os.environ.get("DVC_STAGE") and args.command in PIPELINE_STAGES:
            from jarvis import dag

            # `dvc repro` runs what dvc.yaml says: refuse when params.yaml now describes another graph
            dag.require_fresh(dag.load(), Path(os.environ.get("DVC_ROOT", ".")) / "dvc.yaml")
        rc = int(args.func(args) or 0)
        log_timing()  # a finished command only: an error stays one line
        return rc
    except StageFailed as err:  # a stage that ran and failed (diverged, locked, non-finite result): exit 1
        logging.getLogger("jarvis.cli").debug("%s failed", args.command, exc_info=True)
        print(f"error: {err}", file=sys.stderr)
        return 1
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except ValueError as err:
        if type(err).__name__ != "ExportError":  # jarvis.model.export: the checkpoint cannot be expressed
            raise
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (KeyError, FileNotFoundError) as err:  # unknown ids, missing inputs: a message, not a traceback
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
