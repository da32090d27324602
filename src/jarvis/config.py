"""The schema of ``params.yaml`` (house rule 5: schema first, unknown keys rejected with their name).

Every section is a frozen pydantic model with ``extra="forbid"``. Experiments reference named building blocks
(LLMs, towers, datasets, training recipes, JEPA recipes). Which params keys a stage reads is not listed here: the
stage resolver (jarvis.plan) records the keys it reads through a view over these models.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

TemplateName = Literal["plain", "vicuna_v1", "qwen2", "mistral"]
JepaLossKind = Literal["cos", "smooth_l1"]  # the one list of JEPA losses (jarvis.losses, JarvisConfig read it)
JEPA_LOSSES: tuple[str, ...] = get_args(JepaLossKind)
TrainableGroup = Literal["projector", "mask_token", "jepa_head", "llm", "vision", "target"]
BENCHMARKS = (
    *("cvbench_2d", "cvbench_3d", "mmvp", "blink", "mme", "mmstar", "pope", "gqa"),
    *("realworldqa", "vstar", "mmbench_en", "seed", "scienceqa", "ai2d", "textvqa", "chartqa", "ocrbench"),
)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfigError(ValueError):
    """params.yaml failed validation; the message names the offending key."""


class HubRef(_Strict):
    repo_id: str
    revision: str = "main"  # pin a commit sha for a real run


class TokenizerSpec(_Strict):
    vocab_size: int = Field(ge=32)
    corpus: str  # name of a synthetic dataset whose texts train the tokenizer


class TextPretrain(_Strict):
    """Stage 0 for from-scratch LMs (benchmarks-spec §6): text-only instruction pretraining before stage 1."""

    data: str  # a synthetic dataset whose instruct conversations are the text
    steps: int = Field(ge=0)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0)


class LLMSpec(_Strict):
    init: Literal["scratch", "hub"]
    text_pretrain: TextPretrain | None = None
    config: dict[str, Any] | None = None  # transformers config kwargs incl. model_type (scratch)
    hub: HubRef | None = None
    tokenizer: TokenizerSpec | None = None
    chat_template: TemplateName
    jepa_layer: int = Field(ge=1)  # 1-indexed hidden_states index (paper-spec §2)

    @model_validator(mode="after")
    def _source(self) -> LLMSpec:
        if self.init == "scratch" and (self.config is None or self.tokenizer is None):
            raise ValueError("init: scratch needs `config` (with model_type) and `tokenizer`")
        if self.init == "hub" and self.hub is None:
            raise ValueError("init: hub needs `hub: {repo_id, revision}`")
        if self.config is not None and "model_type" not in self.config:
            raise ValueError("`config` needs a model_type (llama, qwen2, mistral, ...)")
        return self


class TowerSpec(_Strict):
    library: Literal["transformers", "timm"]
    init: Literal["scratch", "hub"]
    config: dict[str, Any] | None = None  # transformers: config kwargs incl. model_type; timm: create_model kwargs
    name: str | None = None  # timm model name
    hub: HubRef | None = None
    feature_layer: int = -1
    drop_prefix_tokens: int = Field(default=0, ge=0)
    image_size: int | None = None  # override the input size (e.g. a target tower fed the context crop)

    @model_validator(mode="after")
    def _source(self) -> TowerSpec:
        if self.library == "timm" and not self.name:
            raise ValueError("library: timm needs `name`")
        if self.init == "scratch" and self.library == "transformers" and not (self.config or {}).get("model_type"):
            raise ValueError("library: transformers, init: scratch needs `config.model_type`")
        if self.init == "hub" and self.hub is None:
            raise ValueError("init: hub needs `hub: {repo_id, revision}`")
        return self


CacheDtype = Literal["float32", "bfloat16", "float16"]


class SyntheticData(_Strict):
    kind: Literal["synthetic"]
    feature_cache_dtype: CacheDtype = "float32"
    image_size: int = Field(ge=16)
    n_pretrain: int = Field(ge=1)
    n_instruct: int = Field(ge=1)
    n_bench_per_task: int = Field(ge=1)
    n_general_per_benchmark: int = Field(ge=1)
    caption_spatial_rate: float = Field(ge=0.0, le=1.0)
    seed: int
    max_dropped_fraction: float = Field(ge=0.0, le=1.0)


class HubCorpus(_Strict):
    repo_id: str
    revision: str = "main"
    annotations: str
    archives: list[str] = []


class HubData(_Strict):
    kind: Literal["hub"]
    feature_cache_dtype: CacheDtype = "bfloat16"
    pretrain: HubCorpus
    instruct: HubCorpus
    benchmarks: dict[str, HubRef]  # benchmark data dir name (cvbench, mmvp, blink, ...) -> dataset repo
    max_dropped_fraction: float = Field(ge=0.0, le=1.0)


DatasetSpec = Annotated[SyntheticData | HubData, Field(discriminator="kind")]


class StageTraining(_Strict):
    learning_rate: float = Field(gt=0)
    global_batch: int = Field(ge=1)
    per_device_batch: int = Field(ge=1)
    nproc: int = Field(ge=1)
    nodes: int = Field(ge=1)
    epochs: float = Field(gt=0)
    max_steps: int = -1
    warmup_ratio: float = Field(ge=0, lt=1)  # transformers 5 reads a float warmup of 1.0 as one step
    lr_scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"]
    weight_decay: float = Field(ge=0)
    max_grad_norm: float = Field(gt=0)
    bf16: bool
    gradient_checkpointing: bool
    zero_stage: Literal[0, 1, 2, 3] | None
    save_steps: int = Field(ge=1)
    logging_steps: int = Field(ge=1)
    trainable: list[TrainableGroup]
    image_mode: Literal["crop", "pad"]
    use_feature_cache: bool
    max_length: int = Field(ge=16)

    @property
    def world_size(self) -> int:
        return self.nodes * self.nproc

    @property
    def grad_accum(self) -> int:
        """Derived, never configured: global = per-device x accumulation x world (prismatic habit)."""
        per_step = self.per_device_batch * self.world_size
        if self.global_batch % per_step:
            raise ConfigError(
                f"global_batch {self.global_batch} is not divisible by per_device_batch {self.per_device_batch}"
                f" x world size {self.world_size} (= {per_step})"
            )
        return self.global_batch // per_step

    @model_validator(mode="after")
    def _split(self) -> StageTraining:
        self.grad_accum  # noqa: B018 -- raises on an impossible split at load time
        if self.use_feature_cache and self.image_mode != "crop":
            raise ValueError("use_feature_cache needs image_mode: crop (the cache holds centre-cropped features)")
        return self


class StageResources(_Strict):
    runtime: int = Field(ge=1)  # minutes
    mem_mb: int = Field(ge=1)
    cpus: int = Field(ge=1)
    gpus: int = Field(default=0, ge=0)  # single-node stages
    gpus_per_node: int = Field(default=0, ge=0)  # training stages (nodes/nproc come from the stage settings)


class Resources(_Strict):
    download: StageResources
    cache_features: StageResources
    pretrain: StageResources
    finetune: StageResources
    evaluate: StageResources
    report: StageResources


class TrainingRecipe(_Strict):
    pretrain: StageTraining
    finetune: StageTraining
    resources: Resources  # cluster requests; not declared as DVC params (they do not change results)


class MaskSpec(_Strict):
    """Multiblock mask hyper-parameters (jarvis.masking samples them); defaults are the reference's (paper-spec §4)."""

    num_targets: int = Field(default=4, ge=0)
    target_scale: tuple[float, float] = (0.15, 0.2)
    context_scale: tuple[float, float] = (0.85, 1.0)
    aspect_ratio: tuple[float, float] = (0.75, 1.5)
    min_keep: int = Field(default=10, ge=0)
    targets_may_overlap: bool = True

    @model_validator(mode="after")
    def _ranges(self) -> MaskSpec:
        for name in ("target_scale", "context_scale", "aspect_ratio"):
            lo, hi = getattr(self, name)
            if not 0 < lo <= hi:
                raise ValueError(f"{name} must satisfy 0 < lo <= hi, got {(lo, hi)}")
        if self.target_scale[1] > 1 or self.context_scale[1] > 1:
            raise ValueError("mask scales are fractions of the grid area and must be <= 1")
        return self


class JepaRecipe(_Strict):
    target: str
    loss: JepaLossKind
    weight: float = Field(ge=0)
    skip_prob: float = Field(ge=0, le=1)
    head: Literal["linear", "mlp"]
    mask: MaskSpec


class Evaluation(_Strict):
    mode: Literal["fixed", "compat"]
    batch_size: int = Field(ge=1)
    # Per-benchmark decoding length overrides; unset benchmarks use the reference's (jarvis.eval.decoding).
    max_new_tokens: dict[Literal[BENCHMARKS], Annotated[int, Field(ge=1)]] = {}  # type: ignore[valid-type]
    limit: int | None = None


class Experiment(_Strict):
    paper_ref: str
    llm: str
    vision: str
    projector: Literal["linear", "mlp"]
    bidir_visual_attn: bool
    jepa: str | None
    data: str
    training: str
    baselines: list[str] = []
    jepa_layer: int | None = Field(default=None, ge=1)  # None: the LLM's default read-out layer
    # Per-experiment changes to its training recipe or JEPA recipe, e.g. {pretrain: {learning_rate: 2.0e-3}} or
    # {jepa: {skip_prob: 0.5, mask: {num_targets: 2}}}; validated against the recipe schema. Declared as part of
    # `experiments.<name>`, so an edit reruns only this experiment.
    overrides: dict[Literal["pretrain", "finetune", "jepa"], dict[str, Any]] = {}


class Sweep(_Strict):
    """Variants of one base experiment: values of experiment keys (jarvis.sweeps.SWEEP_KEYS), as a grid (every
    combination) or zipped lists (the i-th values together). Each variant is a full experiment, validated by the
    same schema; its id is ``<base>--<key>-<value>[--...]``."""

    base: str
    mode: Literal["grid", "zip"] = "grid"
    values: dict[str, list[Any]] = Field(min_length=1)
    paper_ref: str = ""

    @model_validator(mode="after")
    def _lists(self) -> Sweep:
        for key, vals in self.values.items():
            if not vals:
                raise ValueError(f"values.{key}: empty list")
        if self.mode == "zip" and len({len(v) for v in self.values.values()}) > 1:
            raise ValueError(f"mode: zip needs lists of one length, got { {k: len(v) for k, v in self.values.items()} }")
        return self


class RunSelection(_Strict):
    experiments: list[str] = Field(min_length=1)
    seeds: list[int] = Field(min_length=1)  # every training/evaluation stage runs once per seed
    sweeps: list[str] = []  # names in `sweeps`; their variants run too (x seeds)
    benchmarks: list[Literal[BENCHMARKS]]  # type: ignore[valid-type]


class Params(_Strict):
    seed: int  # shared building blocks only (scratch LM/tower init, stage 0); runs take theirs from run.seeds
    run: RunSelection
    llms: dict[str, LLMSpec]
    towers: dict[str, TowerSpec]
    datasets: dict[str, DatasetSpec]
    training: dict[str, TrainingRecipe]
    jepa: dict[str, JepaRecipe]
    evaluation: Evaluation
    experiments: dict[str, Experiment]
    sweeps: dict[str, Sweep] = {}

    @model_validator(mode="after")
    def _references(self) -> Params:
        """Every name an experiment uses must exist; the error names the referring key."""
        for name, exp in self.experiments.items():
            refs = [("llm", exp.llm, self.llms), ("vision", exp.vision, self.towers),
                    ("data", exp.data, self.datasets), ("training", exp.training, self.training)]
            if exp.jepa is not None:
                refs.append(("jepa", exp.jepa, self.jepa))
            for field, ref, table in refs:
                if ref not in table:
                    raise ValueError(f"experiments.{name}.{field}: unknown name {ref!r} (known: {sorted(table)})")
            for b in exp.baselines:
                if b not in self.experiments:
                    raise ValueError(f"experiments.{name}.baselines: unknown experiment {b!r}")
            if "jepa" in exp.overrides and exp.jepa is None:
                raise ValueError(f"experiments.{name}.overrides.jepa: the experiment has no JEPA recipe (jepa: null)")
            if exp.jepa_layer is not None and exp.jepa is None:
                raise ValueError(f"experiments.{name}.jepa_layer: the experiment has no JEPA recipe (jepa: null)")
            for stage in exp.overrides:
                try:
                    recipe = self.stage_training(name, stage) if stage != "jepa" else self.jepa_recipe(name)
                except ValidationError as err:
                    raise ValueError(
                        _format_error(err).replace("params.yaml is invalid:\n  ", f"experiments.{name}.overrides.{stage}.")
                    ) from None
                if stage == "jepa" and recipe.target not in self.towers:
                    raise ValueError(f"experiments.{name}.overrides.jepa.target: unknown tower {recipe.target!r}")
            if exp.jepa is not None and not exp.bidir_visual_attn:
                raise ValueError(f"experiments.{name}: JEPA needs bidir_visual_attn: true (paper-spec §6)")
        for name, recipe in self.jepa.items():
            if recipe.target not in self.towers:
                raise ValueError(f"jepa.{name}.target: unknown tower {recipe.target!r}")
        for name in self.run.experiments:
            if name not in self.experiments:
                raise ValueError(f"run.experiments: unknown experiment {name!r} (known: {sorted(self.experiments)})")
        if len(set(self.run.seeds)) != len(self.run.seeds):
            raise ValueError(f"run.seeds: repeated seeds {self.run.seeds}")
        for name in self.run.sweeps:
            if name not in self.sweeps:
                raise ValueError(f"run.sweeps: unknown sweep {name!r} (known: {sorted(self.sweeps)})")
        for name, sweep in self.sweeps.items():
            if sweep.base not in self.experiments:
                raise ValueError(f"sweeps.{name}.base: unknown experiment {sweep.base!r}")
        for name, llm in self.llms.items():
            if llm.tokenizer is not None and llm.tokenizer.corpus not in self.datasets:
                raise ValueError(f"llms.{name}.tokenizer.corpus: unknown dataset {llm.tokenizer.corpus!r}")
            if llm.text_pretrain is not None and llm.text_pretrain.data not in self.datasets:
                raise ValueError(f"llms.{name}.text_pretrain.data: unknown dataset {llm.text_pretrain.data!r}")
        return self

    # ------------------------------------------------------------ views
    def experiment(self, name: str) -> Experiment:
        if name not in self.experiments:
            raise ConfigError(f"unknown experiment {name!r} (known: {sorted(self.experiments)})")
        return self.experiments[name]

    def stage_training(self, exp: str, stage: Literal["pretrain", "finetune"]) -> StageTraining:
        e = self.experiment(exp)
        base: StageTraining = getattr(self.training[e.training], stage)
        override = e.overrides.get(stage)
        return StageTraining.model_validate(merge(base.model_dump(), override)) if override else base

    def jepa_recipe(self, exp: str) -> JepaRecipe | None:
        """The experiment's JEPA recipe with its overrides (stage 1 only: stage 2 never reads it, paper-spec §8)."""
        e = self.experiment(exp)
        if e.jepa is None:
            return None
        base = self.jepa[e.jepa]
        override = e.overrides.get("jepa")
        return JepaRecipe.model_validate(merge(base.model_dump(), override)) if override else base

    def jepa_layer(self, exp: str) -> int:
        e = self.experiment(exp)
        return e.jepa_layer if e.jepa_layer is not None else self.llms[e.llm].jepa_layer


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` applied recursively (nested dicts merge, everything else replaces)."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = f"unknown key {str(e['loc'][-1])!r} (typo?)"
        msg = msg.removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}" if loc else f"  {msg}")
    return "params.yaml is invalid:\n" + "\n".join(lines)


def validate_params(raw: dict[str, Any]) -> Params:
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such params file (run from the project root or set JARVIS_ROOT)")
    with path.open() as fh:
        raw = yaml.safe_load(fh)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return validate_params(raw)


def load_raw(path: str | Path = "params.yaml") -> dict[str, Any]:
    with Path(path).open() as fh:
        return yaml.safe_load(fh)


def lookup(raw: dict[str, Any], dotted: str) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        node = node[part]
    return node
