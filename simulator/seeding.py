"""Derived seeds: one root seed, a stable child seed per (component, device, round)."""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch

__all__ = ["derive_seed", "generator", "rng", "seeded"]


def _key(part: int | str) -> int:
    return part if isinstance(part, int) else zlib.crc32(part.encode())


def derive_seed(seed: int, *keys: int | str) -> int:
    """A 63-bit seed derived from ``seed`` and ``keys`` with numpy's SeedSequence.

    Strings are hashed with CRC-32, so keys are stable across processes and runs
    (Python's ``hash`` is salted per process).
    """
    seq = np.random.SeedSequence(seed, spawn_key=tuple(_key(k) for k in keys))
    hi, lo = (int(v) for v in seq.generate_state(2, dtype=np.uint32))
    return (hi << 31) ^ lo


def rng(seed: int, *keys: int | str) -> np.random.Generator:
    """A numpy Generator for one component."""
    return np.random.default_rng(derive_seed(seed, *keys))


def generator(seed: int, *keys: int | str) -> torch.Generator:
    """A torch Generator (CPU) for one component."""
    return torch.Generator().manual_seed(derive_seed(seed, *keys))


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's global CPU RNG seeded, restoring it afterwards.

    For layers that draw from the global RNG (Dropout, reparameterised sampling), so a
    run is reproducible whatever other work shares the process.
    """
    # Only the CPU generator: ``torch.manual_seed`` also queues seeding of every lazy
    # accelerator module, recording a stack trace each call (2 ms in a CUDA build of
    # torch, thousands of calls per round at fleet scale); the draws are the same.
    state = torch.random.get_rng_state()
    torch.random.default_generator.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)
