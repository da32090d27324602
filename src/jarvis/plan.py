"""Every stage resolved once: (params, stage kind, ids) -> a typed, frozen :class:`StagePlan`.

A plan holds everything a stage is: its DAG id, command, MLflow names and tags, inputs, outputs, the settings its
``run`` uses (training recipe, mask spec, model recipe, corpus, ...), the params keys it reads and the code it
imports. ``jarvis.dag`` renders ``dvc.yaml`` and the Snakemake rules from plans, each stage's ``run`` takes its plan,
and ``jarvis.tracking`` names and tags the stage's MLflow run from it; nothing downstream re-derives these.

Declared params are *recorded*: the resolver reads params only through a :class:`View`, which logs the dotted path
of every value it hands out (a property such as ``grad_accum`` logs the fields it computes from). Code deps are the
import closure of the stage's CLI command (jarvis.codedeps). Scheduler resources are read outside the view: they
are requests, not inputs, and changing them reruns nothing.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

from pydantic import BaseModel

from jarvis import codedeps, paths
from jarvis.config import JepaRecipe, MaskSpec, Params, StageTraining, TrainSettings, lookup, with_override
from jarvis.model.recipe import JepaHead, ModelRecipe, TowerRecipe, tower_recipe
from jarvis.sweeps import Variant, expand

StageKind = Literal["download", "cache_features", "pretrain", "finetune", "evaluate", "report"]
TRAIN_KINDS = ("pretrain", "finetune")
# File layout of a synthetic data set directory (hub data sets name their annotations in params.yaml).
PRETRAIN_JSON = "blip_laion_cc_sbu_558k.json"
INSTRUCT_JSON = "llava_v1_5_mix665k.json"
_CLI_COMMAND = {"download": "cmd_download", "cache_features": "cmd_cache_features", "pretrain": "cmd_train",
                "finetune": "cmd_train", "evaluate": "cmd_evaluate", "report": "cmd_report"}
REPORT_OUTPUTS = ("table.csv", "table.md", "deltas.csv", "loss_curves.png", "scores.png")


# ------------------------------------------------------------------ the recording view
class View:
    """Read-only view over validated params that logs the dotted path of every value it returns."""

    __slots__ = ("_node", "_path", "_log")

    def __init__(self, node: Any, path: str, log: list[str]) -> None:
        object.__setattr__(self, "_node", node)
        object.__setattr__(self, "_path", path)
        object.__setattr__(self, "_log", log)

    def _child(self, value: Any, key: str) -> Any:
        path = f"{self._path}.{key}" if self._path else key
        # containers are viewed (models; tables of models or of dicts); anything else is a leaf, logged whole
        if isinstance(value, BaseModel) or (isinstance(value, dict) and value
                                            and all(isinstance(x, (BaseModel, dict)) for x in value.values())):
            return View(value, path, self._log)
        self._log.append(path)
        return value

    def __getattr__(self, name: str) -> Any:
        node = self._node
        if isinstance(node, BaseModel):
            if name in type(node).model_fields:
                return self._child(getattr(node, name), name)
            prop = getattr(type(node), name, None)
            if isinstance(prop, property):  # computed from fields: log the fields it reads
                return prop.fget(self)
        raise AttributeError(f"params view {self._path or '<root>'} has no field {name!r}")

    def __getitem__(self, key: str) -> Any:
        if not isinstance(self._node, dict) or key not in self._node:
            raise KeyError(f"{self._path}.{key}: not in params.yaml")
        return self._child(self._node[key], key)

    def get(self, key: str, default: Any = None) -> Any:
        """An optional entry of a mapping: the whole mapping is logged, present or not, so the declared keys do not
        change when the entry is added (dvc.yaml need not be re-rendered for a value edit)."""
        if not isinstance(self._node, dict):
            raise TypeError(f"params view {self._path}: not a mapping")
        self._log.append(self._path)
        return self._node.get(key, default)

    def value(self) -> Any:
        """The whole subtree (logged as one key)."""
        self._log.append(self._path)
        return self._node


# ------------------------------------------------------------------ plans
@dataclass(frozen=True)
class Corpus:
    annotations: Path
    image_root: Path


@dataclass(frozen=True)
class DownloadSpec:
    component: Literal["data", "llm", "tower"]
    name: str
    entry: Any  # the validated params entry (SyntheticData/HubData, LLMSpec, TowerSpec)
    out: Path
    seed: int | None  # scratch init / stage 0 / nothing for hub snapshots
    tokenizer_data: Path | None = None  # scratch LM: the data set whose texts train the tokenizer
    text_corpus: Corpus | None = None  # scratch LM: stage-0 conversations
    # stage 0's drop / truncation thresholds: those of the text corpus's data set
    text_max_dropped_fraction: float | None = None
    text_max_truncated_fraction: float | None = None
    # data: the corpora the download validates once (jarvis.data.manifest), where the training stages read them
    corpora: tuple[Corpus, ...] = ()


@dataclass(frozen=True)
class CacheSpec:
    data: str
    corpus: Corpus
    max_dropped_fraction: float
    dtype: str
    vision: TowerRecipe
    target: TowerRecipe | None
    out: Path


def cache_identity(spec: CacheSpec) -> dict[str, str]:
    """What a feature cache's index records of the settings that made it; training refuses a cache made by
    others (``FeatureCache(expect=...)``) even when the files look sound."""
    from jarvis.io import digest

    made_of = {"data": spec.data, "dtype": spec.dtype, "vision": repr(spec.vision), "target": repr(spec.target),
               "corpus": repr(spec.corpus), "max_dropped_fraction": spec.max_dropped_fraction}
    return {"dtype": spec.dtype, "params_digest": digest(made_of)}


@dataclass(frozen=True)
class TrainSpec:
    train: TrainSettings  # the stage's training settings (its recipe, stage, seed, skip prob, mask spec), built once
    jepa: JepaRecipe | None  # stage 1 of a JARVIS arm only (paper-spec §8): the one place this is decided
    model: ModelRecipe | None  # stage 1 builds from components; stage 2 loads `init_from`
    init_from: Path | None
    tokenizer_dir: Path
    corpus: Corpus
    max_dropped_fraction: float
    max_truncated_fraction: float
    feature_cache: Path | None
    out_dir: Path
    history: Path
    metrics: Path
    feature_cache_expect: dict[str, str] | None = None  # cache_identity of the cache it reads (checked on open)

    @property
    def stage(self) -> Literal["pretrain", "finetune"]:
        return self.train.stage

    @property
    def seed(self) -> int:
        return self.train.seed

    @property
    def mask(self) -> MaskSpec | None:
        return self.train.mask_spec


@dataclass(frozen=True)
class BenchSpec:
    """One benchmark of an evaluation: where its questions are, how long its answers may be, where results go."""

    name: str
    bench_root: Path
    max_new_tokens: int  # jarvis.eval.decoding's length, or params' override
    limit: int | None
    answers: Path
    scores: Path
    blind: BenchSpec | None = None  # the blank-image twin (evaluation.blind): same questions, files in eval_blind/


@dataclass(frozen=True)
class EvalSpec:
    """One evaluation process per (experiment, seed): the checkpoint is loaded once for all its benchmarks."""

    seed: int
    checkpoint: Path
    model_id: str
    mode: str
    batch_size: int
    benchmarks: tuple[BenchSpec, ...]
    summary: Path | None  # every benchmark's overall and group averages; None for an ad-hoc subset
    blind_summary: Path | None = None  # the same for the blank-image twins (evaluation.blind, not ad hoc)


@dataclass(frozen=True)
class ReportSpec:
    arms: tuple[str, ...]
    seeds: tuple[int, ...]
    benchmarks: tuple[str, ...]
    score_files: tuple[tuple[str, int, str, Path], ...]  # (arm, seed, benchmark, scores.json)
    blind_files: tuple[tuple[str, int, str, Path], ...]  # the same, blank images (empty: evaluation.blind off)
    histories: tuple[tuple[str, int, Path], ...]  # (arm, seed, stage-1 history)
    baselines: tuple[tuple[str, tuple[str, ...]], ...]
    sweeps: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]  # sweep -> ((variant, label), ...)
    mode: str
    out_dir: Path
    # What `dvc plots show` and `dvc metrics show` read (DVC takes CSV/JSON, not the JSONL histories):
    curves: tuple[tuple[str, int, Path], ...] = ()  # (arm, seed, stage-1 curve CSV)
    arm_metrics: tuple[tuple[str, Path], ...] = ()  # (arm, its mean scores over seeds, JSON)
    bars: Path | None = None  # one row per (benchmark, arm): the score bars


@dataclass(frozen=True)
class StagePlan:
    id: str
    kind: StageKind
    argv: tuple[str, ...]
    mlflow_experiment: str
    run_name: str
    tags: tuple[tuple[str, str], ...]
    inputs: tuple[str, ...]  # upstream outputs
    outs: tuple[str, ...]
    metrics: tuple[str, ...]
    params: tuple[str, ...]  # the params.yaml keys resolution read
    values: Mapping[str, Any] = field(hash=False, compare=False)  # key -> value in params.yaml
    read: tuple[str, ...] = field(default=(), compare=False)  # every key resolution read (``params`` reduces it)
    code: tuple[str, ...] = ()  # project-relative files: the command's import closure + configs it reads
    resources: Mapping[str, Any] = field(default_factory=dict, hash=False, compare=False)
    spec: Any = None
    experiment: str | None = None
    seed: int | None = None
    logged: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)  # MLflow params (arm-independent)

    @property
    def cmd(self) -> str:
        """The shell command, every word quoted (it goes into dvc.yaml and a Snakemake `shell:`)."""
        return shlex.join(self.argv)

    @property
    def deps(self) -> tuple[str, ...]:
        return (*self.code, *self.inputs)

    @property
    def log(self) -> str:
        return paths.log_file(self.id).as_posix()

    @property
    def identity(self) -> Any:
        from jarvis.tracking import RunIdentity

        return RunIdentity(experiment=self.mlflow_experiment, run_name=self.run_name, tags=self.tags,
                           values=self.values, logged=self.logged)


# ------------------------------------------------------------------ resolver
def _p(path: Path) -> str:
    return path.as_posix()


@functools.cache
def _code(command_function: str) -> list[str]:
    return codedeps.files(codedeps.cli_command_deps(command_function))


def _exists(raw: Any, dotted: str) -> bool:
    try:
        lookup(raw, dotted)
        return True
    except (KeyError, TypeError):
        return False


class Resolver:
    """Resolves stage plans for one params file (with its sweep variants expanded)."""

    def __init__(self, params: Params, raw: dict[str, Any]) -> None:
        self.params, self.variants = expand(params)
        self.raw = raw

    # ---- recording
    def _read(self, log: list[str]) -> tuple[str, ...]:
        """The keys resolution read, in params.yaml's terms (sweep variants translated), in order."""
        return tuple(dict.fromkeys(t for k in log for t in self._translate(k)))

    def _declared(self, read: tuple[str, ...]) -> tuple[str, ...]:
        """The params.yaml keys a stage declares: each key read itself, the exact leaf, when params.yaml writes it.

        A value read from a schema default that params.yaml leaves out has no key of its own: DVC refuses to declare
        a missing key (MissingParamsError), and writing it later must rerun the stage, so its nearest written parent
        is declared instead (over-broad: that parent's other entries then count too). params.yaml therefore writes
        every key a stage reads (``image_size: null`` of a tower), and test_plan checks that none falls back.
        """
        keys: set[str] = set()
        for t in read:
            key = t
            while not _exists(self.raw, key):
                if "." not in key:
                    raise KeyError(f"params key {t!r} resolves to nothing in params.yaml")
                key = key.rsplit(".", 1)[0]
            keys.add(key)
        return tuple(sorted(k for k in keys if not any(k.startswith(a + ".") for a in keys)))

    def _translate(self, key: str) -> list[str]:
        """A key read on a sweep variant -> the base experiment's key and/or the sweep's declaration."""
        parts = key.split(".")
        if parts[0] != "experiments" or len(parts) < 2 or parts[1] not in self.variants:
            return [key]
        v: Variant = self.variants[parts[1]]
        rest = tuple(parts[2:])
        out = []
        touches = [p for p in v.paths if rest[: len(p)] == p or p[: len(rest)] == rest]
        if touches:
            out.append(f"sweeps.{v.sweep}")
        if not any(rest[: len(p)] == p for p in v.paths):  # not entirely a swept value: the base is read too
            out.append(".".join(("experiments", v.base, *rest)))
        return out

    def _finish(self, log: list[str], **kw: Any) -> StagePlan:
        read = self._read(log)
        keys = self._declared(read)
        values = MappingProxyType({k: lookup(self.raw, k) for k in keys})
        kind = kw["kind"]
        code = _code(_CLI_COMMAND[kind])
        code = [*code, *kw.pop("extra_code", ())]
        # One MLflow experiment per study (run.study): every arm, seed, variant and shared stage, told apart by tags.
        study = self.params.run.study
        tags = {"jarvis.stage_id": kw["id"], "jarvis.stage": kind, "jarvis.study": study}
        if kw.get("seed") is not None:
            tags["jarvis.seed"] = str(kw["seed"])
        exp = kw.get("experiment")
        logged: dict[str, Any] = dict(values)
        if exp is not None:
            tags.update({"jarvis.arm": exp, "jarvis.experiment": exp})
            if exp in self.variants:
                tags.update({"jarvis.variant": exp, "jarvis.sweep": self.variants[exp].sweep,
                             "jarvis.sweep_base": self.variants[exp].base})
            logged = {**self._arm_independent(exp, values), "arm": self.params.arm_summary(exp)}
        return StagePlan(params=keys, values=values, read=read, code=tuple(code), tags=tuple(sorted(tags.items())),
                         mlflow_experiment=study, logged=MappingProxyType(logged), **kw)

    def _arm_independent(self, exp: str, values: Mapping[str, Any]) -> dict[str, Any]:
        """Declared params with the arm's own names taken out of the keys (``experiments.jarvis.llm`` -> ``experiment.
        llm``, ``training.tiny.pretrain.x`` -> ``training.pretrain.x``): two arms' runs then share their keys."""
        e = self.params.experiments[exp]
        base = self.variants[exp].base if exp in self.variants else exp
        names = {f"experiments.{exp}": "experiment", f"experiments.{base}": "experiment",
                 f"training.{e.training}": "training"}
        if e.jepa is not None:
            names[f"jepa.{e.jepa}"] = "jepa"
        out: dict[str, Any] = {}
        for key, value in values.items():
            for prefix, role in names.items():
                if key == prefix or key.startswith(prefix + "."):
                    key = role + key[len(prefix):]
                    break
            out[key] = value
        return out

    def _resources(self, recipe: str, kind: str) -> dict[str, Any]:
        return getattr(self.params.training[recipe].resources, kind).model_dump()

    def _shared_recipe(self) -> str:
        return self.params.experiments[self.params.run.experiments[0]].training

    @staticmethod
    def _corpus(v: View, data: str, part: Literal["pretrain", "instruct"]) -> Corpus:
        spec = v.datasets[data]
        base = paths.dataset_dir(data) / part
        if spec.kind == "hub":
            name = getattr(spec, part).annotations
        else:
            name = PRETRAIN_JSON if part == "pretrain" else INSTRUCT_JSON
        return Corpus(annotations=base / name, image_root=base)

    @staticmethod
    def _tower(v: View, name: str) -> TowerRecipe:
        # tower_selection reads through the view: only the feature-selection keys are declared (the architecture
        # is in the downloaded directory, whose own stage declares the whole entry)
        return tower_recipe(name, v.towers[name], paths.tower_dir(name))

    @staticmethod
    def _jepa(v: View, exp: str) -> JepaRecipe | None:
        e = v.experiments[exp]
        ref = e.jepa
        if ref is None:
            return None
        return with_override(v.jepa[ref].value(), e.overrides.get("jepa"))

    @staticmethod
    def _llm_entry(llm: View) -> Any:
        """Log what materialising an LM reads (not jepa_layer: the read-out layer is a stage-1 knob)."""
        if llm.init == "hub":
            llm.hub.value()
        else:
            llm.config  # noqa: B018 -- a leaf: reading logs it
            llm.tokenizer.value()
            tp = llm.text_pretrain
            if tp is not None:
                tp.value()
        llm.chat_template  # noqa: B018
        return llm._node

    @staticmethod
    def _training(v: View, exp: str, stage: str) -> StageTraining:
        e = v.experiments[exp]
        return with_override(getattr(v.training[e.training], stage).value(), e.overrides.get(stage))

    # ---- kinds
    def download(self, component: Literal["data", "llm", "tower"], name: str,
                 recipe: str | None = None) -> StagePlan:
        log: list[str] = []
        v = View(self.params, "", log)
        inputs: list[str] = []
        seed: int | None = None
        extra: dict[str, Any] = {}
        if component == "data":
            table = self.params.datasets
            entry = v.datasets[name].value() if name in table else None
            out = paths.dataset_dir(name)
            if entry is not None:
                extra["corpora"] = tuple(self._corpus(v, name, part) for part in ("pretrain", "instruct"))
        elif component == "llm":
            table = self.params.llms
            out = paths.llm_dir(name)
            entry = None
            if name in table:
                entry = self._llm_entry(v.llms[name])
                if entry.init == "scratch":
                    seed = v.seed
                    extra["tokenizer_data"] = paths.dataset_dir(entry.tokenizer.corpus)
                    inputs.append(_p(paths.dataset_dir(entry.tokenizer.corpus)))
                    if entry.text_pretrain is not None and entry.text_pretrain.steps > 0:
                        extra["text_corpus"] = self._corpus(v, entry.text_pretrain.data, "instruct")
                        text_data = v.datasets[entry.text_pretrain.data]
                        extra["text_max_dropped_fraction"] = text_data.max_dropped_fraction
                        extra["text_max_truncated_fraction"] = text_data.max_truncated_fraction
                        inputs.append(_p(paths.dataset_dir(entry.text_pretrain.data)))
        else:
            table = self.params.towers
            out = paths.tower_dir(name)
            entry = v.towers[name].value() if name in table else None
            if entry is not None and entry.init == "scratch":
                seed = v.seed
        if entry is None:
            raise KeyError(f"unknown {component} {name!r}; params.yaml defines {sorted(table)}")
        sid = f"download-{component}-{name}"
        spec = DownloadSpec(component=component, name=name, entry=entry, out=out, seed=seed, **extra)
        return self._finish(log, id=sid, kind="download", argv=("jarvis", "download", f"--{component}", name),
                            run_name=sid, inputs=tuple(dict.fromkeys(inputs)),
                            outs=(_p(out),), metrics=(), spec=spec,
                            resources=self._resources(recipe or self._shared_recipe(), "download"))

    def cache_features(self, data: str, vision: str, target: str | None, recipe: str | None = None) -> StagePlan:
        log: list[str] = []
        v = View(self.params, "", log)
        key = paths.cache_key(data, vision, target)
        spec = CacheSpec(data=data, corpus=self._corpus(v, data, "pretrain"),
                         max_dropped_fraction=v.datasets[data].max_dropped_fraction,
                         dtype=v.datasets[data].feature_cache_dtype, vision=self._tower(v, vision),
                         target=self._tower(v, target) if target else None, out=paths.features_dir(key))
        inputs = [paths.dataset_dir(data), paths.tower_dir(vision)] + ([paths.tower_dir(target)] if target else [])
        sid = f"cache_features-{key}"
        argv = ("jarvis", "cache-features", "--data", data, "--vision", vision) + (
            ("--target", target) if target else ())
        return self._finish(log, id=sid, kind="cache_features", argv=argv, run_name=sid,
                            inputs=tuple(_p(p) for p in inputs), outs=(_p(spec.out),), metrics=(),
                            spec=spec, resources=self._resources(recipe or self._shared_recipe(), "cache_features"))

    def train(self, stage: Literal["pretrain", "finetune"], exp: str, seed: int) -> StagePlan:
        log: list[str] = []
        v = View(self.params, "", log)
        if exp not in self.params.experiments:
            raise KeyError(f"unknown experiment {exp!r} (known: {sorted(self.params.experiments)})")
        e = v.experiments[exp]
        training = self._training(v, exp, stage)
        data = e.data
        inputs = [paths.dataset_dir(data)]
        jepa = model = init_from = cache = expect = None
        if stage == "pretrain":
            jepa = self._jepa(v, exp)
            llm = e.llm
            layer = e.jepa_layer if jepa is not None else None
            if jepa is not None and layer is None:
                layer = v.llms[llm].jepa_layer
            model = ModelRecipe(
                llm=llm, llm_dir=paths.llm_dir(llm), vision=self._tower(v, e.vision),
                target=self._tower(v, jepa.target) if jepa else None, projector=e.projector,
                bidir_visual_attn=e.bidir_visual_attn,
                jepa=JepaHead(layer=layer, head=jepa.head, loss=jepa.loss, weight=jepa.weight) if jepa else None)
            tokenizer_dir = paths.llm_dir(llm)
            inputs += [_p(paths.llm_dir(llm)), _p(model.vision.dir)] + ([_p(model.target.dir)] if model.target else [])
            if training.use_feature_cache:
                cache_spec = self.cache_features(data, model.vision.name,
                                                 model.target.name if model.target else None).spec
                cache, expect = cache_spec.out, cache_identity(cache_spec)
                inputs.append(_p(cache))
        else:
            init_from = tokenizer_dir = paths.checkpoint_dir(exp, seed, "pretrain")  # tokenizer saved with it
            inputs.append(_p(init_from))
        resources = self._resources(self.params.experiments[exp].training, stage)
        spec = TrainSpec(train=TrainSettings.of(training, stage, seed, jepa, resources["dataloader_workers"]),
                         jepa=jepa, model=model,
                         init_from=init_from, tokenizer_dir=tokenizer_dir,
                         corpus=self._corpus(v, data, "pretrain" if stage == "pretrain" else "instruct"),
                         max_dropped_fraction=v.datasets[data].max_dropped_fraction,
                         max_truncated_fraction=v.datasets[data].max_truncated_fraction, feature_cache=cache,
                         out_dir=paths.checkpoint_dir(exp, seed, stage), history=paths.history_file(exp, seed, stage),
                         metrics=paths.metrics_file(exp, seed, stage), feature_cache_expect=expect)
        resources.update(nodes=training.nodes, nproc=training.nproc)
        extra_code = ()
        if training.zero_stage is not None:
            extra_code = (f"workflow/deepspeed/zero{training.zero_stage if training.zero_stage >= 2 else 2}.json",)
        sid = f"{stage}-{exp}-s{seed}"
        return self._finish(log, id=sid, kind=stage, argv=("jarvis", stage, "--experiment", exp, "--seed", str(seed)),
                            run_name=f"{exp}/s{seed}/{stage}",
                            inputs=tuple(_p(Path(i)) for i in inputs),
                            outs=(_p(spec.out_dir), _p(spec.history)), metrics=(_p(spec.metrics),), spec=spec,
                            resources=resources, experiment=exp, seed=seed, extra_code=extra_code)

    def evaluate(self, exp: str, seed: int, benchmarks: tuple[str, ...] | None = None) -> StagePlan:
        """The evaluation of one (experiment, seed): every benchmark of ``run.benchmarks`` in one process (the DAG
        stage), or an ad-hoc subset ``benchmarks`` (`jarvis evaluate --benchmark B`: same per-benchmark files, no
        summary, its own stage id)."""
        from jarvis.eval.decoding import max_new_tokens

        log: list[str] = []
        v = View(self.params, "", log)
        if exp not in self.params.experiments:
            raise KeyError(f"unknown experiment {exp!r} (known: {sorted(self.params.experiments)})")
        e = v.experiments[exp]
        cfg = v.evaluation
        data = e.data
        adhoc = benchmarks is not None
        names = tuple(dict.fromkeys(benchmarks if adhoc else v.run.benchmarks))
        if not names:
            raise ValueError(f"evaluate {exp} s{seed}: no benchmarks")
        lengths, limit, blind = cfg.max_new_tokens, cfg.limit, cfg.blind
        benches = []
        for bench in names:
            sub = "cvbench" if bench.startswith("cvbench") or bench in ("ade", "coco", "omni") else bench
            one = BenchSpec(name=bench, bench_root=paths.dataset_dir(data) / sub,
                            max_new_tokens=max_new_tokens(bench, lengths), limit=limit,
                            answers=paths.answers_file(exp, seed, bench), scores=paths.scores_file(exp, seed, bench))
            if blind:
                twin = replace(one, answers=paths.answers_file(exp, seed, bench, blind=True),
                               scores=paths.scores_file(exp, seed, bench, blind=True))
                one = replace(one, blind=twin)
            benches.append(one)
        ckpt = paths.checkpoint_dir(exp, seed, "finetune")
        summary = None if adhoc else paths.eval_summary_file(exp, seed)
        blind_summary = paths.eval_summary_file(exp, seed, blind=True) if blind and not adhoc else None
        spec = EvalSpec(seed=seed, checkpoint=ckpt, model_id=exp, mode=cfg.mode, batch_size=cfg.batch_size,
                        benchmarks=tuple(benches), summary=summary, blind_summary=blind_summary)
        sid = f"evaluate-{exp}-s{seed}" + ("".join(f"-{b}" for b in names) if adhoc else "")
        argv = ("jarvis", "evaluate", "--experiment", exp, "--seed", str(seed))
        if adhoc:
            argv += tuple(w for b in names for w in ("--benchmark", b))
        outs = tuple(_p(f) for b in benches for f in (b.answers, b.scores))
        outs += tuple(_p(f) for b in benches if b.blind is not None for f in (b.blind.answers, b.blind.scores))
        resources = self._resources(self.params.experiments[exp].training, "evaluate")
        # params give minutes per benchmark; one job answers them all, twice with the blind control
        resources["runtime"] *= len(benches) * (2 if blind else 1)
        return self._finish(log, id=sid, kind="evaluate", argv=argv,
                            run_name=f"{exp}/s{seed}/evaluate" + ("".join(f"-{b}" for b in names) if adhoc else ""),
                            inputs=(_p(paths.dataset_dir(data)), _p(ckpt)), outs=outs,
                            metrics=tuple(_p(f) for f in (summary, blind_summary) if f is not None), spec=spec,
                            resources=resources, experiment=exp, seed=seed)

    def arms(self, run: Any = None) -> list[str]:
        """Selected experiments, then the variants of the selected sweeps, from ``run`` (a view, or the params)."""
        run = run if run is not None else self.params.run
        out = list(run.experiments)
        selected = list(run.sweeps)
        return out + [n for n, var in self.variants.items() if var.sweep in selected and n not in out]

    def report(self) -> StagePlan:
        log: list[str] = []
        v = View(self.params, "", log)
        run = v.run
        seeds = tuple(run.seeds)
        benches = tuple(run.benchmarks)
        arms = self.arms(run)
        selected = list(run.sweeps)
        baselines = []
        for a in arms:
            bases = tuple(b for b in v.experiments[a].baselines if b in arms)
            if bases:
                baselines.append((a, bases))
        sweeps = tuple((s, tuple((n, var.label) for n, var in self.variants.items() if var.sweep == s))
                       for s in selected)
        for s in selected:
            v.sweeps[s].value()
        blind = v.evaluation.blind
        spec = ReportSpec(
            arms=tuple(arms), seeds=seeds, benchmarks=benches,
            score_files=tuple((a, s, b, paths.scores_file(a, s, b)) for a in arms for s in seeds for b in benches),
            blind_files=tuple((a, s, b, paths.scores_file(a, s, b, blind=True)) for a in arms for s in seeds
                              for b in benches) if blind else (),
            histories=tuple((a, s, paths.history_file(a, s, "pretrain")) for a in arms for s in seeds),
            baselines=tuple(baselines), sweeps=sweeps, mode=v.evaluation.mode, out_dir=paths.reports_dir(),
            curves=tuple((a, s, paths.reports_dir() / "curves" / f"{a}-s{s}.csv") for a in arms for s in seeds),
            arm_metrics=tuple((a, paths.reports_dir() / "arms" / f"{a}.json") for a in arms),
            bars=paths.reports_dir() / "bars.csv")
        rep = spec.out_dir
        inputs = [_p(f) for *_, f in (*spec.score_files, *spec.blind_files)] + [_p(h) for *_, h in spec.histories]
        names = (*REPORT_OUTPUTS, "summary.json", *(f"sweep-{s}.png" for s in selected))
        return self._finish(log, id="report", kind="report", argv=("jarvis", "report"),
                            run_name="report", inputs=tuple(inputs),
                            outs=(*(_p(rep / n) for n in names), *(_p(f) for _, _, f in spec.curves), _p(spec.bars)),
                            metrics=tuple(_p(f) for _, f in spec.arm_metrics),
                            spec=spec, resources=self._resources(self._shared_recipe(), "report"))

    # ---- the graph
    def graph(self) -> list[StagePlan]:
        """All stages of ``run`` (experiments and selected sweeps x seeds; one evaluation per model), in topological
        order."""
        plans: dict[str, StagePlan] = {}

        def add(plan: StagePlan) -> StagePlan:
            return plans.setdefault(plan.id, plan)

        for exp in self.arms():
            recipe = self.params.experiments[exp].training
            for seed in self.params.run.seeds:
                pre = self.train("pretrain", exp, seed)
                model = pre.spec.model
                add(self.download("data", self.params.experiments[exp].data, recipe))
                llm = self.download("llm", model.llm, recipe)
                for dep in llm.inputs:  # scratch LMs read data sets (tokenizer corpus, stage 0)
                    add(self.download("data", Path(dep).name, recipe))
                add(llm)
                for tower in (model.vision, model.target):
                    if tower is not None:
                        add(self.download("tower", tower.name, recipe))
                if pre.spec.feature_cache is not None:
                    add(self.cache_features(self.params.experiments[exp].data, model.vision.name,
                                            model.target.name if model.target else None, recipe))
                add(pre)
                add(self.train("finetune", exp, seed))
                add(self.evaluate(exp, seed))
        add(self.report())
        return list(plans.values())

    def resolve(self, kind: StageKind, **ids: Any) -> StagePlan:
        if "seed" in ids and ids["seed"] not in self.params.run.seeds:
            raise KeyError(f"seed {ids['seed']} is not in run.seeds {self.params.run.seeds}")
        if kind == "download":
            return self.download(ids["component"], ids["name"])
        if kind == "cache_features":
            return self.cache_features(ids["data"], ids["vision"], ids.get("target"))
        if kind in TRAIN_KINDS:
            return self.train(kind, ids["experiment"], ids["seed"])  # type: ignore[arg-type]
        if kind == "evaluate":
            return self.evaluate(ids["experiment"], ids["seed"], ids.get("benchmarks"))
        if kind == "report":
            return self.report()
        raise ValueError(f"unknown stage kind {kind!r}")


def resolve(params: Params, raw: dict[str, Any], kind: StageKind, **ids: Any) -> StagePlan:
    """The one resolution function: (params, stage kind, ids) -> StagePlan."""
    return Resolver(params, raw).resolve(kind, **ids)


def load(params_path: str | Path = paths.PARAMS) -> Resolver:
    from jarvis.config import load_params, load_raw

    return Resolver(load_params(params_path), load_raw(params_path))
