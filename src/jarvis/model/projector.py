"""Projector P (vision -> LM) and JEPA target head g (LM -> target width) (paper-spec §2).

Module layouts match the reference's ``build_projector`` (aimagelab/JARVIS ``src/models/model_utils.py``)
so state-dict keys map 1:1: ``linear`` is a bare ``nn.Linear``; ``mlp`` is
``nn.Sequential(Linear, GELU, Linear)`` (keys ``.0.`` and ``.2.``). Both use PyTorch's default
``reset_parameters`` init, as the reference's ``init_projector`` does.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

ProjectorKind = Literal["linear", "mlp"]


def build_projector(
    kind: ProjectorKind,
    in_features: int,
    out_features: int,
    bias: bool = True,
    hidden_features: int | None = None,
) -> nn.Module:
    """``linear``: Linear(in→out); ``mlp``: Linear(in→hidden) → GELU → Linear(hidden→out), hidden = out by default."""
    if kind == "linear":
        return nn.Linear(in_features, out_features, bias=bias)
    if kind == "mlp":
        hidden = hidden_features or out_features
        return nn.Sequential(
            nn.Linear(in_features, hidden, bias=bias),
            nn.GELU(),
            nn.Linear(hidden, out_features, bias=bias),
        )
    raise ValueError(f"unknown projector kind {kind!r}; expected 'linear' or 'mlp'")


def reset_projector(module: nn.Module) -> None:
    """Re-run PyTorch's default init on every Linear of ``module`` (reference ``init_projector``)."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            sub.reset_parameters()
