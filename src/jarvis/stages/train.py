"""Stages `pretrain` (stage 1: alignment, LLaVA or JARVIS, ZeRO-2) and `finetune` (stage 2: instruction tuning,
ZeRO-3). One module: both are "build model + data from the plan, then jarvis.training.run_training" (paper-spec
§8-9). Everything stage-specific (JEPA or not, which corpus, cached features or images) is decided by the plan.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from jarvis.io import write_json_atomic
from jarvis.plan import StagePlan, TrainSpec
from jarvis.stages.common import image_transform
from jarvis.tracking import plan_run as stage_run

log = logging.getLogger(__name__)


def build_model(spec: TrainSpec, tokenizer: Any) -> Any:
    from jarvis.model.configuration import JarvisConfig
    from jarvis.model.modeling import JarvisForCausalLM
    from jarvis.seeding import seed_everything

    seed_everything(spec.seed)  # right before construction: projector/mask-token/head init follow the run's seed
    if spec.model is None:  # stage 2: the stage-1 checkpoint without JEPA (target, z, head dropped)
        assert spec.init_from is not None
        config = JarvisConfig.from_pretrained(spec.init_from).plain()
        return JarvisForCausalLM.from_pretrained(spec.init_from, config=config)
    r = spec.model
    jepa: dict[str, Any] = {}
    if r.jepa is not None:
        jepa = dict(jepa_layer=r.jepa.layer, jepa_head_type=r.jepa.head, jepa_loss=r.jepa.loss, jepa_weight=r.jepa.weight)
    model = JarvisForCausalLM.from_components(
        r.llm_dir, r.vision.dir, r.target.dir if r.target else None, vision_options=r.vision.kwargs,
        target_options=r.target.kwargs if r.target else None, projector_type=r.projector,
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"), bidir_visual_attn=r.bidir_visual_attn, **jepa)
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        # attach_chat_template added tokens (e.g. `<image>`, `[INST]`) to a hub tokenizer: give them rows
        model.language_model.resize_token_embeddings(len(tokenizer))
    return model


def build_dataset(spec: TrainSpec, model: Any, tokenizer: Any) -> Any:
    from jarvis.data.dataset import FeatureCache, LlavaDataset, load_and_validate

    c = spec.corpus
    samples, report = load_and_validate(c.annotations, c.image_root, spec.max_dropped_fraction)
    log.info("%s: kept %d samples; drops %s", c.annotations, len(samples), report.get("counts", report))
    common = dict(tokenizer=tokenizer, image_root=c.image_root, num_image_tokens=model.vision_tower.num_patches,
                  max_length=spec.train.max_length, max_dropped_fraction=spec.max_dropped_fraction,
                  max_truncated_fraction=spec.max_truncated_fraction, validation_report=report)
    if spec.feature_cache is not None:
        # every shard verified (hash, dtype, shapes, finite) and made by the current settings, before training
        cache = FeatureCache(spec.feature_cache, expect=spec.feature_cache_expect)
        return LlavaDataset(samples, feature_cache=cache, **common)
    target = model.target_tower if spec.jepa is not None else None
    return LlavaDataset(samples, transform=image_transform(model.vision_tower, spec.train.image_mode, target),
                        **common)


def run(plan: StagePlan) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from jarvis.data.collate import Collator
    from jarvis.model.card import model_card
    from jarvis.model.freeze import set_trainable
    from jarvis.model.processing import generation_config_for, processor_for
    from jarvis.training import run_training

    spec: TrainSpec = plan.spec
    settings = spec.train  # built once, by the resolver
    tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer_dir)  # saved next to every checkpoint
    model = build_model(spec, tokenizer)
    set_trainable(model, spec.train.trainable)
    dataset = build_dataset(spec, model, tokenizer)
    collator = Collator(pad_token_id=tokenizer.pad_token_id)
    # Saved beside the weights: AutoProcessor (evaluation's pad mode), generation_config.json, README.md card.
    processor = processor_for(model, tokenizer, mode="pad")
    # The longest reference decoding length; `jarvis evaluate` sets each benchmark's own (jarvis.eval.decoding).
    from jarvis.eval.decoding import MAX_NEW_TOKENS

    model.generation_config = generation_config_for(tokenizer, max(MAX_NEW_TOKENS.values()))
    with stage_run(plan, world_size=settings.world_size) as (mlrun, work):
        metrics = run_training(model, dataset, collator, settings, out_dir=spec.out_dir, work_dir=work,
                               mlflow_run=mlrun, processing_class=processor, metrics_path=spec.metrics,
                               history_path=spec.history,
                               model_card=lambda m: model_card(plan, m, n_samples=len(dataset)))
        # Drop and truncation counts of the data (annotation validation, encoding, max_length) join the metrics.
        data_metrics = {f"data/{k}": v for k, v in dataset.stats.items()}
        metrics.update(data_metrics)
        if int(os.environ.get("RANK", "0")) == 0:
            write_json_atomic(spec.metrics, metrics)
            if mlrun is not None:
                from jarvis import tracking

                tracking.log_final_metrics(data_metrics, prefix="")
                # named by its path under data/ (<dataset>/<part>/<file>), e.g. synth/pretrain/...json
                tracking.log_dataset(spec.corpus.annotations, name="/".join(spec.corpus.annotations.parts[-3:]),
                                     context=spec.stage, counts={"samples": len(dataset), **dataset.stats})
    return metrics
