"""The schema of ``params.yaml`` (house rule 5: schema first, unknown keys rejected with their name).

Every section is a frozen pydantic model with ``extra="forbid"``. Experiments reference named building blocks
(LLMs, towers, datasets, training recipes, JEPA recipes); :func:`experiment_refs` returns the dotted params keys an
experiment's stages read, which is what the DAG declares as DVC params / Snakemake ``params:`` (house rule 6).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

TemplateName = Literal["plain", "vicuna_v1", "qwen2", "mistral"]
TrainableGroup = Literal["projector", "mask_token", "jepa_head", "llm", "vision", "target"]
BENCHMARKS = ("cvbench_2d", "cvbench_3d", "mmvp", "blink", "mme", "mmstar", "pope", "gqa")


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


_RELPATH = r"^[A-Za-z0-9_.\-/]*$"  # these names reach paths: plain characters, and relative without `..` below
Checksum = Annotated[str, StringConstraints(pattern=r"^(sha256:[0-9a-f]{64}|md5:[0-9a-f]{32})$")]


class UrlArchive(_Strict):
    """An image archive fetched over HTTP(S) (the stage-2 sources are not on one hub repo; jarvis.fetch)."""

    url: str = Field(pattern=r"^https?://[^\s]+$")
    # Required key. The published checksum ("sha256:<hex>" or "md5:<hex>"), or null where none is published:
    # then `jarvis download --pin-checksums` trusts the first download and records its sha256 in hub.lock.yaml.
    checksum: Checksum | None
    # Folder inside the archive that holds the images ("" = the archive root, "*" = its single top-level folder).
    root: str = Field(default="", pattern=r"^(\*|[A-Za-z0-9_.\-/]*)$")
    dest: str = Field(min_length=1, pattern=_RELPATH)  # where the annotations expect them, e.g. coco/train2017

    @field_validator("root", "dest")
    @classmethod
    def _relative(cls, value: str) -> str:
        if value.startswith("/") or ".." in value.split("/"):
            raise ValueError(f"{value!r} must be a relative path without '..'")
        return value.strip("/")


class HubCorpus(_Strict):
    repo_id: str
    revision: str = "main"
    annotations: str
    archives: list[str] = []
    url_archives: dict[Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]+$")], UrlArchive] = {}


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


class MaskParams(_Strict):
    num_targets: int = Field(ge=0)
    target_scale: tuple[float, float]
    context_scale: tuple[float, float]
    aspect_ratio: tuple[float, float]
    min_keep: int = Field(ge=0)
    targets_may_overlap: bool = True


class JepaRecipe(_Strict):
    target: str
    loss: Literal["cos", "smooth_l1"]
    weight: float = Field(ge=0)
    skip_prob: float = Field(ge=0, le=1)
    head: Literal["linear", "mlp"]
    mask: MaskParams


class Evaluation(_Strict):
    mode: Literal["fixed", "compat"]
    batch_size: int = Field(ge=1)
    max_new_tokens: int = Field(ge=1)
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
    # Per-experiment changes to its training recipe, e.g. {pretrain: {learning_rate: 2.0e-3}}; validated against
    # the recipe schema. Declared as part of `experiments.<name>`, so an edit reruns only this experiment.
    overrides: dict[Literal["pretrain", "finetune"], dict[str, Any]] = {}


class RunSelection(_Strict):
    experiments: list[str] = Field(min_length=1)
    benchmarks: list[Literal[BENCHMARKS]]  # type: ignore[valid-type]


class Params(_Strict):
    seed: int
    run: RunSelection
    llms: dict[str, LLMSpec]
    towers: dict[str, TowerSpec]
    datasets: dict[str, DatasetSpec]
    training: dict[str, TrainingRecipe]
    jepa: dict[str, JepaRecipe]
    evaluation: Evaluation
    experiments: dict[str, Experiment]

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
            for stage, override in exp.overrides.items():
                base = getattr(self.training[exp.training], stage).model_dump()
                try:
                    StageTraining.model_validate({**base, **override})
                except ValidationError as err:
                    raise ValueError(
                        _format_error(err).replace("params.yaml is invalid:\n  ", f"experiments.{name}.overrides.{stage}.")
                    ) from None
            if exp.jepa is not None and not exp.bidir_visual_attn:
                raise ValueError(f"experiments.{name}: JEPA needs bidir_visual_attn: true (paper-spec §6)")
        for name, recipe in self.jepa.items():
            if recipe.target not in self.towers:
                raise ValueError(f"jepa.{name}.target: unknown tower {recipe.target!r}")
        for name in self.run.experiments:
            if name not in self.experiments:
                raise ValueError(f"run.experiments: unknown experiment {name!r} (known: {sorted(self.experiments)})")
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
        return StageTraining.model_validate({**base.model_dump(), **override}) if override else base

    def jepa_recipe(self, exp: str) -> JepaRecipe | None:
        ref = self.experiment(exp).jepa
        return None if ref is None else self.jepa[ref]


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


# ------------------------------------------------------------ declared params (the DAG's params closure)
def component_refs(params: Params, kind: str, name: str) -> list[str]:
    """Dotted params keys read when materialising one building block (download stage)."""
    if kind == "llm":
        llm = params.llms[name]
        keys = [f"llms.{name}"]
        for data in {llm.tokenizer.corpus if llm.tokenizer else None, llm.text_pretrain.data if llm.text_pretrain else None}:
            if data is not None:
                keys.append(f"datasets.{data}")
        return sorted(set(keys), key=keys.index)
    if kind == "tower":
        return [f"towers.{name}"]
    if kind == "data":
        return [f"datasets.{name}"]
    raise ValueError(kind)


def experiment_refs(params: Params, exp: str, stage: str) -> list[str]:
    """Dotted params keys a stage of ``exp`` reads — its exact DVC ``params:`` list."""
    e = params.experiment(exp)
    recipe = params.jepa_recipe(exp)
    keys = ["seed", f"experiments.{exp}", f"llms.{e.llm}", f"towers.{e.vision}", f"datasets.{e.data}"]
    if stage == "cache_features":  # stage-1 images, always resize + centre-crop (paper-spec §3)
        keys = [f"towers.{e.vision}", f"datasets.{e.data}"]
        if recipe is not None:
            keys.append(f"towers.{recipe.target}")
        return keys
    if stage == "pretrain":
        keys.append(f"training.{e.training}.pretrain")
        if recipe is not None:
            keys += [f"jepa.{e.jepa}", f"towers.{recipe.target}"]
    elif stage == "finetune":
        keys += [f"training.{e.training}.finetune"]
    elif stage == "evaluate":
        keys = [f"experiments.{exp}.llm", f"llms.{e.llm}.chat_template", f"datasets.{e.data}", "evaluation"]
    else:
        raise ValueError(f"unknown stage {stage!r}")
    return keys


def lookup(raw: dict[str, Any], dotted: str) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        node = node[part]
    return node
