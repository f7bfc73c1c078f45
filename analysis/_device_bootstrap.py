"""A paired bootstrap over a tier's devices, shared by every point of a sweep.

Every point of a sweep trains the same devices (same seed and partition), so one
resample of the tier's device ids serves all points of a replicate: differences
between points keep their pairing. Per point the tier means are recomputed from the
per-device records: ``accuracy`` from ``devices.parquet`` and, per leakage metric,
the per-device worst case over attacks that ``leakage.parquet`` records
(``scope == "device"``, ``attack == "worst_case"``; the tier's ``*_worst_case_mean``
is their mean). Private helper of :mod:`analysis.matched`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.rundir import WORST_CASE, _read_leakage

__all__ = ["TierReplicates", "tier_replicates"]


@dataclass(frozen=True)
class TierReplicates:
    """Per point of one tier, its tier means in each replicate.

    ``note`` says how the replicates were drawn, or why there are none
    (``available`` is then False and every interval is NaN).
    """

    note: str
    acc: dict[Any, np.ndarray] = field(default_factory=dict)   # point -> (R,)
    leak: dict[Any, np.ndarray] = field(default_factory=dict)  # point -> (R, M)

    @property
    def available(self) -> bool:
        return bool(self.acc)

    def accuracy(self, points: Sequence[Any]) -> np.ndarray:
        """``(replicates, len(points))`` tier mean accuracies."""
        return np.stack([self.acc[p] for p in points], axis=1)

    def leakage(self, points: Sequence[Any]) -> np.ndarray:
        """``(replicates, len(points), metrics)`` tier mean worst-case leakage."""
        return np.stack([self.leak[p] for p in points], axis=1)


def tier_replicates(rows: pd.DataFrame, tier: str, metrics: Sequence[str],
                    replicates: int, rng: np.random.Generator,
                    root: Path | None = None) -> TierReplicates:
    """Replicates for the points of ``rows`` (one sweep row per point of ``tier``).

    ``root``: the sweep directory, where a point's ``run_dir`` is looked up by name
    when the recorded path no longer exists (a moved sweep folder).
    """
    if rows.empty or not {"point", "run_dir"} <= set(rows.columns):
        return TierReplicates("no interval: the table has no point/run_dir columns")
    frames: dict[Any, pd.DataFrame] = {}
    missing = []
    for point, run_dir in rows.drop_duplicates("point")[["point", "run_dir"]].values:
        frame = _device_values(_resolve(run_dir, root), tier, metrics)
        if isinstance(frame, str):
            missing.append(frame)
        else:
            frames[point] = frame
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        return TierReplicates(f"no interval: {missing[0]}{more}")
    ids = sorted(set().union(*(f.index for f in frames.values())))
    if not ids:
        return TierReplicates(f"no interval: no device of tier {tier!r} recorded")
    counts = rng.multinomial(len(ids), np.full(len(ids), 1.0 / len(ids)),
                             size=replicates).astype(float)
    acc = {p: _means(counts, f["accuracy"].reindex(ids)) for p, f in frames.items()}
    leak = {p: np.stack([_means(counts, f[m].reindex(ids)) for m in metrics], axis=1)
            for p, f in frames.items()}
    return TierReplicates(f"paired bootstrap over {len(ids)} devices, {replicates} "
                          "replicates, 2.5-97.5 percentiles", acc, leak)


def _resolve(run_dir: Any, root: Path | None) -> Path:
    run = Path(str(run_dir))
    if not run.is_dir() and root is not None:
        return root / run.name
    return run


def _device_values(run: Path, tier: str, metrics: Sequence[str]) -> pd.DataFrame | str:
    """Per device of ``tier``: ``accuracy`` and each metric's worst case, indexed by
    ``device_id``; or why they cannot be read."""
    file = run / "devices.parquet"
    if not file.is_file():
        return f"{run} has no devices.parquet"
    try:
        devices = pd.read_parquet(file, columns=["device_id", "tier", "accuracy"])
        _, long = _read_leakage(run)
    except (OSError, ValueError, KeyError) as err:  # RunDirectoryError is a ValueError
        return f"cannot read {run}: {err}"
    if long is None:
        return f"{run} has no leakage.parquet"
    devices = devices[devices["tier"].astype(str) == tier]
    acc = devices.set_index(devices["device_id"].astype("int64"))["accuracy"]
    worst = long[(long["scope"] == "device") & (long["attack"] == WORST_CASE)
                 & (long["tier"].astype(str) == tier) & long["metric"].isin(metrics)]
    wide = worst.assign(device_id=worst["device_id"].astype("int64")).pivot_table(
        index="device_id", columns="metric", values="value", aggfunc="first")
    out = pd.DataFrame({"accuracy": acc}).join(wide.reindex(columns=list(metrics)),
                                               how="outer")
    return out.astype(float)


def _means(counts: np.ndarray, values: pd.Series) -> np.ndarray:
    """Weighted means of ``values`` (NaN: no record) under each replicate's counts."""
    v = values.to_numpy(float)
    ok = np.isfinite(v)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (counts @ np.where(ok, v, 0.0)) / (counts @ ok.astype(float))

