"""The processor saved beside every checkpoint: image processor + tokenizer + chat template (``AutoProcessor``).

It is transformers' own ``LlavaProcessor`` around a ``LlavaImageProcessorPil``, configured to reproduce our
evaluation preprocessing (``jarvis.data.images.ImageTransform``, benchmarks-spec §1):

- ``pad`` mode (stage 2 / evaluation): ``do_pad`` expands to a square filled with ``int(mean·255)`` (LLaVA's
  ``expand2square``), then the bicubic shortest-side resize and centre crop; ``crop`` mode (stage 1) skips the pad.
- The PIL backend, because our transform resizes with PIL (the torchvision backend differs by up to 0.015,
  stack-facts §4); ``AutoProcessor.from_pretrained`` reads the backend from ``preprocessor_config.json``.
- ``<image>`` in the text becomes ``num_patches`` placeholder ids: our towers already drop their prefix tokens,
  so the processor counts ``(size // patch)²`` tokens (``vision_feature_select_strategy="full"``, no extra tokens).
"""

from __future__ import annotations

from typing import Any, Literal

from jarvis.data.templates import IMAGE_TOKEN

ImageMode = Literal["crop", "pad"]


def processor_class() -> type:
    from transformers import LlavaProcessor

    return LlavaProcessor


def image_processor(
    image_size: int, mean: list[float], std: list[float], mode: ImageMode = "pad"
) -> Any:
    """A PIL-backend ``LlavaImageProcessor`` equal to ``ImageTransform(image_size, mode, mean, std)``."""
    from transformers.image_utils import PILImageResampling
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    if mode not in ("crop", "pad"):
        raise ValueError(f"image mode must be 'crop' or 'pad', got {mode!r}")
    return LlavaImageProcessorPil(
        do_pad=mode == "pad",
        do_resize=True,
        size={"shortest_edge": int(image_size)},
        resample=PILImageResampling.BICUBIC,
        do_center_crop=True,
        crop_size={"height": int(image_size), "width": int(image_size)},
        do_rescale=True,
        rescale_factor=1 / 255,
        do_normalize=True,
        image_mean=[float(m) for m in mean],
        image_std=[float(s) for s in std],
        do_convert_rgb=True,
    )


def build_processor(
    tokenizer: Any,
    image_size: int,
    patch_size: int,
    mean: list[float],
    std: list[float],
    mode: ImageMode = "pad",
    num_additional_image_tokens: int = 0,
    vision_feature_select_strategy: str = "full",
) -> Any:
    """``LlavaProcessor`` with the tokenizer's chat template; ``<image>`` expands to the visual token count.

    The defaults fit our checkpoints (prefix tokens already dropped by the tower); the llava-hf export passes the
    tower's CLS count and ``"default"`` instead (``jarvis.model.export``).
    """
    if tokenizer.chat_template is None:
        raise ValueError("the tokenizer has no chat_template (jarvis.data.tokenizer.attach_chat_template adds one)")
    return processor_class()(
        image_processor=image_processor(image_size, mean, std, mode),
        tokenizer=tokenizer,
        patch_size=int(patch_size),
        vision_feature_select_strategy=vision_feature_select_strategy,
        chat_template=tokenizer.chat_template,
        image_token=IMAGE_TOKEN,
        num_additional_image_tokens=int(num_additional_image_tokens),
    )


def processor_for(model: Any, tokenizer: Any, mode: ImageMode = "pad") -> Any:
    """The processor of a ``JarvisForCausalLM``: its context tower's size, grid and normalisation."""
    tower = model.vision_tower
    return build_processor(
        tokenizer, tower.image_size, tower.image_size // tower.grid[0], tower.image_mean, tower.image_std, mode
    )


def generation_config_for(tokenizer: Any, max_new_tokens: int) -> Any:
    """Greedy decoding as ``jarvis evaluate`` runs it (benchmarks-spec §1), saved as ``generation_config.json``."""
    from transformers import GenerationConfig

    return GenerationConfig(
        do_sample=False,
        num_beams=1,
        max_new_tokens=int(max_new_tokens),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
