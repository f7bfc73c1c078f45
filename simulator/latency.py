"""Simulated device time on a virtual clock (nothing sleeps).

Per inference sample: edge compute (FLOPs = 2 x MACs at the device's GFLOP/s) plus the
upload of the feature over the uplink. Per training round (split learning): each local
step runs forward and backward (about 3 x forward FLOPs), uploads features and downloads
their gradients (the same size, over the same link).
"""

from __future__ import annotations

from simulator.scenario import DeviceProfile, Training
from strategies.models import EdgeCost

__all__ = ["inference_latency", "training_seconds"]


def inference_latency(cost: EdgeCost, profile: DeviceProfile) -> dict[str, float]:
    """Milliseconds per sample: ``compute_ms``, ``uplink_ms`` and their sum ``latency_ms``."""
    compute = 2.0 * cost.macs / (profile.compute_gflops * 1e9)
    uplink = cost.bytes * 8.0 / (profile.uplink_mbps * 1e6)
    return {"compute_ms": 1e3 * compute, "uplink_ms": 1e3 * uplink,
            "latency_ms": 1e3 * (compute + uplink)}


def training_seconds(cost: EdgeCost, profile: DeviceProfile, training: Training) -> float:
    """Simulated seconds one device spends in a split-training round."""
    per_sample = (3 * 2.0 * cost.macs / (profile.compute_gflops * 1e9)
                  + 2 * cost.bytes * 8.0 / (profile.uplink_mbps * 1e6))
    return training.local_steps * training.batch_size * per_sample
