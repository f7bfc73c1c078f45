"""The curious cloud's observation log: every feature it receives, keyed by device.

The cloud appends what arrives (training and inference); the recorder writes one feature
array per tier plus a parquet index, which attacks read later without rerunning anything.
Features are kept as float16 (half the memory and disk) unless they outgrow its range:
an edge whose features grew past 65,504 (a defense it learned to out-shout) is logged
in float32, never as infinities. Training features are capped per device, keeping the
latest rounds.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

__all__ = ["ObservationLog", "TierObservations", "compact", "merge_observations"]

PHASES = {"training": 0, "inference": 1}
_HALF_MAX = float(np.finfo(np.float16).max)


def compact(z: np.ndarray) -> np.ndarray:
    """``z`` as float16 if its values fit that range (NaN aside), else as float32.

    A chunk's values decide; concatenating chunks of both then gives float32, so a
    tier's log changes precision only where some features needed it.
    """
    too_big = float(np.abs(z).max(initial=0.0)) > _HALF_MAX   # NaN: False; inf: True
    return z.astype(np.float32 if too_big else np.float16)


@dataclass
class TierObservations:
    """One tier's observations: row-aligned index columns and features (float16, or
    float32 where float16 cannot hold them)."""

    phase: np.ndarray      # int8: 0 training, 1 inference
    round: np.ndarray      # int32 (-1 for inference)
    device_id: np.ndarray  # int32
    sample: np.ndarray     # int64: row in the device-private pool
    z: np.ndarray          # float16 or float32 (n, C, H, W)


class ObservationLog:
    """The cloud's buffer of features received since the last :meth:`drain`.

    The run drains it at every round end (and after inference) and keeps the chunks in
    the run directory, so a cloud that dies loses at most the round in progress, which
    the run repeats. :func:`merge_observations` applies the per-device cap.

    Parameters
    ----------
    phases
        Phases to keep (``"training"``, ``"inference"``).
    """

    def __init__(self, phases: tuple[str, ...]) -> None:
        self.phases = set(phases)
        self._rows: dict[str, list[tuple]] = defaultdict(list)

    def add(self, phase: str, rnd: int, tier: str, device_ids: np.ndarray,
            samples: np.ndarray, z: np.ndarray) -> None:
        """Append rows ``z[i]`` received from ``device_ids[i]`` for ``samples[i]``."""
        if phase not in self.phases:
            return
        self._rows[tier].append((PHASES[phase], rnd, device_ids.astype(np.int32),
                                 samples.astype(np.int64), compact(z)))

    def drain(self) -> dict[str, TierObservations]:
        """Everything received since the last drain, per tier, in arrival order."""
        out = {}
        for tier, chunks in sorted(self._rows.items()):
            out[tier] = TierObservations(
                np.concatenate([np.full(len(d), ph, np.int8) for ph, _, d, _, _ in chunks]),
                np.concatenate([np.full(len(d), r, np.int32) for _, r, d, _, _ in chunks]),
                np.concatenate([d for _, _, d, _, _ in chunks]),
                np.concatenate([s for _, _, _, s, _ in chunks]),
                np.concatenate([z for *_, z in chunks]))
        self._rows.clear()
        return out


def merge_observations(chunks: list[dict[str, TierObservations]],
                       training_per_device: int) -> dict[str, TierObservations]:
    """Drained chunks (in the order they were drained) as the log a run keeps.

    Per tier, rows are ordered by (phase, device, arrival); of each device's training
    rows only the latest ``training_per_device`` are kept.
    """
    out = {}
    for tier in sorted({t for c in chunks for t in c}):
        parts = [c[tier] for c in chunks if tier in c]
        obs = TierObservations(*(np.concatenate([getattr(p, f) for p in parts])
                                 for f in ("phase", "round", "device_id", "sample", "z")))
        order = np.lexsort((np.arange(len(obs.phase)), obs.device_id, obs.phase))
        phase, dev = obs.phase[order], obs.device_id[order]
        # rank of each row from the end within its (phase, device) group
        key = phase.astype(np.int64) * (1 << 32) + dev
        last = np.r_[key[1:] != key[:-1], True]
        from_end = _group_ends(last) - np.arange(len(key))
        keep = (phase == PHASES["training"]) & (from_end < training_per_device)
        # inference: each (device, sample) once, the last received (a job served again
        # after its node died may have reached the cloud twice)
        inf = np.flatnonzero(phase == PHASES["inference"])
        pairs = np.stack([dev[inf], obs.sample[order][inf]], axis=1)
        _, first_from_end = np.unique(pairs[::-1], axis=0, return_index=True)
        keep[inf[len(inf) - 1 - first_from_end]] = True
        sel = order[keep]
        out[tier] = TierObservations(obs.phase[sel], obs.round[sel], obs.device_id[sel],
                                     obs.sample[sel], obs.z[sel])
    return out


def _group_ends(last: np.ndarray) -> np.ndarray:
    """For each position, the index of the last row of its group (``last`` marks them)."""
    ends = np.flatnonzero(last)
    return ends[np.searchsorted(ends, np.arange(len(last)))]


def save_chunk(path, chunk: dict[str, TierObservations]) -> None:
    """Write drained observations to one ``.npz`` file atomically (temp file, rename)."""
    import os
    from pathlib import Path
    path = Path(path)
    arrays = {f"{tier}::{f}": getattr(obs, f) for tier, obs in chunk.items()
              for f in ("phase", "round", "device_id", "sample", "z")}
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
    os.replace(tmp, path)


def load_chunk(path) -> dict[str, TierObservations]:
    """Read a file written by :func:`save_chunk`."""
    with np.load(path) as data:
        tiers = sorted({k.split("::")[0] for k in data.files})
        return {t: TierObservations(*(data[f"{t}::{f}"] for f in
                                      ("phase", "round", "device_id", "sample", "z")))
                for t in tiers}
