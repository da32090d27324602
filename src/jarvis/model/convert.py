"""Convert a checkpoint written by the reference's ``save_pretrained`` into this project's format.

Reference layout (aimagelab/JARVIS ``src/models/mllm/configuration_mllm.py``,
``src/models/mllm_jepa/configuration_mllm_jepa.py`` and the modules' attribute names):
- ``config.json`` with ``model_type`` ``mllm`` or ``mllm_jepa``; nested ``text_config`` and
  ``vision_config`` (transformers configs as dicts, with ``model_type``); ``projector_type``,
  ``projector_bias``, ``image_token_id``, ``bidir_visual_attn``, ``vision_layer_idx``,
  ``skip_left_visual_tokens``, ``img_size``; for ``mllm_jepa`` also ``tgt_vision_model_name_or_path``,
  ``tgt_proj_type``, ``tgt_proj_intermediate_size``, ``tgt_proj_output_size``,
  ``tgt_skip_left_visual_tokens``, ``tgt_vision_layer_idx``, ``tgt_img_size``, ``jepa_loss_fn``,
  ``jepa_loss_weight``, ``jepa_llm_layer_idx``.
- weights (``model.safetensors`` or a sharded index) with prefixes ``language_model.``,
  ``vision_model.``, ``projector.``, and for JEPA ``z.weight``, ``tgt_proj.``, ``_tgt_vision_model.``.

The reference stores only the *name* of the target encoder, so its architecture config must come from
``target_dir`` (an HF vision model dir) or from that name when it is a local directory.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from jarvis.config import JepaLossKind
from jarvis.io import save_safetensors_atomic, write_text_atomic
from jarvis.model.configuration import JarvisConfig

logger = logging.getLogger(__name__)

# Reference prefix -> ours. Order matters only for readability; prefixes are disjoint.
KEY_MAP: tuple[tuple[str, str], ...] = (
    ("language_model.", "language_model."),
    ("vision_model.", "vision_tower.model."),
    ("projector.", "projector."),
    ("z.", "mask_token."),
    ("tgt_proj.", "jepa_head."),
    ("_tgt_vision_model.", "target_tower.model."),
)
_LOSS_NAMES: dict[str, JepaLossKind] = {"cos_sim": "cos", "smooth_l1": "smooth_l1"}  # reference name -> ours


def map_key(key: str) -> str:
    """Reference state-dict key -> ours; raises on a key outside the known prefixes."""
    for old, new in KEY_MAP:
        if key.startswith(old):
            return new + key[len(old) :]
    raise ValueError(
        f"unexpected key {key!r} in the reference checkpoint (known prefixes: {[k for k, _ in KEY_MAP]})"
    )


def load_state_dict(directory: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors checkpoint dir (single file or sharded index)."""
    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    if single.is_file():
        return load_file(str(single))
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state: dict[str, torch.Tensor] = {}
        for shard in shards:
            state.update(load_file(str(directory / shard)))
        return state
    raise FileNotFoundError(f"{directory} has neither model.safetensors nor model.safetensors.index.json")


def _tower_spec(hf_config: dict[str, Any], layer: int, skip: int | None, size: int | None) -> dict[str, Any]:
    if "model_type" not in hf_config:
        raise ValueError("the reference vision config has no model_type")
    spec: dict[str, Any] = {"library": "transformers", "config": dict(hf_config), "feature_layer": int(layer)}
    if skip is not None:
        spec["drop_prefix_tokens"] = int(skip)
    if size:
        spec["image_size"] = int(size)
    return spec


def _target_hf_config(
    ref: dict[str, Any], target_dir: str | Path | None
) -> tuple[dict[str, Any], Path | None]:
    """The target encoder's transformers config: from ``target_dir`` or a local ``tgt_vision_model_name_or_path``."""
    name = ref.get("tgt_vision_model_name_or_path")
    candidates = [Path(target_dir)] if target_dir is not None else []
    if name and Path(name).is_dir():
        candidates.append(Path(name))
    for cand in candidates:
        if (cand / "config.json").is_file():
            return json.loads((cand / "config.json").read_text()), cand
    raise FileNotFoundError(
        "the reference checkpoint stores only the target encoder's name "
        f"(tgt_vision_model_name_or_path={name!r}); its architecture config is missing: pass target_dir, "
        "a directory with that vision model's config.json"
        + (f" (got {target_dir}, which has no config.json)" if target_dir is not None else "")
    )


def reference_config_to_ours(ref: dict[str, Any], target_hf_config: dict[str, Any] | None) -> JarvisConfig:
    """Translate the reference's ``MLLMConfig`` / ``MLLMJEPAConfig`` dict into a ``JarvisConfig``."""
    model_type = ref.get("model_type")
    if model_type not in ("mllm", "mllm_jepa"):
        raise ValueError(f"reference config model_type must be 'mllm' or 'mllm_jepa', got {model_type!r}")
    for key in ("text_config", "vision_config", "image_token_id"):
        if ref.get(key) is None:
            raise ValueError(f"reference config.json lacks {key!r}")
    vision = _tower_spec(
        ref["vision_config"],
        ref.get("vision_layer_idx", -2),
        ref.get("skip_left_visual_tokens", 1),
        ref.get("img_size"),
    )
    kwargs: dict[str, Any] = {
        "text_config": dict(ref["text_config"]),
        "vision_config": vision,
        "projector_type": ref.get("projector_type", "linear"),
        "projector_bias": bool(ref.get("projector_bias", False)),
        "image_token_id": int(ref["image_token_id"]),
        "bidir_visual_attn": bool(ref.get("bidir_visual_attn", True)),
    }
    if model_type == "mllm_jepa":
        assert target_hf_config is not None
        loss = ref.get("jepa_loss_fn", "cos_sim")
        if loss not in _LOSS_NAMES:
            raise ValueError(f"unknown reference jepa_loss_fn {loss!r}")
        out_size = ref.get("tgt_proj_output_size") or None
        if out_size is not None and out_size != target_hf_config.get("hidden_size"):
            raise ValueError(
                f"tgt_proj_output_size={out_size} differs from the target width {target_hf_config.get('hidden_size')}"
            )
        skip = ref.get("tgt_skip_left_visual_tokens")
        kwargs.update(
            target_config=_tower_spec(
                target_hf_config,
                ref.get("tgt_vision_layer_idx", -1),
                ref.get("skip_left_visual_tokens", 1) if skip is None else skip,
                ref.get("tgt_img_size"),
            ),
            jepa_head_type=ref.get("tgt_proj_type", "linear"),
            jepa_head_hidden_size=ref.get("tgt_proj_intermediate_size") or None,
            jepa_loss=_LOSS_NAMES[loss],
            jepa_weight=float(ref.get("jepa_loss_weight", 1.0)),
            jepa_layer=int(ref.get("jepa_llm_layer_idx", -1)),
        )
    return JarvisConfig(**kwargs)


def convert_reference(
    src_dir: str | Path, dst_dir: str | Path, target_dir: str | Path | None = None
) -> JarvisConfig:
    """Read the reference checkpoint in ``src_dir``, write ours (config.json + model.safetensors) to ``dst_dir``."""
    src, dst = Path(src_dir), Path(dst_dir)
    config_file = src / "config.json"
    if not config_file.is_file():
        raise FileNotFoundError(f"reference checkpoint {src} has no config.json")
    ref = json.loads(config_file.read_text())
    jepa = ref.get("model_type") == "mllm_jepa"
    target_hf, target_source = _target_hf_config(ref, target_dir) if jepa else (None, None)
    config = reference_config_to_ours(ref, target_hf)
    state = {map_key(k): v for k, v in load_state_dict(src).items()}
    if jepa and not any(k.startswith("target_tower.") for k in state):
        # Older saves may omit the frozen target encoder: take its weights from the target dir.
        assert target_source is not None
        logger.warning(
            "no _tgt_vision_model.* weights in %s; loading the target encoder from %s", src, target_source
        )
        state.update({f"target_tower.model.{k}": v for k, v in load_state_dict(target_source).items()})
    dst.mkdir(parents=True, exist_ok=True)
    save_safetensors_atomic({k: v.contiguous() for k, v in state.items()}, dst / "model.safetensors",
                            metadata={"format": "pt"})
    write_text_atomic(dst / "config.json", config.to_json_string())
    logger.info(
        "converted reference checkpoint %s (%s) -> %s, %d tensors",
        src,
        ref.get("model_type"),
        dst,
        len(state),
    )
    return config
