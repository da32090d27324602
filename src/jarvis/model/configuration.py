"""``JarvisConfig``: everything needed to rebuild a JARVIS / LLaVA-style MLLM offline (paper-spec §2).

- ``text_config``: any transformers causal-LM config (a dict with ``model_type`` is accepted, as in
  LLaVA's config), built with ``AutoModelForCausalLM.from_config``.
- ``vision_config`` / ``target_config``: plain tower spec dicts (see ``jarvis.model.vision``), because
  timm towers have no transformers config. ``target_config is None`` means a plain (non-JEPA) model.
- JEPA fields use this project's names (style.md §3.8): ``jepa_layer`` is the reference's
  ``jepa_llm_layer_idx`` (1-indexed ``hidden_states`` index, -1 = last), ``jepa_weight`` its
  ``jepa_loss_weight``. The skip probability is a training knob and lives in the trainer, not here.
"""

from __future__ import annotations

import copy
from typing import Any

from transformers import AutoConfig, PretrainedConfig

from jarvis.config import JEPA_LOSSES, JepaLossKind


class JarvisConfig(PretrainedConfig):
    model_type = "jarvis"
    sub_configs = {"text_config": AutoConfig}

    def __init__(
        self,
        text_config: PretrainedConfig | dict[str, Any] | None = None,
        vision_config: dict[str, Any] | None = None,
        target_config: dict[str, Any] | None = None,
        projector_type: str = "mlp",
        projector_bias: bool = True,
        image_token_id: int = 0,
        bidir_visual_attn: bool = True,
        jepa_layer: int = -1,
        jepa_head_type: str = "mlp",
        jepa_head_hidden_size: int | None = None,
        jepa_loss: JepaLossKind = "cos",
        jepa_weight: float = 1.0,
        **kwargs: Any,
    ) -> None:
        if isinstance(text_config, dict):
            text_config = dict(text_config)
            if "model_type" not in text_config:
                raise ValueError(
                    "JarvisConfig.text_config needs a 'model_type' (e.g. 'llama', 'qwen2', 'mistral')"
                )
            text_config = AutoConfig.for_model(text_config.pop("model_type"), **text_config)
        self.text_config = text_config
        self.vision_config = copy.deepcopy(vision_config)
        self.target_config = copy.deepcopy(target_config)
        self.projector_type = projector_type
        self.projector_bias = projector_bias
        self.image_token_id = image_token_id
        self.bidir_visual_attn = bidir_visual_attn
        self.jepa_layer = jepa_layer
        self.jepa_head_type = jepa_head_type
        self.jepa_head_hidden_size = jepa_head_hidden_size
        self.jepa_loss = jepa_loss
        self.jepa_weight = jepa_weight
        super().__init__(**kwargs)
        self._validate()

    def _validate(self) -> None:
        for name, value, allowed in (
            ("projector_type", self.projector_type, ("linear", "mlp")),
            ("jepa_head_type", self.jepa_head_type, ("linear", "mlp")),
            ("jepa_loss", self.jepa_loss, JEPA_LOSSES),
        ):
            if value not in allowed:
                raise ValueError(f"JarvisConfig.{name}={value!r}; expected one of {allowed}")
        if self.target_config is not None and not self.bidir_visual_attn:
            # The JEPA rules edit a 4-D mask built on the bidirectional base (paper-spec §6).
            raise ValueError("JarvisConfig: a JEPA model (target_config set) requires bidir_visual_attn=True")
        if self.jepa_layer == 0 or self.jepa_layer < -1:
            raise ValueError(
                f"JarvisConfig.jepa_layer={self.jepa_layer}: use 1..num_hidden_layers or -1 (last)"
            )

    @property
    def has_jepa(self) -> bool:
        return self.target_config is not None

    def plain(self) -> JarvisConfig:
        """The same model without target encoder / mask token / JEPA head (stage-2 hand-off)."""
        data = self.to_dict()
        data["target_config"] = None
        data.pop("model_type", None)
        return JarvisConfig(**data)


AutoConfig.register(JarvisConfig.model_type, JarvisConfig, exist_ok=True)  # public hook: AutoConfig knows "jarvis"
