"""Display tables built from the recorded tables (no recomputation).

Leakage comes from the long leakage table (``Run.leakage``; stacked with ``run`` or
``point`` columns for comparisons and sweeps): attacks, metrics and intervals are read
from its columns. Utility, cost and information come from the tier and device tables.
Each returns a plain DataFrame (numbers, or ``mean [lo, hi]`` strings where an interval
was recorded) that the report renders to HTML and Markdown.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.rundir import INFORMATION, WORST_CASE, attacks_in

__all__ = ["collapse_note", "collapsed_tiers", "information_table", "leakage_table",
           "tier_summary", "worst_case_devices"]

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


def tier_summary(tiers: pd.DataFrame, leakage: pd.DataFrame | None = None
                 ) -> pd.DataFrame:
    """Per tier: utility, cost, worst-case leakage and information, side by side.

    A ``collapsed`` column marks collapsed tiers (:func:`collapsed_tiers`) when any is.
    ``leakage`` is the long leakage table (with the same ``run``/``point`` keys as
    ``tiers`` when stacked); without it, no leakage columns.
    """
    t = tiers.reset_index(drop=True)
    out = _keys(t)
    for col in ("devices", "encoder", "defense"):
        if col in t:
            out[col] = t[col]
    collapsed = collapsed_tiers(t)
    if collapsed.any():   # mark the rows, not only the note: rows get copied alone
        out["collapsed"] = np.where(collapsed, "COLLAPSED", "")
    if "accuracy_mean" in t:
        out["accuracy (95% CI)"] = _ci_column(t, "accuracy")
    names = {"params": "params", "macs": "MACs", "bytes_per_sample": "bytes/sample",
             "latency_ms_mean": "latency ms"}
    for col, label in names.items():
        if col in t:
            out[label] = t[col]
    attacks = attacks_in(leakage)
    if attacks:
        attack = WORST_CASE if WORST_CASE in attacks else attacks[0]
        stats = _tier_stats(leakage, attack)
        keys = [k for k in _KEYS if k in t.columns and k in stats.columns]
        on = t[keys].merge(stats, on=keys, how="left")
        out[f"SSIM {attack} (95% CI)"] = _with_ci(on, "ssim")
        if ("value", "attack_acc") in on.columns:
            out[f"attack acc {attack}"] = on[("value", "attack_acc")].to_numpy()
    for col in ("dcor2_bc", "mi_nats"):
        if col in t:
            out[col] = t[col]
    return out


def _tier_stats(leakage: pd.DataFrame, attack: str) -> pd.DataFrame:
    """Tier rows of one attack: keys, then ``(stat, metric)`` columns."""
    rows = leakage[(leakage["scope"] == "tier") & (leakage["attack"] == attack)]
    keys = [k for k in _KEYS if k in rows.columns]
    wide = rows.set_index([*keys, "metric"])[["value", "lo", "hi"]].unstack("metric")
    wide = wide.reset_index()
    wide.columns = [k if k in keys else (k, m) for k, m in wide.columns]
    return wide


def _with_ci(stats: pd.DataFrame, metric: str) -> list[str]:
    if ("value", metric) not in stats.columns:
        return ["-"] * len(stats)
    return [with_ci(*v) for v in zip(stats[("value", metric)], stats[("lo", metric)],
                                     stats[("hi", metric)], strict=True)]


def leakage_table(leakage: pd.DataFrame | None) -> pd.DataFrame:
    """One row per (tier, attack) of the long leakage table: SSIM with its interval,
    PSNR, MSE, recognisable, NN ident, attack accuracy (with ``run``/``point`` keys
    when the table is stacked)."""
    rows = []
    for attack in attacks_in(leakage):
        stats = _tier_stats(leakage, attack)
        part = stats[[k for k in _KEYS if k in stats.columns]].copy()
        part["attack"] = attack
        part["SSIM (95% CI)"] = _with_ci(stats, "ssim")
        for metric, label in (("psnr", "PSNR dB"), ("mse", "MSE"),
                              ("recognisable", "SSIM>0.3"), ("nn_ident", "NN ident")):
            col = ("value", metric)
            part[label] = stats[col].to_numpy() if col in stats.columns else np.nan
        if ("value", "attack_acc") in stats.columns:
            part["attack acc (95% CI)"] = _with_ci(stats, "attack_acc")
        rows.append(part)
    if not rows:
        return pd.DataFrame(columns=[*_KEYS[-1:], "attack"])
    return pd.concat(rows, ignore_index=True)


def information_table(tiers: pd.DataFrame) -> pd.DataFrame:
    """Information carried by z, per tier (only the columns that were recorded)."""
    t = tiers.reset_index(drop=True)
    cols = [c for c in _INFORMATION if c in t.columns]
    return pd.concat([_keys(t), t[cols]], axis=1) if cols else _keys(t).iloc[:0]


def worst_case_devices(devices: pd.DataFrame, leakage: pd.DataFrame | None = None
                       ) -> pd.DataFrame:
    """Per tier, the device that leaks most (or, without leakage, the least accurate).

    From the long leakage table: the highest worst-case SSIM (``attack`` names the
    attack that reached it); absent worst-case rows, the highest SSIM of any attack;
    with no leakage, the lowest accuracy in ``devices``.
    """
    attacks = attacks_in(leakage)
    if attacks:
        ssim = leakage[(leakage["scope"] == "device") & (leakage["metric"] == "ssim")
                       & (leakage["attack"] != INFORMATION)]
        if WORST_CASE in attacks:
            criterion = "highest SSIM (worst case)"
            ssim = ssim[ssim["attack"] == WORST_CASE]
            ssim = ssim.assign(attack=ssim["chosen_attack"])
        else:
            criterion = "highest SSIM of any attack"
        d = pd.DataFrame({"tier": ssim["tier"].to_numpy(),
                          "device_id": ssim["device_id"].astype("int64").to_numpy(),
                          "_value": ssim["value"].to_numpy(float),
                          "_attack": ssim["attack"].to_numpy()})
        extra = [c for c in ("accuracy", "node") if c in devices.columns]
        d = d.merge(devices[["device_id", *extra]], on="device_id", how="left")
    else:
        d = devices.reset_index(drop=True).copy()
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


def collapsed_tiers(tiers: pd.DataFrame) -> pd.Series:
    """Which tier rows collapsed in training (boolean, aligned with ``tiers``).

    The one definition every reader uses (report, comparison, sweep report, the
    command line): the simulator's ``collapsed`` verdict (split training: the tier's
    last round sent dead or constant features, or its training accuracy did not beat
    the most frequent label), or, where the adversary measured it (and for runs that
    predate the verdict), under one non-zero element of z per sample.
    """
    out = pd.Series(False, index=tiers.index)
    if "collapsed" in tiers.columns:
        out |= tiers["collapsed"].astype("boolean").fillna(False).astype(bool)
    if "nonzero_per_sample" in tiers.columns:
        out |= tiers["nonzero_per_sample"].astype(float) < 1.0
    return out


def collapse_note(tiers: pd.DataFrame) -> str | None:
    """A warning naming the tiers that collapsed (:func:`collapsed_tiers`), else None.

    A defense whose loss rewards uninformative features (dCor, L1) can kill the edge's
    last ReLU early in training; the tier then sends zeros, its accuracy is chance and
    its "privacy" is that of sending nothing. Such rows must not be read as a result.
    """
    dead = tiers[collapsed_tiers(tiers)]
    if dead.empty:
        return None
    names = [" / ".join(str(r[k]) for k in _KEYS if k in dead.columns)
             for _, r in dead.iterrows()]
    return ("Collapsed training: " + ", ".join(names) + " sent all-zero features, "
            "constant features or features the cloud could not use (training accuracy "
            "no better than the most frequent label), so accuracy is at chance and "
            "leakage is that of sending nothing. Retrain with a lower learning rate or weaker "
            "feature-penalty weights before reading these rows.")
