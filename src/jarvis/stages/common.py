"""The image transforms of caching, training, evaluation and chat (one definition, paper-spec §3)."""

from __future__ import annotations

from typing import Any, Literal


def image_transform(tower: Any, mode: Literal["crop", "pad"], target: Any | None = None) -> Any:
    """Context transform for ``tower``; with ``target``, one crop normalised twice (paper-spec §3)."""
    from jarvis.data.images import ContextTargetTransform, ImageTransform

    ctx = ImageTransform(tower.image_size, mode, tower.image_mean, tower.image_std)
    if target is None:
        return ctx
    return ContextTargetTransform(ctx, target.image_mean, target.image_std,
                                  target_size=target.image_size if target.image_size != tower.image_size else None)
