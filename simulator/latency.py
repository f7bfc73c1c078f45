"""Simulated device time on a virtual clock (nothing sleeps).

Per inference sample: edge compute (FLOPs = 2 x MACs at the device's GFLOP/s) plus the
upload of the feature over the uplink. Per training round (split learning): each local
step runs forward and backward (about 3 x forward FLOPs), uploads features and downloads
their gradients (the same size, over the same link).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from simulator.scenario import Training

__all__ = ["inference_latency", "training_bytes", "training_seconds"]


class _Cost(Protocol):
    """What the clock needs of an edge model (an ``EdgeCost`` or a ladder rung)."""

    @property
    def macs(self) -> int: ...
    @property
    def bytes(self) -> int: ...


class _Hardware(Protocol):
    """What the clock needs of a device (its ``Hardware``)."""

    @property
    def compute_gflops(self) -> float: ...
    @property
    def uplink_mbps(self) -> float: ...


def inference_latency(cost: _Cost, profile: _Hardware) -> dict[str, float]:
    """Milliseconds per sample: ``compute_ms``, ``uplink_ms`` and their sum ``latency_ms``."""
    compute = 2.0 * cost.macs / (profile.compute_gflops * 1e9)
    uplink = cost.bytes * 8.0 / (profile.uplink_mbps * 1e6)
    return {"compute_ms": 1e3 * compute, "uplink_ms": 1e3 * uplink,
            "latency_ms": 1e3 * (compute + uplink)}


def training_seconds(cost: _Cost, profile: _Hardware, training: Training) -> float:
    """Simulated seconds one device spends in a split-training round."""
    per_sample = (3 * 2.0 * cost.macs / (profile.compute_gflops * 1e9)
                  + 2 * cost.bytes * 8.0 / (profile.uplink_mbps * 1e6))
    return training.local_steps * training.batch_size * per_sample


def training_bytes(cost: _Cost, training: Training) -> int:
    """Feature bytes one device uploads in a full split-training round."""
    return training.local_steps * training.batch_size * cost.bytes
