"""Seeds and generators. The only module allowed to touch global RNG state (house rule 3)."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def seed_for(*parts: object) -> int:
    """Deterministic 63-bit seed from any tuple of parts, e.g. ``seed_for(42, "pretrain", rank, step, micro)``.

    A hash (not a sum) so that (1, 23) and (12, 3) give unrelated streams.
    """
    key = "\x1f".join(repr(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "little") >> 1


def make_generator(*parts: object) -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with ``seed_for(*parts)``."""
    g = torch.Generator(device="cpu")
    g.manual_seed(seed_for(*parts))
    return g


def numpy_generator(*parts: object) -> np.random.Generator:
    """A numpy PCG64 generator seeded with ``seed_for(*parts)``."""
    return np.random.Generator(np.random.PCG64(seed_for(*parts)))


def seed_everything(seed: int) -> None:
    """Seed the global RNGs once per process, right before model construction (projector init)."""
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
