"""Freeze policy: which parts of a ``JarvisForCausalLM`` train in a stage (paper-spec §8).

Stage 1 (JARVIS): ``{"projector", "mask_token", "jepa_head"}`` — towers and the whole LLM frozen
(the reference's ``--train_proj_only``). Stage 2: ``{"projector", "llm"}``. ``"predictor"`` (the
first ℓ decoder layers) is the paper's "training the predictor" option (paper-spec §11.1 item 1).
Every decision is logged module by module, as prismatic's ``freeze_backbones`` does.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from torch import nn

logger = logging.getLogger(__name__)

GROUPS: dict[str, str] = {
    "projector": "projector",
    "mask_token": "mask_token",
    "jepa_head": "jepa_head",
    "llm": "language_model",
    "vision": "vision_tower",
    "target": "target_tower",
}
EXTRA_GROUPS = ("predictor",)
STAGE1_GROUPS = frozenset({"projector", "mask_token", "jepa_head"})
STAGE2_GROUPS = frozenset({"projector", "llm"})


def _predictor_layers(model: nn.Module) -> nn.Module:
    layer = model.config.jepa_layer
    layers = model.language_model.get_decoder().layers
    n = len(layers) if layer == -1 else layer
    return nn.ModuleList(list(layers[:n]))


def set_trainable(
    model: nn.Module, groups: Iterable[str], strict: bool = False
) -> dict[str, dict[str, object]]:
    """Freeze everything, then unfreeze ``groups``; return and log {module: {trainable, n_params}}.

    A group whose module the model lacks (e.g. ``jepa_head`` on a plain model) is logged as absent,
    or raises with ``strict=True``.
    """
    wanted = set(groups)
    unknown = wanted - set(GROUPS) - set(EXTRA_GROUPS)
    if unknown:
        raise ValueError(
            f"unknown trainable groups {sorted(unknown)}; allowed: {sorted(GROUPS) + list(EXTRA_GROUPS)}"
        )
    model.requires_grad_(False)
    table: dict[str, dict[str, object]] = {}
    for group, attr in GROUPS.items():
        module = getattr(model, attr, None)
        if module is None:
            if group in wanted and strict:
                raise ValueError(f"trainable group {group!r} requested but the model has no {attr}")
            if group in wanted:
                logger.warning("trainable group %r requested but the model has no %s; skipped", group, attr)
            continue
        if group in wanted:
            module.requires_grad_(True)
        table[attr] = {"trainable": group in wanted, "n_params": sum(p.numel() for p in module.parameters())}
    if "predictor" in wanted:
        layers = _predictor_layers(model)
        layers.requires_grad_(True)
        table["language_model.predictor_layers"] = {
            "trainable": True,
            "n_params": sum(p.numel() for p in layers.parameters()),
        }
    model.train(model.training)  # re-apply the eval mode of frozen towers
    _log_table(table)
    return table


def _log_table(table: dict[str, dict[str, object]]) -> None:
    width = max(len(k) for k in table) if table else 6
    lines = [f"{'module':<{width}}  trainable  n_params"]
    lines += [f"{k:<{width}}  {str(v['trainable']):<9}  {v['n_params']:,}" for k, v in table.items()]
    logger.info("trainable parameters:\n%s", "\n".join(lines))
