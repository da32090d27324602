"""The model recipe: what `JarvisForCausalLM.from_components` is built from, resolved once from params.yaml.

It lives next to the model (not in a stage) so the download, cache, train and evaluate stages share one
definition of "how a tower entry of params.yaml becomes VisionTower options" without importing each other. Data only:
it imports no model code, so resolving a plan (which every stage does) does not make every stage depend on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jarvis.config import TowerSpec


def tower_spec(spec: TowerSpec) -> dict[str, Any]:
    """params.yaml tower entry -> the spec dict of jarvis.model.vision.VisionTower (built from scratch)."""
    out: dict[str, Any] = {"library": spec.library, "feature_layer": spec.feature_layer,
                           "drop_prefix_tokens": spec.drop_prefix_tokens}
    if spec.image_size is not None:
        out["image_size"] = spec.image_size
    if spec.library == "timm":
        out.update(name=spec.name, kwargs=dict(spec.config or {}))
    else:
        out["config"] = dict(spec.config or {})
    return out


def tower_selection(spec: TowerSpec) -> dict[str, Any]:
    """The feature-selection keys applied when loading a downloaded tower directory."""
    sel: dict[str, Any] = {"feature_layer": spec.feature_layer, "drop_prefix_tokens": spec.drop_prefix_tokens}
    if spec.image_size is not None:
        sel["image_size"] = spec.image_size
    return sel


@dataclass(frozen=True)
class TowerRecipe:
    name: str
    dir: Path
    options: tuple[tuple[str, Any], ...]  # tower_selection(...) as sorted pairs (frozen)

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.options)


def tower_recipe(name: str, spec: TowerSpec, directory: Path) -> TowerRecipe:
    return TowerRecipe(name=name, dir=directory, options=tuple(sorted(tower_selection(spec).items())))


@dataclass(frozen=True)
class JepaHead:
    layer: int  # 1-indexed hidden_states index (paper-spec §2)
    head: str
    loss: str
    weight: float


@dataclass(frozen=True)
class ModelRecipe:
    """LM, context tower, target tower, projector and JEPA head of one experiment's stage-1 model."""

    llm: str
    llm_dir: Path
    vision: TowerRecipe
    target: TowerRecipe | None
    projector: str
    bidir_visual_attn: bool
    jepa: JepaHead | None
