"""``JarvisForCausalLM``: a LLaVA-style MLLM with JARVIS's I-JEPA objective (paper-spec §2–§8).

``forward`` reads as: splice → mask tokens → attention mask → LM (read-out hook at layer ℓ) → NTP head
→ JEPA head → losses. The mask rules live in ``attention.py``, the loss maths in ``losses.py``.
Differences from the reference (aimagelab/JARVIS ``src/models/mllm_jepa/modeling_mllm_jepa.py``),
all from paper-spec §11.2: logits only where a label exists; only layer ℓ is kept (forward hook, no
``output_hidden_states``); losses stay tensors (no ``.item()``); a batch with no image gives
``loss_jepa = 0`` instead of a ``NameError``; one class for JEPA and plain models.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    Cache,
    DynamicCache,
    GenerationMixin,
    PreTrainedModel,
)
from transformers import initialization as hf_init
from transformers.modeling_outputs import CausalLMOutputWithPast, ModelOutput

from jarvis.losses import IGNORE_INDEX, jepa_loss, ntp_loss, total_loss
from jarvis.model.attention import (
    base_allowed,
    block_mask,
    gather_positions,
    gather_square,
    jepa_allowed,
    kept_positions,
    scatter_positions,
    to_additive,
)
from jarvis.model.configuration import JarvisConfig
from jarvis.model.embedding import check, splice_visual
from jarvis.model.projector import build_projector
from jarvis.model.vision import VisionTower

logger = logging.getLogger(__name__)


@dataclass
class JarvisOutput(ModelOutput):
    """Losses are detached-free tensors (reduce them at log time); logits only on request."""

    loss: torch.Tensor | None = None
    loss_ntp: torch.Tensor | None = None
    loss_jepa: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class JarvisForCausalLM(PreTrainedModel, GenerationMixin):
    """LLaVA-style MLLM (+ JEPA parts in stage 1); ``generate`` works through ``GenerationMixin`` (see
    :meth:`prepare_inputs_for_generation` and :meth:`forward_with_cache`)."""

    config_class = JarvisConfig
    base_model_prefix = "jarvis"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    # Stage 2 loads a stage-1 JEPA checkpoint as a plain model: the JEPA weights are expected extras.
    _keys_to_ignore_on_load_unexpected = [r"^target_tower\.", r"^mask_token\.", r"^jepa_head\."]

    def __init__(
        self,
        config: JarvisConfig,
        language_model: PreTrainedModel | None = None,
        vision_tower: VisionTower | None = None,
        target_tower: VisionTower | None = None,
        projector: nn.Module | None = None,
    ) -> None:
        super().__init__(config)
        self.language_model = (
            AutoModelForCausalLM.from_config(config.text_config) if language_model is None else language_model
        )
        config.text_config = self.language_model.config
        self.vision_tower = VisionTower(config.vision_config) if vision_tower is None else vision_tower
        config.vision_config = self.vision_tower.spec  # store the completed, explicit spec
        width = config.text_config.hidden_size
        if projector is None:
            projector = build_projector(
                config.projector_type, self.vision_tower.hidden_size, width, bias=config.projector_bias
            )
        self.projector = projector
        self.target_tower: VisionTower | None = None
        self.mask_token: nn.Embedding | None = None
        self.jepa_head: nn.Module | None = None
        if config.has_jepa:
            self.target_tower = VisionTower(config.target_config) if target_tower is None else target_tower
            config.target_config = self.target_tower.spec
            self.mask_token = nn.Embedding(1, width)
            self.jepa_head = build_projector(
                config.jepa_head_type,
                width,
                self.target_tower.hidden_size,
                bias=False,
                hidden_features=config.jepa_head_hidden_size,
            )
            n_layers = config.text_config.num_hidden_layers
            if config.jepa_layer > n_layers:
                raise ValueError(f"jepa_layer={config.jepa_layer} but the LM has {n_layers} decoder layers")
        self.post_init()
        self._default_generation_ids()

    def _default_generation_ids(self) -> None:
        """bos/eos/pad ids for ``generate`` from the LM's config (transformers reads only the outer config)."""
        if self.generation_config is None:
            return
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            if getattr(self.generation_config, key, None) is None:
                setattr(self.generation_config, key, getattr(self.config.text_config, key, None))

    # ---- construction helpers ----------------------------------------------------------------
    def _init_weights(self, module: nn.Module) -> None:
        """Init only our own parts; the LM and the towers keep their libraries' own init."""
        if module is self.mask_token:
            # z ~ N(0, σ²), σ = the text config's initializer_range (paper-spec §2).
            std = getattr(self.config.text_config, "initializer_range", 0.02)
            hf_init.normal_(module.weight, mean=0.0, std=std)
        elif isinstance(module, nn.Linear) and any(module is m for m in self._own_linears()):
            module.reset_parameters()  # PyTorch default, as the reference's init_projector

    def _own_linears(self) -> list[nn.Module]:
        parts = [getattr(self, "projector", None), getattr(self, "jepa_head", None)]
        return [m for p in parts if p is not None for m in p.modules() if isinstance(m, nn.Linear)]

    @classmethod
    def from_components(
        cls,
        llm_dir: str | Path,
        vision_dir: str | Path,
        target_dir: str | Path | None = None,
        vision_options: dict[str, Any] | None = None,
        target_options: dict[str, Any] | None = None,
        **config_kwargs: Any,
    ) -> JarvisForCausalLM:
        """Pretrained LM + tower dirs, fresh projector / mask token / JEPA head.

        ``vision_options`` / ``target_options`` are tower selection keys (``feature_layer``,
        ``drop_prefix_tokens``, ``image_size``, ...); ``config_kwargs`` go to ``JarvisConfig``.
        """
        # float32, whatever the checkpoint was saved in (vicuna-7b-v1.5 is float16; transformers 5 loads a
        # checkpoint's own dtype by default): the projector and JEPA head are created in float32, and the
        # training precision is the Trainer's (bf16 autocast / DeepSpeed), as LLaVA loads it for fp32 runs.
        language_model = AutoModelForCausalLM.from_pretrained(llm_dir, dtype=torch.float32)
        vision = VisionTower.from_pretrained(vision_dir, **(vision_options or {}))
        target = (
            None if target_dir is None else VisionTower.from_pretrained(target_dir, **(target_options or {}))
        )
        config = JarvisConfig(
            text_config=AutoConfig.from_pretrained(llm_dir),
            vision_config=vision.spec,
            target_config=None if target is None else target.spec,
            **config_kwargs,
        )
        model = cls(config, language_model=language_model, vision_tower=vision, target_tower=target)
        logger.info(
            "built JARVIS model from components: llm=%s vision=%s target=%s", llm_dir, vision_dir, target_dir
        )
        return model

    def plain_config(self) -> JarvisConfig:
        """This model's config without the JEPA parts (stage-2 hand-off)."""
        return self.config.plain()

    def to_plain(self) -> JarvisForCausalLM:
        """A plain model sharing this model's LM, tower and projector (no copy); save it for stage 2."""
        return type(self)(
            self.plain_config(),
            language_model=self.language_model,
            vision_tower=self.vision_tower,
            projector=self.projector,
        )

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        return self.language_model.get_output_embeddings()

    def train(self, mode: bool = True) -> JarvisForCausalLM:
        """Frozen towers stay in eval mode (the reference keeps F_t in eval, paper-spec §8)."""
        super().train(mode)
        for tower in (self.vision_tower, self.target_tower):
            if tower is not None and not any(p.requires_grad for p in tower.parameters()):
                tower.eval()
        return self

    # ---- forward -----------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        pixel_values_target: torch.Tensor | None = None,
        context_features: torch.Tensor | None = None,
        target_features: torch.Tensor | None = None,
        jepa_context: torch.Tensor | None = None,
        jepa_targets: torch.Tensor | None = None,
        return_logits: bool = False,
        label_positions: torch.Tensor | None = None,
        jepa_keep: torch.Tensor | None = None,
        drop_unattended: bool = True,
        cache: Cache | None = None,
        **_: Any,
    ) -> JarvisOutput | CausalLMOutputWithPast:
        """One NTP step, plus the JEPA objective when ``jepa_context``/``jepa_targets`` are given.

        A JEPA step runs the LM only on the positions it needs (``attention.kept_positions``): ``jepa_keep``
        gives them precomputed on the host; without it they are found here when the batch is on the CPU
        (elsewhere that would cost a host sync, so the full sequence runs). ``drop_unattended=False`` or
        ``return_logits`` keeps the full sequence; the numbers are the same either way.
        With a ``cache`` (``generate``), one KV-cached decoding step instead: :meth:`forward_with_cache`.
        """
        if cache is not None:
            return self.forward_with_cache(input_ids, attention_mask, cache, pixel_values, context_features)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        jepa = self._is_jepa_step(jepa_context, jepa_targets)
        embeds, span, n_img = self.embed(input_ids, pixel_values, context_features)  # (B, T, D), (B, 2)
        has_image = span[:, 1] > span[:, 0]  # (B,)
        img_rows = image_rows(has_image, n_img)  # (B_img,)
        if jepa:
            _check_masks(jepa_context, jepa_targets, n_img, self.vision_tower.num_patches)
            embeds = self.write_mask_token(embeds, span, img_rows, jepa_targets)
        allowed = self.allowed_attention(attention_mask, span, has_image, jepa_context, jepa_targets)
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # left padding safe
        keep = None
        if jepa and drop_unattended and not return_logits:
            keep = jepa_keep
            if keep is None and embeds.device.type == "cpu":
                keep = kept_positions(attention_mask, span, jepa_context, jepa_targets, has_image, labels)
        if keep is not None:  # (B, T') original positions; every kept token keeps its position id
            keep = keep.to(embeds.device, non_blocking=True)
            embeds, allowed = gather_positions(embeds, keep), gather_square(allowed, keep)
            position_ids = position_ids.gather(1, keep)
        mask = self.lm_mask(allowed, embeds.dtype)
        hidden, readout = self.run_language_model(
            embeds, mask, attention_mask, capture=jepa, position_ids=position_ids
        )  # (B, T or T', D)
        if keep is not None:  # back on the full sequence, so the heads index it as before
            length = input_ids.shape[1]
            last = hidden
            hidden = scatter_positions(last, keep, length)
            readout = hidden if readout is last else scatter_positions(readout, keep, length)
        loss_ntp, logits = self.ntp(hidden, labels, return_logits, label_positions)
        if jepa:
            feats = self.target_patch_features(pixel_values_target, target_features, n_img)  # (B_img, N, Dt)
            loss_jepa = self.jepa(readout, span, img_rows, jepa_targets, feats)
        else:
            loss_jepa = hidden.new_zeros((), dtype=torch.float32)
        loss = None if loss_ntp is None else total_loss(loss_ntp, loss_jepa, self.config.jepa_weight)
        return JarvisOutput(loss=loss, loss_ntp=loss_ntp, loss_jepa=loss_jepa, logits=logits)

    def _is_jepa_step(self, context: torch.Tensor | None, targets: torch.Tensor | None) -> bool:
        if (context is None) != (targets is None):
            raise ValueError("pass both jepa_context and jepa_targets (or neither)")
        if context is not None and not self.config.has_jepa:
            raise ValueError(
                "JEPA masks given to a model without target encoder (config.target_config is None)"
            )
        return context is not None

    def encode_images(
        self, pixel_values: torch.Tensor | None, context_features: torch.Tensor | None
    ) -> torch.Tensor | None:
        """Projected visual tokens (B_img, N, D) from pixels or from cached tower features."""
        if context_features is None:
            if pixel_values is None:
                return None
            with torch.set_grad_enabled(torch.is_grad_enabled() and _trainable(self.vision_tower)):
                context_features = self.vision_tower(pixel_values)  # (B_img, N, Dv)
        proj_dtype = next(self.projector.parameters()).dtype
        return self.projector(context_features.to(proj_dtype))  # (B_img, N, D)

    def embed(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None,
        context_features: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Token embeddings with the visual tokens spliced in; returns (embeds, visual_span, B_img)."""
        image_id = self.config.image_token_id
        # The placeholder id may lie outside the vocabulary: embed a harmless id there, it is overwritten.
        safe_ids = input_ids.masked_fill(input_ids == image_id, 0)
        tokens = self.get_input_embeddings()(safe_ids)  # (B, T, D)
        visual = self.encode_images(pixel_values, context_features)
        embeds, span = splice_visual(tokens, input_ids, image_id, visual)
        return embeds, span, 0 if visual is None else visual.shape[0]

    def write_mask_token(
        self, embeds: torch.Tensor, span: torch.Tensor, img_rows: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        """Replace every target position of the visual span with the learned token z (paper-spec §5)."""
        batch, length, _ = embeds.shape
        positions = span[img_rows, :1] + targets.flatten(1)  # (B_img, M*Kt) absolute positions
        is_target = torch.zeros(batch, length, dtype=torch.bool, device=embeds.device)
        is_target = is_target.index_put(
            (img_rows.unsqueeze(1).expand_as(positions), positions), torch.tensor(True)
        )
        z = self.mask_token.weight[0].to(embeds.dtype)  # (D,)
        return torch.where(is_target.unsqueeze(-1), z, embeds)

    def allowed_attention(
        self,
        attention_mask: torch.Tensor,
        span: torch.Tensor,
        has_image: torch.Tensor,
        context: torch.Tensor | None,
        targets: torch.Tensor | None,
    ) -> torch.Tensor:
        """Bool (B, T, T): causal (+ bidirectional visual span) (+ JEPA rules), paper-spec §6."""
        allowed = base_allowed(attention_mask, span, bidir_visual=self.config.bidir_visual_attn)
        if context is not None:
            allowed = jepa_allowed(allowed, span, context, targets, has_image)
        return allowed

    def build_attention_mask(
        self,
        attention_mask: torch.Tensor,
        span: torch.Tensor,
        has_image: torch.Tensor,
        context: torch.Tensor | None,
        targets: torch.Tensor | None,
        dtype: torch.dtype,
    ) -> torch.Tensor:
        """Float (B, 1, T, T): ``allowed_attention`` as an additive mask."""
        return to_additive(self.allowed_attention(attention_mask, span, has_image, context, targets), dtype)

    def lm_mask(self, allowed: torch.Tensor, dtype: torch.dtype) -> Any:
        """The LM's mask for Bool[B, Q, K] ``allowed``: a FlexAttention ``BlockMask`` when the LM runs
        ``flex_attention`` (``model.language_model.set_attn_implementation("flex_attention")``), else the additive
        float mask (B, 1, Q, K). Decoding steps after the prefill keep the additive mask (one query row)."""
        if self.language_model.config._attn_implementation == "flex_attention":
            return block_mask(allowed)
        return to_additive(allowed, dtype)

    def _readout_layer(self) -> nn.Module | None:
        """Decoder layer whose output is hidden_states[ℓ]; None when ℓ is the last (normed) state."""
        n_layers = self.config.text_config.num_hidden_layers
        layer = self.config.jepa_layer
        if layer in (-1, n_layers):
            return None
        return self.language_model.get_decoder().layers[layer - 1]

    def run_language_model(
        self,
        embeds: torch.Tensor,
        mask: torch.Tensor,
        attention_mask: torch.Tensor,
        capture: bool,
        position_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Final hidden state (B, T, D) and, when ``capture``, hidden_states[ℓ] (B, T, D).

        hidden_states[ℓ] (1-indexed, as the reference's ``jepa_llm_layer_idx``) is the output of decoder
        layer ℓ-1, read with a forward hook so no other layer's activations are kept. ``position_ids``
        default to the 2-D ``attention_mask``'s (a compacted JEPA sequence passes its own).
        """
        captured: dict[str, torch.Tensor] = {}
        layer = self._readout_layer() if capture else None
        handle = None
        if layer is not None:
            handle = layer.register_forward_hook(
                lambda _m, _i, out: captured.__setitem__("h", out[0] if isinstance(out, tuple) else out)
            )
        if position_ids is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # left padding safe
        try:
            out = self.language_model.get_decoder()(
                inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids, use_cache=False
            )
        finally:
            if handle is not None:
                handle.remove()
        hidden = out.last_hidden_state
        return hidden, (captured.get("h", hidden) if capture else None)

    def logits_from_hidden(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.get_output_embeddings()(hidden)
        softcap = getattr(self.config.text_config, "final_logit_softcapping", None)
        if softcap:  # Gemma-2 style LMs
            logits = torch.tanh(logits / softcap) * softcap
        return logits

    def ntp(
        self,
        hidden: torch.Tensor,
        labels: torch.Tensor | None,
        return_logits: bool,
        label_positions: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """Next-token loss; logits only at positions with a (shifted) label unless ``return_logits``.

        The reference computes full-vocabulary logits at every position, image tokens included (paper-spec §11.2).
        ``label_positions`` (n, 2), precomputed by the collator on the CPU, selects the supervised positions
        with a gather; without it a boolean mask does the same but costs a device->host sync on GPUs.
        """
        if labels is None:
            return None, self.logits_from_hidden(hidden)
        shifted = labels[:, 1:]  # (B, T-1) target of position t is labels[t+1]
        if return_logits:
            logits = self.logits_from_hidden(hidden)  # (B, T, V)
            return ntp_loss(logits[:, :-1], shifted), logits
        if label_positions is not None:
            rows, cols = label_positions.to(hidden.device, non_blocking=True).unbind(-1)
            selected = self.logits_from_hidden(hidden[rows, cols])  # (n_labels, V)
            return ntp_loss(selected, shifted[rows, cols]), None
        keep = shifted != IGNORE_INDEX
        selected = self.logits_from_hidden(hidden[:, :-1][keep])  # (n_labels, V)
        return ntp_loss(selected, shifted[keep]), None

    def target_patch_features(
        self, pixel_values_target: torch.Tensor | None, target_features: torch.Tensor | None, n_img: int
    ) -> torch.Tensor:
        """Frozen target features on the context grid (B_img, N, Dt); bilinear resize on mismatch."""
        tower = self.target_tower
        if n_img == 0:
            return torch.zeros(0, self.vision_tower.num_patches, tower.hidden_size, device=self.device)
        with torch.no_grad():
            if target_features is None:
                if pixel_values_target is None:
                    raise ValueError("a JEPA step needs pixel_values_target or target_features")
                target_features = tower(pixel_values_target)  # (B_img, Nt, Dt)
            if target_features.shape[1] != tower.num_patches:
                raise ValueError(
                    f"target_features have {target_features.shape[1]} tokens, the target grid {tower.grid} has "
                    f"{tower.num_patches}"
                )
            return resize_grid(target_features, tower.grid, self.vision_tower.grid)

    def jepa(
        self,
        readout: torch.Tensor,
        span: torch.Tensor,
        img_rows: torch.Tensor,
        targets: torch.Tensor,
        target_feats: torch.Tensor,
    ) -> torch.Tensor:
        """JEPA loss: g(hidden_states[ℓ]) at target positions vs target features (paper-spec §7)."""
        n_img, n_blocks, k = targets.shape
        flat = targets.flatten(1)  # (B_img, M*Kt)
        positions = span[img_rows, :1] + flat
        rows = readout[img_rows]  # (B_img, T, D)
        h = rows.gather(1, positions.unsqueeze(-1).expand(-1, -1, rows.shape[-1]))  # (B_img, M*Kt, D)
        pred = self.jepa_head(h)
        pred = pred.view(n_img, n_blocks, k, pred.shape[-1])  # (B_img, M, Kt, Dt)
        dt = target_feats.shape[-1]
        tgt = target_feats.gather(1, flat.unsqueeze(-1).expand(-1, -1, dt)).view(n_img, n_blocks, k, dt)
        return jepa_loss(pred, tgt.to(pred.dtype), self.config.jepa_loss)

    # ---- generation --------------------------------------------------------------------------
    def prepare_inputs_for_generation(
        self, input_ids: torch.LongTensor, is_first_iteration: bool | None = False, **kwargs: Any
    ) -> dict[str, Any]:
        """GenerationMixin hook: images (pixels or cached tower features) go in on the prefill step only.

        ``pixel_values`` is already dropped after prefill by transformers; ``context_features`` is ours to drop.
        Position ids are derived from ``attention_mask`` in :meth:`forward_with_cache` (left padding safe).
        """
        inputs = super().prepare_inputs_for_generation(input_ids, is_first_iteration=is_first_iteration, **kwargs)
        if not is_first_iteration:
            for key in ("pixel_values", "context_features"):
                inputs.pop(key, None)
        inputs.pop("position_ids", None)
        return inputs

    def forward_with_cache(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        cache: Cache,
        pixel_values: torch.Tensor | None = None,
        context_features: torch.Tensor | None = None,
    ) -> CausalLMOutputWithPast:
        """One KV-cached step: logits (B, 1, V) of the last position, and the grown ``cache``.

        ``attention_mask`` (B, T_past + q) covers the cached keys and the q new tokens (``generate`` drops it when
        there is no padding: None means all ones). The prefill step (empty cache) splices the images and uses the
        training mask (bidirectional visual span when configured), as :meth:`generate_greedy`; later steps embed
        plain tokens and attend to every unpadded key before them.
        """
        past = cache.get_seq_length()
        if attention_mask is None:
            attention_mask = input_ids.new_ones(input_ids.shape[0], past + input_ids.shape[1])
        length = attention_mask.shape[1]
        if past == 0:
            embeds, span, _ = self.embed(input_ids, pixel_values, context_features)  # (B, T, D)
            allowed = base_allowed(attention_mask, span, bidir_visual=self.config.bidir_visual_attn)
        else:
            embeds = self.get_input_embeddings()(input_ids)  # (B, q, D)
            keys = torch.arange(length, device=input_ids.device)
            queries = past + torch.arange(input_ids.shape[1], device=input_ids.device)
            allowed = (keys[None, :] <= queries[:, None]) & attention_mask.bool()[:, None, :]  # (B, q, T)
        positions = (attention_mask.long().cumsum(-1)[:, past:] - 1).clamp(min=0)  # (B, q)
        out = self.language_model.get_decoder()(
            inputs_embeds=embeds,
            attention_mask=self.lm_mask(allowed, embeds.dtype),
            position_ids=positions,
            cache=cache,
            use_cache=True,
        )
        logits = self.logits_from_hidden(out.last_hidden_state[:, -1:])  # (B, 1, V)
        return CausalLMOutputWithPast(logits=logits, cache=cache)

    @torch.no_grad()
    def generate_greedy(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        max_new_tokens: int = 16,
        eos_token_id: int | None = None,
        context_features: torch.Tensor | None = None,
    ) -> torch.LongTensor:
        """Greedy decoding of a left-padded batch with a KV cache; returns (B, n_new) new tokens.

        The prefill uses the same mask as training (bidirectional visual span when configured);
        rows that produced ``eos_token_id`` keep emitting it. Stops early when every row is done.
        """
        embeds, span, _ = self.embed(input_ids, pixel_values, context_features)
        allowed = base_allowed(attention_mask, span, bidir_visual=self.config.bidir_visual_attn)
        mask = self.lm_mask(allowed, embeds.dtype)
        positions = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        decoder = self.language_model.get_decoder()
        cache = DynamicCache(config=self.config.text_config)
        out = decoder(
            inputs_embeds=embeds, attention_mask=mask, position_ids=positions, cache=cache, use_cache=True
        )
        keys_mask = attention_mask.bool()
        next_pos = positions[:, -1:] + 1
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        new_tokens: list[torch.Tensor] = []
        for _ in range(max_new_tokens):
            token = self.logits_from_hidden(out.last_hidden_state[:, -1]).argmax(-1)  # (B,)
            if eos_token_id is not None:
                token = torch.where(done, torch.full_like(token, eos_token_id), token)
                done = done | (token == eos_token_id)
            new_tokens.append(token)
            if eos_token_id is not None and bool(done.all()):
                break
            keys_mask = torch.cat([keys_mask, keys_mask.new_ones(keys_mask.shape[0], 1)], dim=1)
            step_mask = to_additive(keys_mask.unsqueeze(1), embeds.dtype)  # (B, 1, 1, T+i)
            out = decoder(
                inputs_embeds=self.get_input_embeddings()(token.unsqueeze(1)),
                attention_mask=step_mask,
                position_ids=next_pos,
                cache=cache,
                use_cache=True,
            )
            next_pos = next_pos + 1
        return torch.stack(new_tokens, dim=1)


def image_rows(has_image: torch.Tensor, n_img: int) -> torch.Tensor:
    """Batch indices of the samples with an image, in order, without a host sync (stable sort)."""
    order = torch.argsort((~has_image).to(torch.int8), stable=True)
    return order[:n_img]


def resize_grid(features: torch.Tensor, grid: tuple[int, int], to_grid: tuple[int, int]) -> torch.Tensor:
    """(B, h*w, D) on ``grid`` -> (B, H*W, D) on ``to_grid``, bilinear, align_corners=False (paper-spec §3)."""
    if tuple(grid) == tuple(to_grid):
        return features
    batch, _, dim = features.shape
    maps = features.transpose(1, 2).reshape(batch, dim, *grid)  # (B, D, h, w)
    resized = F.interpolate(maps.float(), size=tuple(to_grid), mode="bilinear", align_corners=False)
    return resized.flatten(2).transpose(1, 2).to(features.dtype)  # (B, H*W, D)


def _trainable(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def _check_masks(context: torch.Tensor, targets: torch.Tensor, n_img: int, num_patches: int) -> None:
    """Shape checks on the host; index range checked without a host sync."""
    if context.dim() != 2 or targets.dim() != 3:
        raise ValueError(
            f"jepa_context must be (B_img, Kc) and jepa_targets (B_img, M, Kt); got "
            f"{tuple(context.shape)} and {tuple(targets.shape)}"
        )
    if context.shape[0] != n_img or targets.shape[0] != n_img:
        raise ValueError(
            f"JEPA masks for {context.shape[0]}/{targets.shape[0]} images, batch has {n_img} images"
        )
    for name, idx in (("jepa_context", context), ("jepa_targets", targets)):
        if idx.numel():
            check(((idx >= 0) & (idx < num_patches)).all(), f"{name} indices must lie in [0, {num_patches})")


def _register() -> None:
    from jarvis.model import register_auto_classes

    register_auto_classes()


_register()  # AutoModelForCausalLM / AutoModelForImageTextToText / AutoProcessor know "jarvis" (public hooks)
