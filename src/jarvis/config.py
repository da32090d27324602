"""The schema of ``params.yaml`` (house rule 5: schema first, unknown keys rejected with their name).

Every section is a frozen pydantic model with ``extra="forbid"``. Experiments reference named building blocks
(LLMs, towers, datasets, training recipes, JEPA recipes). Which params keys a stage reads is not listed here: the
stage resolver (jarvis.plan) records the keys it reads through a view over these models.

Loading (issue 9) fails before any work, naming the dotted key: duplicated YAML keys (:mod:`jarvis.yamlsafe`, the
loader of the CLI and the Snakefile alike), names outside :data:`SafeName` (they become paths, stage ids and command
arguments), non-finite numbers anywhere, booleans in numeric fields, and cross-field mistakes that would otherwise
surface only when a stage starts. A hub LM's depth bounds ``jepa_layer`` at every load once its config.json is
downloaded (:func:`check_downloaded`), and in JarvisForCausalLM before; a hub tower's grid (for ``min_keep``) is
known only to the model, and jarvis.masking checks it at the first batch.
"""

from __future__ import annotations

import math
import re
import typing
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from jarvis import yamlsafe

TemplateName = Literal["plain", "vicuna_v1", "qwen2", "mistral"]
JepaLossKind = Literal["cos", "smooth_l1"]  # the one list of JEPA losses; the schema and JarvisConfig check it
JEPA_LOSSES: tuple[str, ...] = get_args(JepaLossKind)
TrainableGroup = Literal["projector", "mask_token", "jepa_head", "llm", "vision", "target"]
BENCHMARKS = (
    *("cvbench_2d", "cvbench_3d", "mmvp", "blink", "mme", "mmstar", "pope", "gqa"),
    *("realworldqa", "vstar", "mmbench_en", "seed", "scienceqa", "ai2d", "textvqa", "chartqa", "ocrbench"),
)


class _KeyedError(ValueError):
    """A cross-field error raised inside a section's validator about one of its keys: ``key`` (dotted, relative to
    the section) is appended to the section's location, so the message names the full dotted key."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _takes_bool(annotation: Any) -> bool:
    """Whether a field's type admits a YAML boolean (``bool`` or ``Any`` anywhere in it)."""
    if annotation is bool or annotation is Any:
        return True
    return any(_takes_bool(a) for a in typing.get_args(annotation) if not isinstance(a, (int, str, float)))


class _Strict(BaseModel):
    # allow_inf_nan=False: `.inf` / `.nan` (and "inf" strings) are rejected wherever a float is taken (issue 9).
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data: Any) -> Any:
        """pydantic's lax mode reads ``true`` as 1 in an int/float/Literal field (and in [min, max] pairs): refuse
        it, naming the key, wherever the field's type has no ``bool`` in it."""
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                value = data.get(name)
                items = value if isinstance(value, (list, tuple)) else [value]
                if any(isinstance(v, bool) for v in items) and not _takes_bool(field.annotation):
                    raise _KeyedError(name, f"takes no true/false, got {value!r}")
        return data


class ConfigError(ValueError):
    """params.yaml failed validation; the message names the offending key."""


# ------------------------------------------------------------ names that reach paths and shell commands (issue 9)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*")
NAME_MAX = 64
# MLflow experiment groups used by the stages themselves (jarvis.stages: "components", "pipeline").
RESERVED_EXPERIMENTS = frozenset({"components", "pipeline"})


def _safe_name(value: str) -> str:
    """A building-block / experiment name: it becomes a directory, a stage id and a command argument, and a dotted
    params key (so no '.')."""
    if len(value) > NAME_MAX or not _NAME.fullmatch(value):
        raise ValueError(
            f"unsafe name {value!r}: names become paths, stage ids and command arguments; use 1-{NAME_MAX} letters,"
            " digits, '_' or '-', starting with a letter or digit"
        )
    return value


_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")


def _safe_relpath(value: str) -> str:
    """A file inside a downloaded snapshot (annotations, archives): relative, no '..', plain segments."""
    parts = value.split("/")
    if len(value) > 255 or not all(_SEGMENT.fullmatch(p) and ".." not in p for p in parts):
        raise ValueError(
            f"unsafe relative path {value!r}: '/'-separated segments of letters, digits, '_', '.', '+', '-'"
            " (each starting with a letter or digit, no '..')"
        )
    return value


_REPO_ID = re.compile(r"(?:[A-Za-z0-9][A-Za-z0-9_.-]*/)?[A-Za-z0-9][A-Za-z0-9_.-]*")
_REVISION = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./-]*")


def _repo_id(value: str) -> str:
    if len(value) > 96 or not _REPO_ID.fullmatch(value) or ".." in value or "--" in value:
        raise ValueError(f"invalid hub repo_id {value!r}: expected 'namespace/name' (letters, digits, '_', '.', '-')")
    return value


def _revision(value: str) -> str:
    if len(value) > 255 or not _REVISION.fullmatch(value) or ".." in value or value.endswith(("/", ".lock")):
        raise ValueError(f"invalid hub revision {value!r}: a branch, tag or commit sha")
    return value


SafeName = Annotated[str, AfterValidator(_safe_name)]
SafeRelPath = Annotated[str, AfterValidator(_safe_relpath)]
RepoId = Annotated[str, AfterValidator(_repo_id)]
Revision = Annotated[str, AfterValidator(_revision)]
TimmName = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,127}$")]


def _positive_ints(config: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Size keys of a from-config model must be positive integers (no bools, floats or strings)."""
    for key in keys:
        if key in config:
            value = config[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise _KeyedError(f"config.{key}", f"must be a positive integer, got {value!r}")


def _divisible(config: dict[str, Any], num: str, den: str) -> None:
    if isinstance(config.get(num), int) and isinstance(config.get(den), int) and config[num] % config[den]:
        raise _KeyedError(f"config.{num}", f"{config[num]} is not divisible by config.{den} = {config[den]}")


_LM_SIZES = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "max_position_embeddings", "head_dim")
# Set by the download stage from the trained tokenizer (jarvis.stages.download.download_llm): a value here would
# be passed twice to AutoConfig.for_model and fail only when the stage runs.
_LM_DERIVED = ("vocab_size", "pad_token_id", "bos_token_id", "eos_token_id", "tie_word_embeddings")
_TOWER_SIZES = ("image_size", "patch_size", "hidden_size", "intermediate_size", "num_hidden_layers",
                "num_attention_heads", "img_size", "depth", "embed_dim", "num_heads")


class HubRef(_Strict):
    repo_id: RepoId
    revision: Revision = "main"  # pin a commit sha for a real run


class TokenizerSpec(_Strict):
    vocab_size: int = Field(ge=32)
    corpus: SafeName  # name of a synthetic dataset whose texts train the tokenizer


TEXT_PRETRAIN_WARMUP_MIN = 20  # steps; see TextPretrain._schedule


class TextPretrain(_Strict):
    """Stage 0 for from-scratch LMs (benchmarks-spec §6): text-only instruction pretraining before stage 1."""

    data: SafeName  # a synthetic dataset whose instruct conversations are the text
    steps: int = Field(ge=0)
    batch_size: int = Field(ge=1)
    learning_rate: float = Field(gt=0)

    @model_validator(mode="after")
    def _schedule(self) -> TextPretrain:
        # OneCycleLR's warm-up ends at step 0.05 * steps - 1 (jarvis.stages.text_pretrain): 20 steps divide by
        # zero inside torch; fewer skip the warm-up silently (the first step already runs at ~ the peak rate).
        if 0 < self.steps <= TEXT_PRETRAIN_WARMUP_MIN:
            raise _KeyedError("steps", f"{self.steps}: stage 0's 5% warm-up needs more than "
                              f"{TEXT_PRETRAIN_WARMUP_MIN} steps (0 skips stage 0)")
        return self


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

    @model_validator(mode="after")
    def _depth(self) -> LLMSpec:
        """jepa_layer within the LM (1..num_hidden_layers) when the depth is in params (scratch LMs). A hub LM's
        depth is known only from its downloaded config: JarvisForCausalLM checks it when the model is built."""
        if self.config is None:
            return self
        _positive_ints(self.config, _LM_SIZES)
        _divisible(self.config, "hidden_size", "num_attention_heads")
        _divisible(self.config, "num_attention_heads", "num_key_value_heads")
        if self.init == "scratch":
            for key in _LM_DERIVED:
                if key in self.config:
                    raise _KeyedError(f"config.{key}", "is set from the trained tokenizer; remove it (vocabulary"
                                      " size: tokenizer.vocab_size)")
        depth = self.config.get("num_hidden_layers")
        if isinstance(depth, int) and self.jepa_layer > depth:
            raise _KeyedError("jepa_layer", f"{self.jepa_layer} is beyond the LM's depth: config.num_hidden_layers"
                              f" = {depth} (use 1..{depth})")
        return self


class TowerSpec(_Strict):
    library: Literal["transformers", "timm"]
    init: Literal["scratch", "hub"]
    config: dict[str, Any] | None = None  # transformers: config kwargs incl. model_type; timm: create_model kwargs
    name: TimmName | None = None  # timm model name
    hub: HubRef | None = None
    feature_layer: int = -1
    drop_prefix_tokens: int = Field(default=0, ge=0)
    image_size: int | None = Field(default=None, ge=1)  # override the input size (e.g. a target tower fed the context crop)

    @model_validator(mode="after")
    def _source(self) -> TowerSpec:
        if self.library == "timm" and not self.name:
            raise ValueError("library: timm needs `name`")
        if self.init == "scratch" and self.library == "transformers" and not (self.config or {}).get("model_type"):
            raise ValueError("library: transformers, init: scratch needs `config.model_type`")
        if self.init == "hub" and self.hub is None:
            raise ValueError("init: hub needs `hub: {repo_id, revision}`")
        return self

    @model_validator(mode="after")
    def _geometry(self) -> TowerSpec:
        """Patch grid and feature layer within the tower, when its config is in params (scratch towers)."""
        cfg = self.config or {}
        _positive_ints(cfg, _TOWER_SIZES)
        if self.library == "transformers":
            _divisible(cfg, "hidden_size", "num_attention_heads")
            size, patch = self.image_size or cfg.get("image_size"), cfg.get("patch_size")
            if isinstance(size, int) and isinstance(patch, int) and size % patch:
                key = "image_size" if self.image_size else "config.image_size"
                raise _KeyedError(key, f"{size} is not a multiple of config.patch_size = {patch}")
            depth = cfg.get("num_hidden_layers")
            # hidden_states has depth + 1 entries (embeddings first): valid indices are -(depth + 1) .. depth.
            if isinstance(depth, int) and not -(depth + 1) <= self.feature_layer <= depth:
                raise _KeyedError("feature_layer", f"{self.feature_layer} is outside the tower's hidden states: "
                                  f"config.num_hidden_layers = {depth} (use {-(depth + 1)}..{depth})")
        else:
            depth = cfg.get("depth")  # timm blocks: 1..depth or -depth..-1 (jarvis.model.vision)
            if isinstance(depth, int) and not (1 <= abs(self.feature_layer) <= depth):
                raise _KeyedError("feature_layer", f"{self.feature_layer} is outside the tower's {depth} blocks "
                                  f"(use 1..{depth} or -{depth}..-1)")
        return self

    def grid(self) -> tuple[int, int] | None:
        """The patch grid, when params say it (scratch transformers towers); None when only the hub config knows."""
        cfg = self.config or {}
        size, patch = self.image_size or cfg.get("image_size"), cfg.get("patch_size")
        if self.library != "transformers" or not isinstance(size, int) or not isinstance(patch, int):
            return None
        return (size // patch, size // patch)


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
    # Share of the supervised tokens that right-truncation at a stage's max_length may remove before the stage fails
    # (jarvis.data.dataset.TruncationLog); the per-sample counts go to metrics.json either way.
    max_truncated_fraction: float = Field(default=0.01, ge=0.0, le=1.0)


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
    repo_id: RepoId
    revision: Revision = "main"
    annotations: SafeRelPath
    archives: list[SafeRelPath] = []
    url_archives: dict[Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]+$")], UrlArchive] = {}


class HubData(_Strict):
    kind: Literal["hub"]
    feature_cache_dtype: CacheDtype = "bfloat16"
    pretrain: HubCorpus
    instruct: HubCorpus
    benchmarks: dict[SafeName, HubRef]  # benchmark data dir name (cvbench, mmvp, blink, ...) -> dataset repo
    max_dropped_fraction: float = Field(ge=0.0, le=1.0)
    max_truncated_fraction: float = Field(default=0.01, ge=0.0, le=1.0)  # as SyntheticData's


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
    trainable: list[TrainableGroup] = Field(min_length=1)
    image_mode: Literal["crop", "pad"]
    use_feature_cache: bool
    max_length: int = Field(ge=16)
    # LLaVA's modality-length grouping (stage 2 of the reference): each step one modality, similar lengths
    # (jarvis.data.sampler); false: the Trainer's random sampler
    group_by_modality_length: bool

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

    @model_validator(mode="after")
    def _limits(self) -> StageTraining:
        if self.max_steps == 0 or self.max_steps < -1:
            raise _KeyedError("max_steps", f"{self.max_steps}: use -1 (train `epochs`) or a positive step count")
        dup = sorted({g for g in self.trainable if self.trainable.count(g) > 1})
        if dup:
            raise _KeyedError("trainable", f"duplicated group(s) {dup}")
        if self.use_feature_cache and {"vision", "target"} & set(self.trainable):
            raise _KeyedError("use_feature_cache", "cached features come from frozen towers; it cannot be used with"
                              f" trainable towers ({sorted({'vision', 'target'} & set(self.trainable))})")
        return self


class StageResources(_Strict):
    runtime: int = Field(ge=1)  # minutes
    mem_mb: int = Field(ge=1)
    cpus: int = Field(ge=1)
    gpus: int = Field(default=0, ge=0)  # single-node stages
    gpus_per_node: int = Field(default=0, ge=0)  # training stages (nodes/nproc come from the stage settings)
    # Training stages: DataLoader worker processes per rank (load, collate, JEPA masks). Results do not depend on it:
    # a micro-batch's masks are keyed by its samples (jarvis.data.collate.JepaMaskCollator).
    dataloader_workers: int = Field(default=0, ge=0)


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
    """Multiblock mask hyper-parameters (jarvis.masking samples them; ``jepa.<name>.mask`` in params.yaml);
    defaults are the reference's (paper-spec §4). A JEPA recipe needs at least one target block (JepaRecipe)."""

    num_targets: int = Field(default=4, ge=0)
    target_scale: tuple[float, float] = (0.15, 0.2)
    context_scale: tuple[float, float] = (0.85, 1.0)
    aspect_ratio: tuple[float, float] = (0.75, 1.5)
    min_keep: int = Field(default=10, ge=0)
    targets_may_overlap: bool = True

    @model_validator(mode="after")
    def _ranges(self) -> MaskSpec:
        """Scales are fractions of the grid area in (0, 1]; every range is (min, max) with min <= max (I-JEPA)."""
        for key, upper in (("target_scale", 1.0), ("context_scale", 1.0), ("aspect_ratio", None)):
            lo, hi = getattr(self, key)
            if not 0 < lo <= hi or (upper is not None and hi > upper):
                bounds = "0 < min <= max <= 1 (fractions of the grid area)" if upper else "0 < min <= max"
                raise _KeyedError(key, f"{[lo, hi]} must satisfy {bounds}")
        return self


class JepaRecipe(_Strict):
    target: SafeName
    loss: JepaLossKind
    weight: float = Field(ge=0)
    skip_prob: float = Field(ge=0, le=1)
    head: Literal["linear", "mlp"]
    mask: MaskSpec

    @model_validator(mode="after")
    def _targets(self) -> JepaRecipe:
        if self.mask.num_targets < 1:  # the sampler allows 0; a JEPA recipe without target blocks has no JEPA loss
            raise _KeyedError("mask.num_targets", f"{self.mask.num_targets}: a JEPA recipe needs at least 1 target")
        return self


class TrainSettings(StageTraining):
    """One training stage as jarvis.training runs it: the stage's validated recipe (every field declared once, by
    :class:`StageTraining`, and validated by it) plus the run it belongs to. jarvis.plan builds it once per stage
    plan (``TrainSpec.train``); nothing copies its fields.

    ``mask_spec`` is None for a stage without JEPA (LLaVA arms, and stage 2 always: the resolver decides, paper-spec
    §8). Non-finite floats are allowed here, unlike in params.yaml (which rejects them before a settings object
    exists): the training engine's divergence guard is tested with them.
    """

    model_config = ConfigDict(allow_inf_nan=True)

    stage: Literal["pretrain", "finetune"]  # part of every seed (skip coin, masks)
    seed: int  # the run's seed (run.seeds)
    jepa_skip_prob: float = Field(default=0.0, ge=0, le=1)  # P(micro-step is NTP-only), paper-spec §7
    mask_spec: MaskSpec | None = None
    # engine constants, not params: scratch checkpoints kept in the work dir; DataLoader workers (the stage's
    # resources.dataloader_workers: a scheduler setting, no result depends on it)
    save_total_limit: int = Field(default=2, ge=1)
    num_workers: int = Field(default=0, ge=0)

    @classmethod
    def of(cls, recipe: StageTraining, stage: Literal["pretrain", "finetune"], seed: int,
           jepa: JepaRecipe | None, num_workers: int = 0) -> TrainSettings:
        """The recipe as it is, with the run's stage and seed and the stage's JEPA recipe (None: no JEPA)."""
        run: dict[str, Any] = {"stage": stage, "seed": seed, "num_workers": num_workers}
        if jepa is not None:
            run.update(jepa_skip_prob=jepa.skip_prob, mask_spec=jepa.mask)
        return cls.model_validate({**dict(recipe), **run})

    @property
    def jepa_enabled(self) -> bool:
        return self.mask_spec is not None


class Evaluation(_Strict):
    mode: Literal["fixed", "compat"]
    batch_size: int = Field(ge=1)
    # Per-benchmark decoding length overrides; unset benchmarks use the reference's (jarvis.eval.decoding).
    max_new_tokens: dict[Literal[BENCHMARKS], Annotated[int, Field(ge=1)]] = {}  # type: ignore[valid-type]
    limit: int | None = Field(default=None, ge=1)
    # Also answer every question with a blank image (the tower's mean colour): the blind control of issue 12.
    blind: bool


class Experiment(_Strict):
    paper_ref: str
    llm: SafeName
    vision: SafeName
    projector: Literal["linear", "mlp"]
    bidir_visual_attn: bool
    jepa: SafeName | None
    data: SafeName
    training: SafeName
    baselines: list[SafeName] = []
    jepa_layer: int | None = Field(default=None, ge=1)  # None: the LLM's default read-out layer
    # Per-experiment changes to its training recipe or JEPA recipe, e.g. {pretrain: {learning_rate: 2.0e-3}} or
    # {jepa: {skip_prob: 0.5, mask: {num_targets: 2}}}; validated against the recipe schema. Declared as part of
    # `experiments.<name>`, so an edit reruns only this experiment.
    overrides: dict[Literal["pretrain", "finetune", "jepa"], dict[str, Any]] = {}


class Sweep(_Strict):
    """Variants of one base experiment: values of experiment keys (jarvis.sweeps), as a grid (every combination)
    or zipped lists (the i-th values together). Each variant is a full experiment, validated by the same schema;
    its id is ``<base>--<key>-<value>[--...]``."""

    base: SafeName
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
    # The MLflow experiment holding every run of this selection: arms, seeds, sweep variants and shared stages.
    study: SafeName = "jarvis"
    experiments: list[SafeName] = Field(min_length=1)
    # every training/evaluation stage runs once per seed; >= 0: the report pairs runs by the `__s<digits>` suffix
    seeds: list[Annotated[int, Field(ge=0)]] = Field(min_length=1)
    sweeps: list[SafeName] = []  # names in `sweeps`; their variants run too (x seeds)
    # at least one: a run without benchmarks trains everything and only then fails (an empty report)
    benchmarks: list[Literal[BENCHMARKS]] = Field(min_length=1)  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _unique(self) -> RunSelection:
        for key in ("experiments", "benchmarks"):
            values = getattr(self, key)
            dup = sorted({v for v in values if values.count(v) > 1})
            if dup:
                raise _KeyedError(key, f"listed more than once: {dup}")
        return self


class Params(_Strict):
    seed: int  # shared building blocks only (scratch LM/tower init, stage 0); runs take theirs from run.seeds
    run: RunSelection
    llms: dict[SafeName, LLMSpec]
    towers: dict[SafeName, TowerSpec]
    datasets: dict[SafeName, DatasetSpec]
    training: dict[SafeName, TrainingRecipe]
    jepa: dict[SafeName, JepaRecipe]
    evaluation: Evaluation
    experiments: dict[SafeName, Experiment]
    sweeps: dict[SafeName, Sweep] = {}

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

    @model_validator(mode="after")
    def _cross_checks(self) -> Params:
        """Checks across sections that would otherwise fail only when a stage starts (issue 9)."""
        for table in ("llms", "towers", "datasets", "training", "jepa", "experiments"):
            folded: dict[str, str] = {}
            for name in getattr(self, table):
                other = folded.setdefault(name.lower(), name)
                if other != name:  # one directory on case-insensitive file systems (macOS, Windows)
                    raise ValueError(f"{table}.{name}: differs from {table}.{other} only in case")
        for name in self.experiments:
            if name in RESERVED_EXPERIMENTS:
                raise ValueError(f"experiments.{name}: the name is reserved for the stages' own MLflow runs")
        for name, llm in self.llms.items():
            if llm.tokenizer is not None and not isinstance(self.datasets[llm.tokenizer.corpus], SyntheticData):
                raise ValueError(f"llms.{name}.tokenizer.corpus: {llm.tokenizer.corpus!r} is not a synthetic dataset")
        caches: dict[str, tuple[str, str, str | None]] = {}
        for name, exp in self.experiments.items():
            if name in exp.baselines:
                raise ValueError(f"experiments.{name}.baselines: an experiment cannot be its own baseline")
            dup = sorted({b for b in exp.baselines if exp.baselines.count(b) > 1})
            if dup:
                raise ValueError(f"experiments.{name}.baselines: listed more than once: {dup}")
            recipe = self.jepa_recipe(name)  # with the experiment's overrides
            combo = (exp.data, exp.vision, recipe.target if recipe else None)
            if self.stage_training(name, "pretrain").use_feature_cache:
                from jarvis.paths import cache_key

                key = cache_key(*combo)
                if caches.setdefault(key, combo) != combo:  # '-' inside names can make two combos one directory
                    raise ValueError(f"experiments.{name}: its feature cache {key!r} would be shared with the "
                                     f"different (data, vision, target) {caches[key]}; rename a building block")
            if recipe is not None:
                self._check_mask(name, exp.jepa, recipe)
        for name in self.run.experiments:
            data = self.datasets[self.experiments[name].data]
            if isinstance(data, HubData):
                for bench in self.run.benchmarks:
                    sub = "cvbench" if bench.startswith("cvbench") else bench  # jarvis.stages.evaluate layout
                    if sub not in data.benchmarks:
                        raise ValueError(f"datasets.{self.experiments[name].data}.benchmarks: no {sub!r} entry, "
                                         f"needed by run.benchmarks {bench!r} (experiment {name})")
        return self

    def _check_mask(self, exp: str, recipe_name: str | None, recipe: JepaRecipe) -> None:
        """min_keep feasible on the context tower's grid (when params give the grid), with the sampler's own rule."""
        grid = self.towers[self.experiments[exp].vision].grid()
        if grid is None:
            return  # hub tower: jarvis.masking checks at the first batch
        from jarvis.mask_geometry import check_spec

        m = recipe.mask
        key = f"jepa.{recipe_name}.mask"
        if min(grid) < 2:
            raise ValueError(f"{key}: the grid {grid} of towers.{self.experiments[exp].vision} is below 2x2")
        try:
            check_spec(grid, m)
        except ValueError as err:
            raise ValueError(f"{key}.min_keep: {err} (experiment {exp})") from None

    # ------------------------------------------------------------ views
    def experiment(self, name: str) -> Experiment:
        if name not in self.experiments:
            raise ConfigError(f"unknown experiment {name!r} (known: {sorted(self.experiments)})")
        return self.experiments[name]

    def stage_training(self, exp: str, stage: Literal["pretrain", "finetune"]) -> StageTraining:
        e = self.experiment(exp)
        return with_override(getattr(self.training[e.training], stage), e.overrides.get(stage))

    def jepa_recipe(self, exp: str) -> JepaRecipe | None:
        """The experiment's JEPA recipe with its overrides (stage 1 only: stage 2 never reads it, paper-spec §8)."""
        e = self.experiment(exp)
        if e.jepa is None:
            return None
        return with_override(self.jepa[e.jepa], e.overrides.get("jepa"))

    def arm_summary(self, exp: str) -> dict[str, Any]:
        """The experiment as resolved (recipe, overrides, read-out layer), keyed without its name: what MLflow logs
        as ``arm.*`` so that the compare view of two arms diffs their settings, not their names."""
        e = self.experiment(exp)
        jepa = self.jepa_recipe(exp)
        out: dict[str, Any] = {
            "llm": e.llm, "vision": e.vision, "projector": e.projector, "bidir_visual_attn": e.bidir_visual_attn,
            "data": e.data, "training": e.training, "target": jepa.target if jepa else "none",
            # An arm without JEPA logs the same keys, each "none": MLflow's compare view then plots "none" for it
            # (a key missing from a run plots as "unknown" in its parallel coordinates and diffs as a separate row).
            "jepa": {**jepa.model_dump(mode="json"), "layer": self.jepa_layer(exp)} if jepa
            else {**_none_like(JepaRecipe), "layer": "none"},
        }
        for stage in ("pretrain", "finetune"):
            out[stage] = self.stage_training(exp, stage).model_dump(mode="json")
        return out

    def jepa_layer(self, exp: str) -> int:
        e = self.experiment(exp)
        return e.jepa_layer if e.jepa_layer is not None else self.llms[e.llm].jepa_layer


def _none_like(model: type[BaseModel]) -> dict[str, Any]:
    """The field tree of ``model`` with every leaf "none" (nested models recurse)."""
    out: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        kind = field.annotation
        out[name] = _none_like(kind) if isinstance(kind, type) and issubclass(kind, BaseModel) else "none"
    return out


def merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``override`` applied recursively (nested dicts merge, everything else replaces)."""
    out = dict(base)
    for k, v in override.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


_M = typing.TypeVar("_M", bound=BaseModel)


def with_override(base: _M, override: dict[str, Any] | None) -> _M:
    """A building block with an experiment's ``overrides.<block>`` applied and validated by the block's own schema
    (the one place overrides are applied: Params' lookups and jarvis.plan's resolver both use it)."""
    return type(base).model_validate(merge(base.model_dump(), override)) if override else base


def _format_error(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        parts = [str(p) for p in e["loc"] if not str(p).startswith(("function-after", "function-before"))]
        if parts[-1:] == ["[key]"]:  # a bad dict key: name the table, the message names the key itself
            parts = parts[:-2]
        loc = ".".join(parts)
        cause = (e.get("ctx") or {}).get("error")
        if isinstance(cause, _KeyedError):
            loc = f"{loc}.{cause.key}" if loc else cause.key
        if e["type"] == "finite_number":
            e["msg"] = f"{e['msg']}, got {e['input']!r}"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = f"unknown key {str(e['loc'][-1])!r} (typo?)"
        msg = msg.removeprefix("Value error, ")
        if e["loc"][-1:] == ("[key]",) and str(e.get("input")) not in msg:  # e.g. a Literal key: name the key given
            msg = f"{msg}, got key {e['input']!r}"
        lines.append(f"  {loc}: {msg}" if loc else f"  {msg}")
    return "params.yaml is invalid:\n" + "\n".join(lines)


def _non_finite(node: Any, key: str = "") -> str | None:
    """The dotted key of the first .inf / .nan anywhere in the document (also inside free-form `config` dicts)."""
    if isinstance(node, float) and not math.isfinite(node):
        return key
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in items:
        found = _non_finite(v, f"{key}.{k}" if key else str(k))
        if found is not None:
            return found
    return None


def validate_params(raw: dict[str, Any]) -> Params:
    bad = _non_finite(raw)
    if bad is not None:
        raise ConfigError(f"params.yaml is invalid:\n  {bad}: not a finite number (.inf / .nan are refused)")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(_format_error(err)) from None


def read_yaml(path: str | Path) -> Any:
    """Parse a params file the way every entry point must: duplicated keys are an error naming key and lines."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such params file (run from the project root or set JARVIS_ROOT)")
    try:
        with path.open() as fh:
            return yamlsafe.load(fh)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: {err}") from None


def load_params(path: str | Path = "params.yaml") -> Params:
    path = Path(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    params = validate_params(raw)
    check_downloaded(params, path.parent)
    return params


def check_downloaded(params: Params, root: str | Path = ".") -> None:
    """Checks that need a downloaded component's config, run at every load once it is on disk: a hub LM's depth
    (its config.json) bounds the read-out layer of every JEPA experiment that will run on it (``run.experiments``
    and the variants of ``run.sweeps``): the experiment's ``jepa_layer``, else the LM's. Experiments that are not
    selected, and arms without JEPA, read no layer, so an LM entry's default never fails a run that does not use it
    (the rehearsal's 4-layer stand-in for Vicuna-7B beside ``llms.vicuna7b.jepa_layer: 8``). Before the download,
    JarvisForCausalLM checks it when building."""
    import json

    from jarvis import paths

    depths: dict[str, int] = {}
    for name, llm in params.llms.items():
        cfg = Path(root) / paths.llm_dir(name) / "config.json"
        if llm.init != "hub" or not cfg.is_file():
            continue
        try:
            depth = json.loads(cfg.read_text()).get("num_hidden_layers")
        except (OSError, ValueError, AttributeError):
            continue  # an unreadable download is the download/train stage's to report
        if isinstance(depth, int) and not isinstance(depth, bool):
            depths[name] = depth
    if not depths:
        return
    running, source = list(params.run.experiments), params
    if params.run.sweeps:
        from jarvis.sweeps import expand

        source, found = expand(params)
        running += [v for v, var in found.items() if var.sweep in params.run.sweeps]
    for exp in running:
        e = source.experiments[exp]
        if e.jepa is None or e.llm not in depths:
            continue
        layer = source.jepa_layer(exp)
        key = f"experiments.{exp}.jepa_layer" if e.jepa_layer is not None else f"llms.{e.llm}.jepa_layer"
        depth = depths[e.llm]
        if layer > depth:
            raise ConfigError(f"params.yaml is invalid:\n  {key}: {layer} is beyond the LM's depth: num_hidden_layers"
                              f" = {depth} in {paths.llm_dir(e.llm) / 'config.json'} (use 1..{depth}; experiment"
                              f" {exp})")


def load_raw(path: str | Path = "params.yaml") -> dict[str, Any]:
    return read_yaml(path)


def reject_runner_config(config: dict[str, Any], runner: str = "snakemake") -> None:
    """``snakemake --config k=v`` / ``--configfile`` would change the DAG but not what the stages read (they read
    params.yaml): refuse it, naming the keys, instead of ignoring it silently."""
    if config:
        keys = ", ".join(sorted(map(str, config)))
        raise ConfigError(
            f"{runner} --config/--configfile is not applied ({keys}): params.yaml is the only knob, and every stage"
            " reads it. Edit params.yaml, or use `dvc exp run -S <dotted.key>=<value>` for a one-off change."
        )


def lookup(raw: dict[str, Any], dotted: str) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        node = node[part]
    return node
