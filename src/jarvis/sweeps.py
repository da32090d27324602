"""Ablation sweeps: variants of a base experiment declared in ``params.yaml`` under ``sweeps``.

A sweep key names an experiment knob (:data:`SWEEP_KEYS`); each variant is the base experiment with those knobs set,
added to ``experiments`` and validated by the same schema as every hand-written experiment, so a value the schema
rejects is an error naming the sweep, the variant and the key. Variant ids are ``<base>--<key>-<value>[--...]``
with values spelled in ``[A-Za-z0-9_]`` (``0.5`` -> ``0p5``, ``-1`` -> ``m1``): safe as a path component, a DVC
stage name and a shell word.
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass
from typing import Any

from jarvis.config import ConfigError, JepaRecipe, MaskSpec, Params, StageTraining, validate_params

SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_WORD = re.compile(r"^[A-Za-z0-9_]+$")
# Experiment fields a sweep may set directly (the others name building blocks or bookkeeping).
_DIRECT = ("llm", "vision", "projector", "bidir_visual_attn", "data", "training")


def experiment_path(key: str) -> tuple[str, ...]:
    """A sweep key -> the path it sets inside an experiment entry; ConfigError for an unknown key."""
    parts = tuple(key.split("."))
    if key == "jepa.layer":
        return ("jepa_layer",)
    if key in _DIRECT:
        return parts
    if parts[0] == "jepa" and len(parts) == 2 and parts[1] in JepaRecipe.model_fields and parts[1] != "mask":
        return ("overrides", *parts)
    if parts[:2] == ("jepa", "mask") and len(parts) == 3 and parts[2] in MaskSpec.model_fields:
        return ("overrides", *parts)
    if parts[0] in ("pretrain", "finetune") and len(parts) == 2 and parts[1] in StageTraining.model_fields:
        return ("overrides", *parts)
    known = ["jepa.layer", *_DIRECT, *(f"jepa.{f}" for f in JepaRecipe.model_fields if f != "mask"),
             *(f"jepa.mask.{f}" for f in MaskSpec.model_fields), "pretrain.<training key>",
             "finetune.<training key>"]
    raise ConfigError(f"unknown sweep key {key!r} (known: {', '.join(known)})")


def spell(value: Any) -> str:
    """A value as an id word: 0.5 -> 0p5, -1 -> m1, [0.1, 0.2] -> 0p1_0p2, True -> true."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return repr(value).replace("-", "m").replace(".", "p").replace("+", "")
    if isinstance(value, (list, tuple)):
        return "_".join(spell(v) for v in value)
    if isinstance(value, str) and _WORD.match(value):
        return value
    raise ConfigError(f"sweep value {value!r} cannot be spelled as an id (use letters, digits, _)")


def key_word(key: str) -> str:
    return key.removeprefix("jepa.").replace(".", "_") if key != "jepa.layer" else "layer"


@dataclass(frozen=True)
class Variant:
    name: str
    sweep: str
    base: str
    assignments: tuple[tuple[str, Any], ...]  # (sweep key, value)

    @property
    def paths(self) -> tuple[tuple[str, ...], ...]:
        return tuple(experiment_path(k) for k, _ in self.assignments)

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.assignments)


def _combinations(values: dict[str, list[Any]], mode: str) -> list[tuple[tuple[str, Any], ...]]:
    keys = list(values)
    rows = itertools.product(*values.values()) if mode == "grid" else zip(*values.values(), strict=True)
    return [tuple(zip(keys, row, strict=True)) for row in rows]


def _set(entry: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    node = entry
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


def variants(params: Params) -> dict[str, Variant]:
    """Every declared sweep's variants (selected or not), by variant name, in declaration order."""
    out: dict[str, Variant] = {}
    for sweep_name, sweep in params.sweeps.items():
        for key in sweep.values:
            experiment_path(key)
        for combo in _combinations(sweep.values, sweep.mode):
            name = sweep.base + "".join(f"--{key_word(k)}-{spell(v)}" for k, v in combo)
            if not SAFE_ID.match(name):
                raise ConfigError(f"sweeps.{sweep_name}: variant id {name!r} is not a safe name")
            if name in out or name in params.experiments:
                raise ConfigError(f"sweeps.{sweep_name}: variant {name!r} is declared twice")
            out[name] = Variant(name, sweep_name, sweep.base, combo)
    return out


def expand(params: Params) -> tuple[Params, dict[str, Variant]]:
    """``params`` with every sweep variant added to ``experiments`` (validated), and the variants."""
    found = variants(params)
    if not found:
        return params, {}
    raw = params.model_dump(mode="json")
    for v in found.values():
        entry = copy.deepcopy(raw["experiments"][v.base])
        for (_key, value), path in zip(v.assignments, v.paths, strict=True):
            _set(entry, path, value)
        entry["paper_ref"] = f"{entry['paper_ref']} [sweep {v.sweep}: {v.label}]"
        try:
            validate_params({**raw, "experiments": {**raw["experiments"], v.name: entry}})
        except ConfigError as err:
            raise ConfigError(f"sweeps.{v.sweep}: variant {v.name} ({v.label}) is invalid: {err}") from None
        raw["experiments"][v.name] = entry
    return validate_params(raw), found
