"""The curious cloud's observation log: every feature it receives, keyed by device.

The cloud appends what arrives (training and inference); the recorder writes one float16
feature array per tier plus a parquet index, which attacks read later without rerunning
anything. Training features are capped per device, keeping the latest rounds.
"""

from __future__ import annotations

from collections import defaultdict, deque
from dataclasses import dataclass

import numpy as np

__all__ = ["ObservationLog", "TierObservations"]

PHASES = {"training": 0, "inference": 1}


@dataclass
class TierObservations:
    """One tier's observations: row-aligned index columns and features (float16)."""

    phase: np.ndarray      # int8: 0 training, 1 inference
    round: np.ndarray      # int32 (-1 for inference)
    device_id: np.ndarray  # int32
    sample: np.ndarray     # int64: row in the device-private pool
    z: np.ndarray          # float16 (n, C, H, W)


class ObservationLog:
    """In-memory log held by the cloud.

    Parameters
    ----------
    phases
        Phases to keep (``"training"``, ``"inference"``).
    training_per_device
        Training features kept per device; older ones are dropped first.
    """

    def __init__(self, phases: tuple[str, ...], training_per_device: int) -> None:
        self.phases = set(phases)
        self.cap = training_per_device
        self._train: dict[int, deque] = defaultdict(lambda: deque(maxlen=max(self.cap, 1)))
        self._infer: dict[int, list] = defaultdict(list)
        self._tier: dict[int, str] = {}

    def add(self, phase: str, rnd: int, tier: str, device_ids: np.ndarray,
            samples: np.ndarray, z: np.ndarray) -> None:
        """Append rows ``z[i]`` received from ``device_ids[i]`` for ``samples[i]``."""
        if phase not in self.phases or (phase == "training" and self.cap == 0):
            return
        z16 = z.astype(np.float16)
        for i, dev in enumerate(device_ids.tolist()):
            self._tier[dev] = tier
            row = (rnd, int(samples[i]), z16[i])
            (self._train if phase == "training" else self._infer)[dev].append(row)

    def export(self) -> dict[str, TierObservations]:
        """Per tier, rows ordered by (phase, device, round) for reproducible files."""
        rows: dict[str, list] = defaultdict(list)
        for code, store in ((0, self._train), (1, self._infer)):
            for dev in sorted(store):
                rows[self._tier[dev]].extend((code, r, dev, s, z) for r, s, z in store[dev])
        out = {}
        for tier, items in sorted(rows.items()):
            phase, rnd, dev, sample, z = zip(*items, strict=True)
            out[tier] = TierObservations(np.asarray(phase, np.int8), np.asarray(rnd, np.int32),
                                         np.asarray(dev, np.int32), np.asarray(sample, np.int64),
                                         np.stack(z))
        return out
