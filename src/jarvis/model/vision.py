"""Vision towers (context encoder F_c and target encoder F_t) over timm or transformers models.

A tower is described by a plain, JSON-serialisable spec dict, stored in ``JarvisConfig`` so that
``JarvisForCausalLM(config)`` rebuilds it offline with random init:

    {"library": "timm", "name": "vit_tiny_patch16_224", "kwargs": {...},           # timm.create_model
     "feature_layer": -1, "drop_prefix_tokens": 1, "image_size": 32, "image_mean": [...], "image_std": [...]}
    {"library": "transformers", "config": {"model_type": "dinov2", ...}, ...same selection keys...}

Feature selection follows the reference (aimagelab/JARVIS ``src/models/mllm/modeling_mllm.py``
``visual_model_forward`` and ``modeling_mllm_jepa.py`` L104–109): ``feature_layer == -1`` is the
tower's final output (transformers ``last_hidden_state``, e.g. after DINOv2's final LayerNorm; timm
``forward_features``), any other value indexes ``hidden_states`` (0 = embeddings, -2 = penultimate).
``drop_prefix_tokens`` removes CLS/register tokens; the tower checks that what remains is exactly
the patch grid, which catches the reference's SigLIP bug (paper-spec §11.2).
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from torch import nn

from jarvis.io import save_safetensors_atomic, write_bytes_atomic

_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]
_IMAGENET_MEAN = [0.485, 0.456, 0.406]
_IMAGENET_STD = [0.229, 0.224, 0.225]
_HALF = [0.5, 0.5, 0.5]
# Prefix tokens (CLS + registers) and normalisation of the transformers towers we support.
_HF_DEFAULTS: dict[str, tuple[list[float], list[float]]] = {
    "clip_vision_model": (_CLIP_MEAN, _CLIP_STD),
    "siglip_vision_model": (_HALF, _HALF),
    "siglip2_vision_model": (_HALF, _HALF),
    "dinov2": (_IMAGENET_MEAN, _IMAGENET_STD),
    "dinov2_with_registers": (_IMAGENET_MEAN, _IMAGENET_STD),
    "ijepa": (_IMAGENET_MEAN, _IMAGENET_STD),
    "vit": (_HALF, _HALF),
}
_SELECTION_KEYS = ("feature_layer", "drop_prefix_tokens", "image_size", "image_mean", "image_std")


def _build_timm(spec: dict[str, Any]) -> nn.Module:
    import timm

    kwargs = dict(spec.get("kwargs") or {})
    kwargs.setdefault("num_classes", 0)  # no classifier head: we only read tokens
    return timm.create_model(spec["name"], pretrained=False, **kwargs)


def _build_hf(spec: dict[str, Any]) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    cfg = dict(spec["config"])
    if "model_type" not in cfg:
        raise ValueError("a transformers tower spec needs config['model_type'] (e.g. 'clip_vision_model')")
    hf_config = AutoConfig.for_model(cfg.pop("model_type"), **cfg)
    return AutoModel.from_config(hf_config)


class VisionTower(nn.Module):
    """Frozen-by-default image encoder returning patch tokens (B, N, Dv) at the configured layer."""

    def __init__(self, spec: dict[str, Any], model: nn.Module | None = None) -> None:
        super().__init__()
        library = spec.get("library")
        if library not in ("timm", "transformers"):
            raise ValueError(f"vision tower spec needs library 'timm' or 'transformers', got {library!r}")
        self.library: str = library
        if model is None:
            model = _build_timm(spec) if library == "timm" else _build_hf(spec)
        self.model = model
        self.spec = self._complete_spec(spec)
        self.feature_layer: int = int(self.spec["feature_layer"])
        self.drop_prefix_tokens: int = int(self.spec["drop_prefix_tokens"])
        self.image_size: int = int(self.spec["image_size"])
        self.grid: tuple[int, int] = (self.image_size // self._patch_size(),) * 2
        self.num_patches: int = self.grid[0] * self.grid[1]
        self.hidden_size: int = self._hidden_size()
        self.image_mean: list[float] = list(self.spec["image_mean"])
        self.image_std: list[float] = list(self.spec["image_std"])
        self._interpolate = self.library == "transformers" and self._needs_interpolation()

    # ---- spec completion -------------------------------------------------------------------
    def _complete_spec(self, spec: dict[str, Any]) -> dict[str, Any]:
        """Fill inferred defaults so the stored spec is explicit and rebuilds the same tower."""
        out = dict(spec)
        out.setdefault("feature_layer", -1)
        if self.library == "timm":
            out["kwargs"] = {"num_classes": 0, **(spec.get("kwargs") or {})}
            cfg = self.model.pretrained_cfg
            mean, std = list(cfg.get("mean", _IMAGENET_MEAN)), list(cfg.get("std", _IMAGENET_STD))
            prefix = int(getattr(self.model, "num_prefix_tokens", 0))
            size = int(self.model.patch_embed.img_size[0])
        else:
            out["config"] = self.model.config.to_dict()
            mt = self.model.config.model_type
            mean, std = _HF_DEFAULTS.get(mt, (_IMAGENET_MEAN, _IMAGENET_STD))
            prefix = self._hf_prefix_tokens()
            size = int(self.model.config.image_size)
        if out.get("drop_prefix_tokens") is None:
            out["drop_prefix_tokens"] = prefix
        if out.get("image_size") is None:
            out["image_size"] = size
        out["image_mean"] = list(out.get("image_mean") or mean)
        out["image_std"] = list(out.get("image_std") or std)
        return out

    def _hf_prefix_tokens(self) -> int:
        cfg = self.model.config
        mt = cfg.model_type
        if mt in ("siglip_vision_model", "siglip2_vision_model", "ijepa"):
            return 0
        return 1 + int(getattr(cfg, "num_register_tokens", 0) or 0)

    def _patch_size(self) -> int:
        if self.library == "timm":
            ps = self.model.patch_embed.patch_size
            return int(ps[0] if isinstance(ps, (tuple, list)) else ps)
        return int(self.model.config.patch_size)

    def _hidden_size(self) -> int:
        if self.library == "timm":
            return int(self.model.num_features)
        return int(self.model.config.hidden_size)

    def _needs_interpolation(self) -> bool:
        native = int(self.model.config.image_size)
        accepts = "interpolate_pos_encoding" in inspect.signature(self.model.forward).parameters
        return native != self.image_size and accepts

    # ---- forward ---------------------------------------------------------------------------
    def _tokens(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """All tokens (prefix + patches) at the feature layer: (B, P + N, Dv)."""
        if self.library == "timm":
            if self.feature_layer == -1:
                return self.model.forward_features(pixel_values)
            depth = len(self.model.blocks)
            block = self.feature_layer - 1 if self.feature_layer > 0 else depth + self.feature_layer
            if not 0 <= block < depth:
                raise ValueError(
                    f"feature_layer {self.feature_layer} is out of range for a {depth}-block timm tower"
                )
            ((patches, prefix),) = self.model.forward_intermediates(
                pixel_values,
                indices=[block],
                return_prefix_tokens=True,
                norm=False,
                output_fmt="NLC",
                intermediates_only=True,
            )
            return patches if prefix is None else torch.cat([prefix, patches], dim=1)
        kwargs: dict[str, Any] = {"interpolate_pos_encoding": True} if self._interpolate else {}
        if self.feature_layer == -1:
            return self.model(pixel_values=pixel_values, **kwargs).last_hidden_state
        out = self.model(pixel_values=pixel_values, output_hidden_states=True, **kwargs)
        return out.hidden_states[self.feature_layer]

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 3, S, S) -> (B, N, Dv) patch tokens at the feature layer, prefix tokens dropped."""
        tokens = self._tokens(pixel_values.to(self.dtype))[:, self.drop_prefix_tokens :]
        if tokens.shape[1] != self.num_patches:
            raise ValueError(
                f"vision tower gives {tokens.shape[1]} tokens after dropping {self.drop_prefix_tokens} prefix "
                f"tokens, expected the {self.grid[0]}x{self.grid[1]} grid; check drop_prefix_tokens / image_size"
            )
        return tokens

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # ---- persistence -----------------------------------------------------------------------
    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write the tower (architecture + weights, no selection keys) as a reusable component dir.

        timm: ``config.json`` = {"library": "timm", "name", "kwargs"} + ``model.safetensors``;
        transformers: the model's own ``save_pretrained`` (safetensors).
        """
        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        if self.library == "transformers":
            self.model.save_pretrained(path)
            return
        config = {"library": "timm", "name": self.spec["name"], "kwargs": self.spec["kwargs"]}
        state = {k: v.detach().contiguous().cpu() for k, v in self.model.state_dict().items()}
        save_safetensors_atomic(state, path / "model.safetensors")
        write_bytes_atomic(path / "config.json", json.dumps(config, indent=2).encode())

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike[str], **selection: Any) -> VisionTower:
        """Load a component dir written by ``save_pretrained`` (or an HF vision model dir).

        ``selection`` takes the spec keys ``feature_layer``, ``drop_prefix_tokens``, ``image_size``,
        ``image_mean``, ``image_std``.
        """
        unknown = set(selection) - set(_SELECTION_KEYS)
        if unknown:
            raise ValueError(f"unknown vision tower options {sorted(unknown)}; allowed: {_SELECTION_KEYS}")
        path = Path(directory)
        config_file = path / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"vision tower dir {path} has no config.json")
        config = json.loads(config_file.read_text())
        if config.get("library") == "timm":
            spec = {
                "library": "timm",
                "name": config["name"],
                "kwargs": config.get("kwargs") or {},
                **selection,
            }
            tower = cls(spec)
            weights = path / "model.safetensors"
            if not weights.is_file():
                raise FileNotFoundError(f"timm tower dir {path} has no model.safetensors")
            tower.model.load_state_dict(load_file(str(weights)), strict=True)
            return tower
        if "model_type" not in config:
            raise ValueError(
                f"{config_file} is neither a timm tower (library: timm) nor a transformers config"
            )
        import transformers

        # Image-text checkpoints (openai/clip-*, google/siglip-*) hold both towers: load only the vision half,
        # whose weights are the `vision_model.` subtree (the reference loads CLIPVisionModel the same way).
        vision_only = {"clip": "CLIPVisionModel", "siglip": "SiglipVisionModel", "siglip2": "Siglip2VisionModel"}
        cls_name = vision_only.get(config["model_type"])
        loader = getattr(transformers, cls_name) if cls_name else transformers.AutoModel
        model = loader.from_pretrained(path, dtype=torch.float32)  # as the LM (JarvisForCausalLM.from_components)
        spec = {"library": "transformers", "config": model.config.to_dict(), **selection}
        return cls(spec, model=model)
