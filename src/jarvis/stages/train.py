"""Stages `pretrain` (stage 1: alignment, LLaVA or JARVIS, ZeRO-2) and `finetune` (stage 2: instruction tuning,
ZeRO-3). One module: both are "build model + data from params, then jarvis.training.run_training" (paper-spec §8-9).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Literal

from jarvis import paths
from jarvis.config import Params, experiment_refs
from jarvis.io import write_json_atomic
from jarvis.stages.common import corpus, image_transform, stage_params_view, stage_run

log = logging.getLogger(__name__)
Stage = Literal["pretrain", "finetune"]


def train_settings(params: Params, exp: str, stage: Stage) -> Any:
    """params.yaml -> jarvis.training.TrainSettings (the one translation point, house rule 5)."""
    from jarvis.masking import MaskSpec
    from jarvis.training import TrainSettings

    s = params.stage_training(exp, stage)
    recipe = params.jepa_recipe(exp) if stage == "pretrain" else None  # JEPA is stage 1 only (paper-spec §8)
    mask = None
    if recipe is not None:
        m = recipe.mask
        mask = MaskSpec(num_targets=m.num_targets, target_scale=tuple(m.target_scale),
                        context_scale=tuple(m.context_scale), aspect_ratio=tuple(m.aspect_ratio),
                        min_keep=m.min_keep, targets_may_overlap=m.targets_may_overlap)
    return TrainSettings(
        stage=stage, seed=params.seed, learning_rate=s.learning_rate, per_device_batch=s.per_device_batch,
        grad_accum=s.grad_accum, world_size=s.world_size, epochs=s.epochs,
        max_steps=s.max_steps if s.max_steps > 0 else None, warmup_ratio=s.warmup_ratio,
        lr_scheduler=s.lr_scheduler, weight_decay=s.weight_decay, max_grad_norm=s.max_grad_norm, bf16=s.bf16,
        gradient_checkpointing=s.gradient_checkpointing, zero_stage=s.zero_stage, save_steps=s.save_steps,
        logging_steps=s.logging_steps, jepa_skip_prob=recipe.skip_prob if recipe else 0.0, mask_spec=mask,
    )


def build_model(params: Params, exp: str, stage: Stage, tokenizer: Any) -> Any:
    from jarvis.model.configuration import JarvisConfig
    from jarvis.model.modeling import JarvisForCausalLM
    from jarvis.seeding import seed_everything
    from jarvis.stages.download import tower_selection

    e = params.experiment(exp)
    seed_everything(params.seed)  # right before construction: projector init is reproducible (style §1.6)
    if stage == "finetune":
        ckpt = paths.checkpoint_dir(exp, "pretrain")
        config = JarvisConfig.from_pretrained(ckpt).plain()  # stage 2 has no JEPA: drop target, z, head
        return JarvisForCausalLM.from_pretrained(ckpt, config=config)
    recipe = params.jepa_recipe(exp)
    jepa_kwargs: dict[str, Any] = {}
    if recipe is not None:
        jepa_kwargs = dict(jepa_layer=params.llms[e.llm].jepa_layer, jepa_head_type=recipe.head,
                           jepa_loss=recipe.loss, jepa_weight=recipe.weight)
    model = JarvisForCausalLM.from_components(
        paths.llm_dir(e.llm), paths.tower_dir(e.vision),
        paths.tower_dir(recipe.target) if recipe else None,
        vision_options=tower_selection(params.towers[e.vision]),
        target_options=tower_selection(params.towers[recipe.target]) if recipe else None,
        projector_type=e.projector, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        bidir_visual_attn=e.bidir_visual_attn, **jepa_kwargs,
    )
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        # attach_chat_template added tokens (e.g. `<image>`, `[INST]`) to a hub tokenizer: give them rows
        model.language_model.resize_token_embeddings(len(tokenizer))
    return model


def build_dataset(params: Params, exp: str, stage: Stage, model: Any, tokenizer: Any) -> Any:
    from jarvis.data.dataset import FeatureCache, LlavaDataset, load_and_validate

    e = params.experiment(exp)
    s = params.stage_training(exp, stage)
    spec = params.datasets[e.data]
    c = corpus(params, e.data, "pretrain" if stage == "pretrain" else "instruct")
    samples, report = load_and_validate(c.annotations, c.image_root, spec.max_dropped_fraction)
    log.info("%s: kept %d samples; drops %s", c.annotations, len(samples), report.get("counts", report))
    common = dict(tokenizer=tokenizer, image_root=c.image_root, num_image_tokens=model.vision_tower.num_patches,
                  max_length=s.max_length, max_dropped_fraction=spec.max_dropped_fraction,
                  max_truncated_fraction=spec.max_truncated_fraction, validation_report=report)
    if s.use_feature_cache:
        recipe = params.jepa_recipe(exp) if stage == "pretrain" else None
        from jarvis.stages.cache_features import expected_index

        target = recipe.target if recipe else None
        key = paths.cache_key(e.data, e.vision, target)
        # every shard verified (hash, dtype, shapes, finite) and made by the current params, before training
        cache = FeatureCache(paths.features_dir(key), expect=expected_index(params, e.data, e.vision, target))
        return LlavaDataset(samples, feature_cache=cache, **common)
    target = model.target_tower if stage == "pretrain" else None
    return LlavaDataset(samples, transform=image_transform(model.vision_tower, s.image_mode, target), **common)


def run(params: Params, exp: str, stage: Stage) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from jarvis.data.collate import Collator
    from jarvis.model.card import model_card
    from jarvis.model.freeze import set_trainable
    from jarvis.model.processing import generation_config_for, processor_for
    from jarvis.training import run_training

    e = params.experiment(exp)
    settings = train_settings(params, exp, stage)
    src = paths.llm_dir(e.llm) if stage == "pretrain" else paths.checkpoint_dir(exp, "pretrain")
    tokenizer = AutoTokenizer.from_pretrained(src)  # saved next to every checkpoint (processing_class)
    model = build_model(params, exp, stage, tokenizer)
    set_trainable(model, params.stage_training(exp, stage).trainable)
    dataset = build_dataset(params, exp, stage, model, tokenizer)
    collator = Collator(pad_token_id=tokenizer.pad_token_id)
    # Saved beside the weights: AutoProcessor (evaluation's pad mode), generation_config.json, README.md card.
    processor = processor_for(model, tokenizer, mode="pad")
    # The longest reference decoding length; `jarvis evaluate` sets each benchmark's own (jarvis.eval.decoding).
    from jarvis.eval.decoding import MAX_NEW_TOKENS

    model.generation_config = generation_config_for(tokenizer, max(MAX_NEW_TOKENS.values()))
    view = stage_params_view(params, experiment_refs(params, exp, stage))
    with stage_run(exp, stage, view, world_size=settings.world_size) as (mlrun, work):
        metrics = run_training(model, dataset, collator, settings, out_dir=paths.checkpoint_dir(exp, stage),
                               work_dir=work, mlflow_run=mlrun, processing_class=processor,
                               metrics_path=paths.metrics_file(exp, stage),
                               history_path=paths.history_file(exp, stage),
                               model_card=lambda m: model_card(params, exp, stage, m, n_samples=len(dataset)))
        # Drop and truncation counts of the data (annotation validation, encoding, max_length) join the metrics.
        data_metrics = {f"data/{k}": v for k, v in dataset.stats.items()}
        metrics.update(data_metrics)
        if int(os.environ.get("RANK", "0")) == 0:
            write_json_atomic(paths.metrics_file(exp, stage), metrics)
            if mlrun is not None:
                from jarvis import tracking

                tracking.log_final_metrics(data_metrics, prefix="")
    return metrics
