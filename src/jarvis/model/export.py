"""``jarvis export --format llava-hf``: a checkpoint as transformers' ``LlavaForConditionalGeneration``.

LLaVA-format checkpoints are what lmms-eval, vLLM and most MLLM tooling load. The mapping is exact only where
``LlavaForConditionalGeneration`` computes the same function as ``JarvisForCausalLM``; everything else is refused
with the reason (:func:`llava_blockers`), never approximated silently:

- **Attention.** LLaVA's language model attends causally everywhere. A checkpoint trained with bidirectional
  attention inside the image span (``bidir_visual_attn``, every JARVIS arm: the JEPA rules need it, paper-spec §6)
  cannot be expressed; ``allow_attention_change`` exports it anyway with a loud warning (outputs then differ).
- **JEPA parts** (target tower, mask token z, JEPA head) are stage-1 training machinery, unused at inference:
  they are dropped, and said so.
- **Vision tower.** A transformers CLIP or SigLIP vision model at its native resolution (LLaVA builds the tower
  with ``AutoModel`` and never interpolates position embeddings). Features are ``hidden_states[vision_feature_layer]``;
  our ``feature_layer=-1`` means ``last_hidden_state``, which for SigLIP is after the post-layernorm, so the
  export checks the selected features numerically. ``vision_feature_select_strategy`` is ``"default"`` (drops
  exactly one CLS token) or ``"full"`` (drops none), matching ``drop_prefix_tokens`` 1 or 0.
- **Projector.** ``LlavaMultiModalProjector`` is Linear → GELU (erf) → Linear, the same as our ``mlp``
  (``nn.GELU()`` is the erf form, transformers' ``"gelu"``); a ``linear`` projector has no exact equivalent.
- **Image preprocessing** is the processor of ``jarvis.model.processing`` (pad or crop mode), with LLaVA's token
  count: ``(size // patch)² + 1 - 1`` for CLIP with ``"default"``.
- **Positions.** LLaVA numbers positions 0..T-1; ours count only unpadded tokens. They agree for unpadded and
  right-padded inputs (left-padded batches in LLaVA tooling pass explicit ``position_ids``).
"""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Literal

import torch

from jarvis.io import atomic_dir

log = logging.getLogger(__name__)
_TOWERS = {"clip_vision_model": 1, "siglip_vision_model": 0}  # supported tower -> its prefix (CLS) tokens
FORMATS = ("llava-hf",)


class ExportError(ValueError):
    """The checkpoint cannot be expressed in the requested format; the message says why."""


def llava_blockers(model: Any, allow_attention_change: bool = False) -> list[str]:
    """Why ``model`` cannot become an equivalent ``LlavaForConditionalGeneration`` ([] = it can)."""
    cfg, tower = model.config, model.vision_tower
    reasons: list[str] = []
    if cfg.bidir_visual_attn and not allow_attention_change:
        reasons.append(
            "it was trained with bidirectional attention inside the image span (bidir_visual_attn: true), and "
            "LlavaForConditionalGeneration attends causally; pass --allow-attention-change to export anyway with "
            "different outputs"
        )
    model_type = tower.spec.get("config", {}).get("model_type") if tower.library == "transformers" else None
    if model_type not in _TOWERS:
        name = model_type or f"timm:{tower.spec.get('name')}"
        reasons.append(f"its vision tower {name!r} is not a transformers CLIP or SigLIP vision model")
    else:
        if tower.drop_prefix_tokens not in (0, 1) or tower.drop_prefix_tokens != _TOWERS[model_type]:
            reasons.append(
                f"it drops {tower.drop_prefix_tokens} prefix tokens of a {model_type} tower, and LLaVA drops exactly "
                f"the CLS token ('default') or none ('full'); this tower has {_TOWERS[model_type]}"
            )
        if tower.image_size != int(tower.model.config.image_size):
            reasons.append(
                f"its tower runs at {tower.image_size} px with interpolated position embeddings (native "
                f"{tower.model.config.image_size} px), which LLaVA does not do"
            )
    if cfg.projector_type != "mlp":
        reasons.append(
            f"its projector is {cfg.projector_type!r}, and LlavaMultiModalProjector is Linear-GELU-Linear"
        )
    if getattr(cfg.text_config, "final_logit_softcapping", None):
        reasons.append("its language model soft-caps logits, which LlavaForConditionalGeneration does not")
    if not 0 <= cfg.image_token_id < cfg.text_config.vocab_size:
        reasons.append(
            f"its image placeholder id {cfg.image_token_id} lies outside the vocabulary "
            f"({cfg.text_config.vocab_size}); LLaVA embeds the placeholder ids"
        )
    return reasons


def to_llava(model: Any) -> Any:
    """``LlavaForConditionalGeneration`` with ``model``'s weights (call :func:`llava_blockers` first)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration

    cfg, tower = model.config, model.vision_tower
    config = LlavaConfig(
        vision_config=tower.model.config.to_dict(),
        text_config=cfg.text_config.to_dict(),
        image_token_index=cfg.image_token_id,
        image_seq_length=tower.num_patches,
        projector_hidden_act="gelu",
        vision_feature_select_strategy="default" if tower.drop_prefix_tokens == 1 else "full",
        vision_feature_layer=tower.feature_layer,
        multimodal_projector_bias=cfg.projector_bias,
        tie_word_embeddings=bool(getattr(cfg.text_config, "tie_word_embeddings", False)),
    )
    llava = LlavaForConditionalGeneration(config).to(model.dtype).eval()
    parts = (
        (llava.model.vision_tower, tower.model),
        (llava.model.multi_modal_projector.linear_1, model.projector[0]),
        (llava.model.multi_modal_projector.linear_2, model.projector[2]),
        (llava.model.language_model, model.language_model.get_decoder()),
        (llava.lm_head, model.get_output_embeddings()),
    )
    for dst, src in parts:
        dst.load_state_dict(src.state_dict(), strict=True)
    return llava


@torch.no_grad()
def _check_vision_features(model: Any, llava: Any) -> None:
    """Our tower's patch features == LLaVA's selected features on a random image (catches SigLIP's post-LN)."""
    tower = model.vision_tower
    pixels = torch.randn(1, 3, tower.image_size, tower.image_size, generator=torch.Generator().manual_seed(0))
    ours = tower(pixels.to(tower.dtype))
    theirs = llava.model.get_image_features(pixel_values=pixels.to(tower.dtype)).pooler_output[0][None]
    ref = model.projector(ours.to(theirs.dtype))
    if ref.shape != theirs.shape or not torch.allclose(ref, theirs, atol=1e-5, rtol=1e-4):
        raise ExportError(
            f"cannot export as llava-hf: LLaVA's hidden_states[{tower.feature_layer}] of this {tower.library} tower "
            "differs from our features (feature_layer -1 is last_hidden_state, after any post-layernorm)"
        )


def export_llava_hf(
    src: str | Path,
    dst: str | Path,
    image_mode: Literal["crop", "pad"] = "pad",
    allow_attention_change: bool = False,
) -> list[str]:
    """Write ``src`` (a ``JarvisForCausalLM`` checkpoint with its tokenizer) to ``dst`` as llava-hf.

    Returns the warnings issued (dropped JEPA parts, attention change). Raises :class:`ExportError` naming every
    blocker. ``dst`` is written atomically (temp dir + rename).
    """
    from transformers import AutoTokenizer

    from jarvis.model.modeling import JarvisForCausalLM
    from jarvis.model.processing import build_processor

    src, dst = Path(src), Path(dst)
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src}: not a checkpoint directory (no config.json)")
    model = JarvisForCausalLM.from_pretrained(src, target_config=None).eval()  # JEPA parts are not loaded
    notes: list[str] = []
    if JarvisForCausalLM.config_class.from_pretrained(src).has_jepa:
        notes.append("dropped the JEPA training parts (target tower, mask token, JEPA head): unused at inference")
    blockers = llava_blockers(model, allow_attention_change)
    if blockers:
        raise ExportError(f"cannot export {src} as llava-hf: " + "; ".join(blockers))
    if model.config.bidir_visual_attn:
        notes.append(
            "ATTENTION CHANGED: the model was trained with bidirectional attention over image tokens; the llava-hf "
            "export attends causally, so its outputs and scores differ from this checkpoint's"
        )
    llava = to_llava(model)
    _check_vision_features(model, llava)
    tokenizer = AutoTokenizer.from_pretrained(src)
    tower = model.vision_tower
    processor = build_processor(
        tokenizer, tower.image_size, tower.image_size // tower.grid[0], tower.image_mean, tower.image_std,
        image_mode, num_additional_image_tokens=_TOWERS[tower.model.config.model_type],
        vision_feature_select_strategy=llava.config.vision_feature_select_strategy,
    )
    if model.generation_config is not None:
        llava.generation_config = model.generation_config
    with atomic_dir(dst) as tmp:
        llava.save_pretrained(tmp)
        processor.save_pretrained(tmp)
    for note in notes:
        warnings.warn(note, stacklevel=2)
        log.warning(note)
    return notes
