"""Display tables built from the recorded tier and device tables (no recomputation).

Each returns a plain DataFrame (numbers, or ``mean [lo, hi]`` strings where an interval
was recorded) that the report renders to HTML and Markdown.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.rundir import attacks_in

__all__ = ["collapse_note", "information_table", "leakage_table", "tier_summary",
           "worst_case_devices"]

_INFORMATION = ("dcor2_bc", "mi_nats", "mi_paper_nats", "nonzero_per_sample",
                "nonzero_fraction", "eval_acc_real", "chance", "mi_estimator")
_KEYS = ("run", "point", "tier")


def with_ci(mean: float, lo: float, hi: float) -> str:
    """``"0.878 [0.806, 0.949]"``; the bare mean (4 digits) when no interval exists."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "-"
    if lo is None or hi is None or math.isnan(float(lo)) or math.isnan(float(hi)):
        return f"{float(mean):.4g}"
    return f"{float(mean):.3g} [{float(lo):.3g}, {float(hi):.3g}]"


def _ci_column(tiers: pd.DataFrame, prefix: str) -> list[str]:
    lo, hi = tiers.get(f"{prefix}_lo"), tiers.get(f"{prefix}_hi")
    return [with_ci(m, np.nan if lo is None else lo.iloc[i],
                    np.nan if hi is None else hi.iloc[i])
            for i, m in enumerate(tiers[f"{prefix}_mean"])]


def _keys(tiers: pd.DataFrame) -> pd.DataFrame:
    return tiers[[k for k in _KEYS if k in tiers.columns]].reset_index(drop=True)


def tier_summary(tiers: pd.DataFrame) -> pd.DataFrame:
    """Per tier: utility, cost, worst-case leakage and information, side by side."""
    t = tiers.reset_index(drop=True)
    out = _keys(t)
    for col in ("devices", "encoder", "defense"):
        if col in t:
            out[col] = t[col]
    if "accuracy_mean" in t:
        out["accuracy (95% CI)"] = _ci_column(t, "accuracy")
    names = {"params": "params", "macs": "MACs", "bytes_per_sample": "bytes/sample",
             "latency_ms_mean": "latency ms"}
    for col, label in names.items():
        if col in t:
            out[label] = t[col]
    attacks = attacks_in(t)
    if attacks:
        attack = "worst_case" if "worst_case" in attacks else attacks[0]
        out[f"SSIM {attack} (95% CI)"] = _ci_column(t, f"ssim_{attack}")
        if f"attack_acc_{attack}_mean" in t:
            out[f"attack acc {attack}"] = t[f"attack_acc_{attack}_mean"]
    for col in ("dcor2_bc", "mi_nats"):
        if col in t:
            out[col] = t[col]
    return out


def leakage_table(tiers: pd.DataFrame) -> pd.DataFrame:
    """One row per (tier, attack): SSIM with its interval, PSNR, MSE, attack acc."""
    t = tiers.reset_index(drop=True)
    rows = []
    for attack in attacks_in(t):
        part = _keys(t)
        part["attack"] = attack
        part["SSIM (95% CI)"] = _ci_column(t, f"ssim_{attack}")
        for metric, label in (("psnr", "PSNR dB"), ("mse", "MSE"),
                              ("recognisable", "SSIM>0.3"), ("nn_ident", "NN ident")):
            col = f"{metric}_{attack}_mean"
            part[label] = t[col] if col in t else np.nan
        if f"attack_acc_{attack}_mean" in t:
            part["attack acc (95% CI)"] = _ci_column(t, f"attack_acc_{attack}")
        # rows of runs/points/tiers this attack never reached
        rows.append(part[t[f"ssim_{attack}_mean"].notna().to_numpy()])
    if not rows:
        return pd.DataFrame(columns=[*_KEYS[-1:], "attack"])
    return pd.concat(rows, ignore_index=True)


def information_table(tiers: pd.DataFrame) -> pd.DataFrame:
    """Information carried by z, per tier (only the columns that were recorded)."""
    t = tiers.reset_index(drop=True)
    cols = [c for c in _INFORMATION if c in t.columns]
    return pd.concat([_keys(t), t[cols]], axis=1) if cols else _keys(t).iloc[:0]


def worst_case_devices(devices: pd.DataFrame) -> pd.DataFrame:
    """Per tier, the device that leaks most (or, without leakage, the least accurate).

    Highest ``ssim_worst_case``; absent, the highest SSIM of any attack; with no attack
    columns, the lowest accuracy.
    """
    attacks = [a for a in attacks_in(devices) if f"ssim_{a}" in devices.columns]
    d = devices.reset_index(drop=True).copy()
    if "worst_case" in attacks:
        criterion, d["_value"] = "highest SSIM (worst case)", d["ssim_worst_case"]
        d["_attack"] = d.get("worst_case_attack",
                             pd.Series("worst_case", index=d.index))
    elif attacks:
        ssim = d[[f"ssim_{a}" for a in attacks]].astype(float)
        has = ssim.notna().any(axis=1)
        criterion, d["_value"] = "highest SSIM of any attack", ssim.max(axis=1)
        d["_attack"] = ssim.fillna(-np.inf).idxmax(axis=1).str[5:].where(has)
    else:
        criterion, d["_value"], d["_attack"] = "lowest accuracy", -d["accuracy"], None
    rows = []
    for tier, g in d.groupby("tier", sort=False):
        g = g[g["_value"].notna()]
        if g.empty:
            continue
        w = g.loc[g["_value"].idxmax()]
        value = -w["_value"] if criterion == "lowest accuracy" else w["_value"]
        rows.append({"tier": tier, "device_id": w["device_id"], "criterion": criterion,
                     "value": float(value), "attack": w["_attack"],
                     "accuracy": w.get("accuracy", np.nan),
                     "node": w.get("node", None)})
    return pd.DataFrame(rows, columns=["tier", "device_id", "criterion", "value",
                                       "attack", "accuracy", "node"])


def collapse_note(tiers: pd.DataFrame) -> str | None:
    """A warning naming the tiers whose features are (almost) all zero, else None.

    A defense whose loss rewards uninformative features (dCor, L1) can kill the edge's
    last ReLU early in training; the tier then sends zeros, its accuracy is chance and
    its "privacy" is that of sending nothing. Such rows must not be read as a result.
    """
    if "nonzero_per_sample" not in tiers.columns:
        return None
    dead = tiers[tiers["nonzero_per_sample"].astype(float) < 1.0]
    if dead.empty:
        return None
    names = [" / ".join(str(r[k]) for k in ("point", "tier") if k in dead.columns)
             for _, r in dead.iterrows()]
    return ("Collapsed training: " + ", ".join(names) + " sent all-zero features "
            "(under one non-zero element of z per sample), so accuracy is at chance and "
            "leakage is that of sending nothing. Retrain with a lower learning rate or weaker "
            "feature-penalty weights before reading these rows.")
