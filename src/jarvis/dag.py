"""The stage graph, declared once (house rule 6).

``build_stages(params)`` expands the experiments and benchmarks selected in ``params.yaml`` into literal ``Stage``
records. ``dvc.yaml`` is rendered from them (``jarvis dag render``; a test checks it is fresh) and
``workflow/rules/stages.smk`` loops over the same records, so the two runners cannot drift apart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from jarvis import paths
from jarvis.config import Params, component_refs, experiment_refs, load_raw, lookup

# Source files each kind of stage runs (DVC `deps`; Snakemake `input`), so a code change reruns what it affects.
_CODE = {
    "download-data": ["src/jarvis/stages/download.py", "src/jarvis/data/synthetic.py",
                      "src/jarvis/eval/synthetic_bench.py"],
    "download-llm": ["src/jarvis/stages/download.py", "src/jarvis/stages/text_pretrain.py",
                     "src/jarvis/data/tokenizer.py", "src/jarvis/data/templates.py"],
    "download-tower": ["src/jarvis/stages/download.py", "src/jarvis/model/vision.py"],
    "cache_features": ["src/jarvis/stages/cache_features.py", "src/jarvis/model/vision.py",
                       "src/jarvis/data/images.py", "src/jarvis/data/dataset.py"],
    "pretrain": ["src/jarvis/stages/train.py", "src/jarvis/training.py", "src/jarvis/model", "src/jarvis/masking.py",
                 "src/jarvis/losses.py", "src/jarvis/data", "workflow/deepspeed/zero2.json"],
    "finetune": ["src/jarvis/stages/train.py", "src/jarvis/training.py", "src/jarvis/model", "src/jarvis/losses.py",
                 "src/jarvis/data", "workflow/deepspeed/zero3.json"],
    "evaluate": ["src/jarvis/stages/evaluate.py", "src/jarvis/eval", "src/jarvis/model", "src/jarvis/data"],
    "report": ["src/jarvis/report.py", "src/jarvis/eval/scorers.py"],
}


@dataclass(frozen=True)
class Stage:
    id: str
    kind: str
    cmd: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    params: tuple[str, ...]
    metrics: tuple[str, ...] = ()
    plots: tuple[str, ...] = ()
    resources: dict[str, Any] = field(default_factory=dict, hash=False, compare=False)
    experiment: str | None = None

    @property
    def log(self) -> str:
        return str(paths.log_file(self.id))


def _p(path: Path) -> str:
    return path.as_posix()


def build_stages(params: Params) -> list[Stage]:
    """All stages needed by ``run.experiments`` x ``run.benchmarks``, in topological order."""
    stages: dict[str, Stage] = {}
    exps = params.run.experiments
    first_recipe = params.training[params.experiment(exps[0]).training]

    def res(recipe_name: str, kind: str) -> dict[str, Any]:
        return getattr(params.training[recipe_name].resources, kind).model_dump()

    def add(stage: Stage) -> None:
        stages.setdefault(stage.id, stage)

    def download(kind: str, name: str, recipe: str) -> str:
        out = {"data": paths.dataset_dir, "llm": paths.llm_dir, "tower": paths.tower_dir}[kind](name)
        deps = list(_CODE[f"download-{kind}"])
        if kind == "llm":
            llm = params.llms[name]
            for data in dict.fromkeys(d for d in (llm.tokenizer and llm.tokenizer.corpus,
                                                   llm.text_pretrain and llm.text_pretrain.data) if d):
                deps.append(download("data", data, recipe))
        add(Stage(id=f"download-{kind}-{name}", kind="download", cmd=f"jarvis download --{kind} {name}",
                  deps=tuple(deps), outs=(_p(out),), params=tuple(component_refs(params, kind, name)),
                  resources=res(recipe, "download")))
        return _p(out)

    for exp in exps:
        e = params.experiment(exp)
        recipe = params.jepa_recipe(exp)
        target = recipe.target if recipe else None
        data = download("data", e.data, e.training)
        llm = download("llm", e.llm, e.training)
        vision = download("tower", e.vision, e.training)
        towers = [vision] + ([download("tower", target, e.training)] if target else [])

        pre = params.stage_training(exp, "pretrain")
        pre_deps = [data, llm, *towers]
        if pre.use_feature_cache:
            key = paths.cache_key(e.data, e.vision, target)
            cache_out = _p(paths.features_dir(key))
            cmd = f"jarvis cache-features --data {e.data} --vision {e.vision}" + (f" --target {target}" if target else "")
            add(Stage(id=f"cache_features-{key}", kind="cache_features", cmd=cmd,
                      deps=tuple(_CODE["cache_features"] + [data, *towers]), outs=(cache_out,),
                      params=tuple(experiment_refs(params, exp, "cache_features")),
                      resources=res(e.training, "cache_features")))
            pre_deps.append(cache_out)

        for stage, deps in (("pretrain", pre_deps), ("finetune", [data, _p(paths.checkpoint_dir(exp, "pretrain"))])):
            settings = params.stage_training(exp, stage)
            r = res(e.training, stage)
            r.update(nodes=settings.nodes, nproc=settings.nproc)
            add(Stage(id=f"{stage}-{exp}", kind=stage, cmd=f"jarvis {stage} --experiment {exp}",
                      deps=tuple(_CODE[stage] + deps),
                      outs=(_p(paths.checkpoint_dir(exp, stage)), _p(paths.history_file(exp, stage))),
                      metrics=(_p(paths.metrics_file(exp, stage)),),
                      params=tuple(experiment_refs(params, exp, stage)), resources=r, experiment=exp))

        for bench in params.run.benchmarks:
            add(Stage(id=f"evaluate-{exp}-{bench}", kind="evaluate",
                      cmd=f"jarvis evaluate --experiment {exp} --benchmark {bench}",
                      deps=tuple(_CODE["evaluate"] + [data, _p(paths.checkpoint_dir(exp, "finetune"))]),
                      outs=(_p(paths.answers_file(exp, bench)),), metrics=(_p(paths.scores_file(exp, bench)),),
                      params=tuple(experiment_refs(params, exp, "evaluate")),
                      resources=res(e.training, "evaluate"), experiment=exp))

    report_deps = [_p(paths.scores_file(x, b)) for x in exps for b in params.run.benchmarks]
    report_deps += [_p(paths.history_file(x, "pretrain")) for x in exps]
    rep = paths.reports_dir()
    add(Stage(id="report", kind="report", cmd="jarvis report", deps=tuple(_CODE["report"] + report_deps),
              outs=tuple(_p(rep / name) for name in ("table.csv", "table.md", "deltas.csv", "loss_curves.png",
                                                      "scores.png")),
              metrics=(_p(rep / "summary.json"),), params=("run", "evaluation.mode"),
              resources=first_recipe.resources.report.model_dump()))
    return list(stages.values())


def final_targets(stages: list[Stage]) -> list[str]:
    """What `all` builds: every output of every stage (so nothing selected is left out)."""
    return [o for s in stages for o in (*s.outs, *s.metrics)]


# ------------------------------------------------------------------ dvc.yaml
def is_dir_out(path: str) -> bool:
    """Declared outputs without a file suffix are directories (checkpoints, caches, data roots)."""
    return "." not in Path(path).name


def render_dvc(stages: list[Stage]) -> str:
    """dvc.yaml from the stage records. Directory outputs (checkpoints, features, data) go to the link cache;
    small file outputs (answers, loss histories, report files) are `cache: false`, i.e. versioned by git: DVC
    would otherwise re-link an unchanged file to its older cache object, and Snakemake would read the old mtime
    as "outdated" after `dvc repro`."""
    doc: dict[str, Any] = {"stages": {}}
    for s in stages:
        entry: dict[str, Any] = {"cmd": s.cmd, "deps": list(s.deps), "params": list(s.params)}
        entry["outs"] = [o if is_dir_out(o) else {o: {"cache": False}} for o in s.outs]
        if s.metrics:
            entry["metrics"] = [{m: {"cache": False}} for m in s.metrics]
        doc["stages"][s.id] = entry
    doc["plots"] = [{"runs/*/pretrain/history.jsonl": {"x": "step", "y": ["loss_ntp", "loss_jepa"]}}]
    header = ("# GENERATED by `jarvis dag render` from params.yaml + src/jarvis/dag.py -- do not edit by hand.\n"
              "# tests/test_dag.py fails when this file is stale.\n")
    return header + yaml.safe_dump(doc, sort_keys=False, width=120)


def load(params_path: str | Path = paths.PARAMS) -> tuple[Params, dict[str, Any], list[Stage]]:
    from jarvis.config import load_params

    params = load_params(params_path)
    return params, load_raw(params_path), build_stages(params)


def snakemake_inputs(stage: Stage) -> list[str]:
    """Snakemake compares mtimes, and a directory's mtime ignores edits to the files inside it: list code files."""
    out: list[str] = []
    for dep in stage.deps:
        p = Path(dep)
        if dep.startswith("src/") and p.is_dir():
            out += sorted(f.as_posix() for f in p.rglob("*.py"))
        else:
            out.append(dep)
    return out



# ------------------------------------------------------------------ Snakemake <-> DVC agreement on params
PARAMS_DIR = Path(".jarvis") / "params"
_OLD = 1_000_000_000  # 2001-09-09: "older than any output" for params files already recorded in dvc.lock


def params_file(stage: Stage) -> str:
    return (PARAMS_DIR / f"{stage.id}.json").as_posix()


def _ledger_fresh(lock: dict[str, Any], stage: Stage, values: dict[str, Any], producer: dict[str, str]) -> bool:
    """True when dvc.lock says ``stage``'s outputs were made with these param values from the current upstream
    outputs: its recorded dep hashes equal the hashes recorded for the upstream stages' outs (DVC's own rule)."""
    stages = lock.get("stages") or {}
    entry = stages.get(stage.id)
    if entry is None:
        return False
    recorded: dict[str, Any] = {}
    for _file, vals in (entry.get("params") or {}).items():
        recorded.update(vals)
    if any(json.dumps(recorded.get(k), sort_keys=True) != json.dumps(v, sort_keys=True) for k, v in values.items()):
        return False
    dep_hash = {d["path"]: d.get("md5") for d in entry.get("deps") or []}
    for dep in stage.deps:
        if dep in producer:
            outs = {o["path"]: o.get("md5") for o in (stages.get(producer[dep]) or {}).get("outs") or []}
            if dep_hash.get(dep) is None or dep_hash.get(dep) != outs.get(dep):
                return False
    return True


def sync_params_files(raw: dict[str, Any], stages: list[Stage], lock_path: Path = Path("dvc.lock")) -> list[str]:
    """Write one JSON file per stage with its declared param values; Snakemake takes it as an input.

    dvc.lock is the shared ledger of which params and upstream outputs produced which outputs (Snakemake writes it
    on success, DVC on repro). A stage the ledger calls fresh gets an old mtime on its params file, so it never
    triggers a rerun even when DVC (not Snakemake) made the outputs; otherwise the file gets mtime = now and
    Snakemake reruns the stage and its descendants, as `dvc repro` does. Returns the ids the ledger calls stale.
    """
    import os

    lock = (yaml.safe_load(lock_path.read_text()) or {}) if lock_path.is_file() else {}
    producer = {o: s.id for s in stages for o in (*s.outs, *s.metrics)}
    PARAMS_DIR.mkdir(parents=True, exist_ok=True)
    stale = []
    for s in stages:
        values = {k: lookup(raw, k) for k in s.params}
        text = json.dumps(values, sort_keys=True, indent=1) + "\n"
        path = Path(params_file(s))
        fresh = _ledger_fresh(lock, s, values, producer)
        if not (path.is_file() and path.read_text() == text):
            tmp = path.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, path)
        if fresh:
            os.utime(path, (_OLD, _OLD))
        else:
            stale.append(s.id)
            if path.stat().st_mtime == _OLD:
                os.utime(path, None)  # values left the ledger: make it newer than the outputs
    return stale


def commit_to_dvc(ids: list[str], stages: list[Stage]) -> None:
    """`dvc commit` the stages Snakemake just ran, keeping every output's mtime.

    With a link cache, DVC relinks the files of directory outputs, which bumps the directories' own mtimes in
    whatever order it commits them; Snakemake would then see upstream directories newer than downstream outputs
    and rerun them. File mtimes survive (rename + hardlink keep the inode), directory mtimes are restored here.
    """
    import os
    import subprocess

    wanted = set(ids)
    saved: dict[str, tuple[int, int]] = {}
    for s in stages:
        if s.id not in wanted:
            continue
        for out in (*s.outs, *s.metrics):
            root = Path(out)
            paths_ = [root] + (sorted(root.rglob("*")) if root.is_dir() else [])
            for p in paths_:
                st = p.lstat()
                saved[str(p)] = (st.st_atime_ns, st.st_mtime_ns)
    subprocess.run(["dvc", "commit", "-f", "-q", *sorted(wanted)], check=True)
    for path, (atime, mtime) in saved.items():
        if os.path.lexists(path):
            os.utime(path, ns=(atime, mtime), follow_symlinks=False)


# ------------------------------------------------------------------ SLURM resources (snakemake-executor-plugin-slurm)
def slurm_resources(stage: Stage) -> dict[str, Any]:
    """params.yaml resources -> Snakemake/SLURM resources (stack-facts §8).

    GPU jobs get ``tasks_per_gpu=0`` (one task drives all GPUs of a node through torchrun); multi-node training
    stages get ``nodes``/``tasks``/``mpi="srun"`` and per-node ``gres``, and their command runs one torchrun per
    node under srun (jarvis.launch). Partition and account come from the profile (environment variables).
    """
    r = stage.resources
    out: dict[str, Any] = {"runtime": r["runtime"], "mem_mb": r["mem_mb"], "cpus_per_task": r["cpus"]}
    nodes = r.get("nodes", 1)
    gpus = r.get("gpus_per_node", 0) if "nodes" in r else r.get("gpus", 0)
    if gpus:
        out["tasks_per_gpu"] = 0
        if nodes > 1:
            out["gres"] = f"gpu:{gpus}"
        else:
            out["gpu"] = gpus
    if nodes > 1:
        out.update(nodes=nodes, tasks=nodes, mpi="srun")
    return out


def launcher(stage: Stage) -> str:
    """Command prefix: one task per node under srun for multi-node stages, nothing otherwise."""
    return "srun --ntasks-per-node=1 --kill-on-bad-exit=1 " if stage.resources.get("nodes", 1) > 1 else ""
