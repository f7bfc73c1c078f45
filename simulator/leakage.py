"""Leakage records: per image, then per device and per tier with 95% intervals.

Turns :class:`simulator.adversary.TierLeakage` results into the run directory's tables:
``leakage_images`` (one row per reconstructed image), wide per-device columns
``<metric>_<attack>`` (plus ``worst_case``: for each device and metric, the most
leaking attack's value) and per-tier ``<metric>_<attack>_mean/_lo/_hi`` with information
metrics.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.metrics import mean_ci
from simulator.adversary import TierLeakage

__all__ = ["device_leakage", "images_table", "merge_leakage", "save_reconstructions",
           "strip_leakage", "tier_leakage"]

_METRICS = {"ssim": "ssim", "psnr": "psnr", "mse": "mse", "attack_acc": "eval_correct",
            "nn_ident": "nn_correct"}
_LOWER_LEAKS = {"mse"}  # every other metric: higher = more leakage


def images_table(results: list[TierLeakage]) -> pd.DataFrame:
    frames = [pd.DataFrame({"tier": r.tier, **r.images}) for r in results if len(r.images["ssim"])]
    if not frames:
        return pd.DataFrame(columns=["tier", "attack", "threat_model", "device_id", "sample",
                                     *set(_METRICS.values())])
    out = pd.concat(frames, ignore_index=True)
    out["eval_correct"] = out["eval_correct"].astype(bool)
    out["nn_correct"] = out["nn_correct"].astype(bool)
    return out


def device_leakage(images: pd.DataFrame) -> pd.DataFrame:
    """One row per device: each attack's means (SSIM with its interval) and worst case."""
    rows: dict[int, dict[str, float]] = {}
    for (attack, device), g in images.groupby(["attack", "device_id"], sort=True):
        row = rows.setdefault(int(device), {"device_id": int(device)})
        for name, col in _METRICS.items():
            row[f"{name}_{attack}"] = float(g[col].mean())
        _, lo, hi = mean_ci(g["ssim"].to_numpy())
        row[f"ssim_{attack}_lo"], row[f"ssim_{attack}_hi"] = lo, hi
        row[f"recognisable_{attack}"] = float((g["ssim"] > 0.3).mean())
    frame = pd.DataFrame(list(rows.values()))
    attacks = sorted(images["attack"].unique())
    if len(frame) and attacks:
        # The adversary may pick a different attack per goal (the sharpest image need
        # not be the most identifiable), so each metric's worst case is its own; the
        # SSIM interval and ``worst_case_attack`` follow the highest-SSIM attack.
        ssim = frame[[f"ssim_{a}" for a in attacks]].to_numpy()
        worst = np.nanargmax(np.where(np.isnan(ssim), -np.inf, ssim), axis=1)
        frame["worst_case_attack"] = [attacks[i] for i in worst]
        for name in [*_METRICS, "recognisable"]:
            values = frame[[f"{name}_{a}" for a in attacks]].to_numpy()
            pick = np.nanmin if name in _LOWER_LEAKS else np.nanmax
            frame[f"{name}_worst_case"] = pick(values, axis=1)
        for side in ("lo", "hi"):
            values = frame[[f"ssim_{a}_{side}" for a in attacks]].to_numpy()
            frame[f"ssim_worst_case_{side}"] = values[np.arange(len(frame)), worst]
    return frame


def tier_leakage(devices: pd.DataFrame, results: list[TierLeakage]) -> pd.DataFrame:
    """Per tier: device-level means with 95% intervals, and information metrics."""
    attacks = sorted({c[len("ssim_"):] for c in devices.columns
                      if c.startswith("ssim_") and not c.endswith(("_lo", "_hi"))})
    rows = []
    for r in results:
        g = devices[devices["tier"] == r.tier]
        row: dict[str, object] = {"tier": r.tier, **r.information}
        for attack in attacks:
            for name in (*_METRICS, "recognisable"):
                col = f"{name}_{attack}"
                if col in g:
                    mean, lo, hi = mean_ci(g[col].dropna().to_numpy())
                    row.update({f"{col}_mean": mean, f"{col}_lo": lo, f"{col}_hi": hi})
        rows.append(row)
    return pd.DataFrame(rows)


_PREFIXES = tuple(f"{m}_" for m in (*_METRICS, "recognisable")) + (
    "worst_case_attack", "dcor2_bc", "mi_", "nonzero_", "eval_acc_real", "chance",
    "info_samples")


def strip_leakage(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` without the columns an earlier attack pass added."""
    return frame[[c for c in frame.columns if not c.startswith(_PREFIXES)]]


def merge_leakage(base: pd.DataFrame, extra: pd.DataFrame, key: str) -> pd.DataFrame:
    """``base`` without earlier leakage columns, joined with ``extra`` on ``key``."""
    base = strip_leakage(base)
    return base.merge(extra, on=key, how="left") if len(extra) else base


def save_reconstructions(folder: Path, results: list[TierLeakage]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for r in results:
        for label, arrays in r.reconstructions.items():
            np.savez_compressed(folder / f"{label}__{r.tier}.npz", **arrays)
