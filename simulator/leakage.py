"""Leakage records: per image, then one long table, then wide views of it.

Turns :class:`simulator.adversary.TierLeakage` results into the run directory's tables:

``leakage_images``
    One row per reconstructed image (attack, threat model, device, scores).
``leakage``
    The record: one row per observation, built by :func:`leakage_long`. Columns:

    - ``scope``: ``"device"`` or ``"tier"``.
    - ``device_id``: the device (nullable Int64; null on tier rows).
    - ``tier``: the device's tier.
    - ``attack``: the attack label; ``"worst_case"`` for the most leaking attack per
      device and metric; ``"information"`` for what z carries whatever the attack
      (``dcor2_bc``, ``mi_nats``, ``nonzero_per_sample``, ``eval_acc_real``,
      ``chance``, ...; tier rows only).
    - ``threat_model``: what the attack was granted; null for worst case/information.
    - ``metric``: ``ssim``, ``psnr``, ``mse``, ``attack_acc``, ``nn_ident``,
      ``recognisable`` (SSIM > 0.3), or an information metric.
    - ``value``, ``lo``, ``hi``: the mean and its 95% Student-t interval (device:
      over its images; tier: over its devices' values); lo/hi null where undefined
      (one observation, information metrics).
    - ``n``: images (device rows), devices (tier rows) or samples of the information
      pass behind the value; null for ``chance``.
    - ``chosen_attack``: on device worst-case rows, the attack that leaked most.
    - ``estimator``: how an information value was estimated (``mi_nats``), else null.

The wide ``devices``/``tiers`` columns (``ssim_<attack>``, ``<metric>_worst_case``,
``<metric>_<attack>_mean/_lo/_hi``, information columns) are views made by
:func:`wide_devices` and :func:`wide_tiers` for people and older readers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from analysis.metrics import mean_ci

if TYPE_CHECKING:
    from simulator.adversary import TierLeakage

__all__ = ["COLUMNS", "INFORMATION", "WORST_CASE", "images_table", "leakage_long",
           "merge_leakage", "save_reconstructions", "strip_leakage", "wide_devices",
           "wide_tiers", "write_table"]

COLUMNS = ("scope", "device_id", "tier", "attack", "threat_model", "metric", "value",
           "lo", "hi", "n", "chosen_attack", "estimator")
WORST_CASE = "worst_case"
INFORMATION = "information"

_PER_IMAGE = {"ssim": "ssim", "psnr": "psnr", "mse": "mse",
              "attack_acc": "eval_correct", "nn_ident": "nn_correct"}
_METRICS = (*_PER_IMAGE, "recognisable")
_RECOGNISABLE = 0.3      # SSIM above which a reconstruction counts as recognisable
_LOWER_LEAKS = {"mse"}   # every other metric: higher = more leakage
# Text that describes an information value rather than being one: its metric's row.
_ESTIMATORS = {"mi_estimator": "mi_nats"}
_NOT_SAMPLED = {"chance"}  # 1 / classes: no samples behind it


def images_table(results: list[TierLeakage]) -> pd.DataFrame:
    frames = [pd.DataFrame({"tier": r.tier, **r.images}) for r in results
              if len(r.images["ssim"])]
    if not frames:
        return pd.DataFrame(columns=["tier", "attack", "threat_model", "device_id",
                                     "sample", *_PER_IMAGE.values()])
    out = pd.concat(frames, ignore_index=True)
    out["eval_correct"] = out["eval_correct"].astype(bool)
    out["nn_correct"] = out["nn_correct"].astype(bool)
    return out


def leakage_long(images: pd.DataFrame,
                 information: dict[str, dict[str, Any]] | None = None) -> pd.DataFrame:
    """The long leakage table (columns :data:`COLUMNS`) of a run.

    Parameters
    ----------
    images
        :func:`images_table`: one row per reconstructed image.
    information
        Per tier, :attr:`TierLeakage.information` (numbers, ``info_samples`` and the
        ``mi_estimator`` text).
    """
    devices = _device_rows(images)
    devices = pd.concat([devices, _worst_rows(devices)], ignore_index=True)
    frames = [devices, _tier_rows(devices), _information_rows(information or {})]
    out = pd.concat([f for f in frames if len(f)] or [pd.DataFrame(columns=COLUMNS)],
                    ignore_index=True)
    return _typed(out.reindex(columns=COLUMNS))


def _device_rows(images: pd.DataFrame) -> pd.DataFrame:
    """Per device and attack: each metric's mean over the device's images."""
    scores = images.assign(recognisable=images["ssim"] > _RECOGNISABLE,
                           **{m: images[c] for m, c in _PER_IMAGE.items()})
    # devices in id order (tiers then appear as configured), attacks by name
    scores = scores.sort_values(["device_id", "attack"], kind="stable")
    rows = []
    for (tier, device, attack), g in scores.groupby(["tier", "device_id", "attack"],
                                                    sort=False):
        for metric in _METRICS:
            mean, lo, hi = mean_ci(g[metric].to_numpy(np.float64))
            rows.append({"scope": "device", "device_id": int(device), "tier": tier,
                         "attack": attack, "threat_model": g["threat_model"].iloc[0],
                         "metric": metric, "value": mean, "lo": lo, "hi": hi,
                         "n": len(g)})
    return pd.DataFrame(rows, columns=COLUMNS)


def _worst_rows(devices: pd.DataFrame) -> pd.DataFrame:
    """Per device and metric, the most leaking attack's row (ties: first by name).

    The adversary may pick a different attack per goal (the sharpest image need not
    be the most identifiable), so each metric's worst case is its own.
    """
    d = devices.dropna(subset=["value"])
    if d.empty:
        return pd.DataFrame(columns=COLUMNS)
    leak = d["value"].where(~d["metric"].isin(_LOWER_LEAKS), -d["value"])
    pick = leak.groupby([d["device_id"], d["metric"]], sort=False).idxmax()
    out = d.loc[pick.to_numpy()].copy()
    out["chosen_attack"] = out["attack"]
    out["attack"], out["threat_model"] = WORST_CASE, None
    return out


def _tier_rows(devices: pd.DataFrame) -> pd.DataFrame:
    """Per tier, attack and metric: mean over devices with a 95% interval."""
    rows = []
    for (tier, attack, metric), g in devices.groupby(["tier", "attack", "metric"],
                                                     sort=False):
        values = g["value"].dropna().to_numpy(np.float64)
        mean, lo, hi = mean_ci(values)
        rows.append({"scope": "tier", "tier": tier, "attack": attack,
                     "threat_model": g["threat_model"].iloc[0], "metric": metric,
                     "value": mean, "lo": lo, "hi": hi, "n": len(values)})
    return pd.DataFrame(rows, columns=COLUMNS)


def _information_rows(information: dict[str, dict[str, Any]]) -> pd.DataFrame:
    rows = []
    for tier, info in information.items():
        samples = info.get("info_samples")
        for key, value in info.items():
            if key == "info_samples" or key in _ESTIMATORS:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float | np.number):
                raise TypeError(f"information[{tier!r}][{key!r}] = {value!r} is not a "
                                f"number: add it to _ESTIMATORS in {__name__} if it "
                                "describes a metric")
            rows.append({"scope": "tier", "tier": tier, "attack": INFORMATION,
                         "metric": key, "value": float(value),
                         "n": None if key in _NOT_SAMPLED else samples,
                         "estimator": next((info[k] for k, m in _ESTIMATORS.items()
                                            if m == key and k in info), None)})
    return pd.DataFrame(rows, columns=COLUMNS)


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    """One dtype per column, whichever rows exist (parquet files stay comparable)."""
    text = ("scope", "tier", "attack", "threat_model", "metric", "chosen_attack",
            "estimator")
    out = frame.astype({c: "object" for c in text})
    out = out.astype({**{c: "str" for c in text}, "device_id": "Int64", "n": "Int64",
                      "value": "float64", "lo": "float64", "hi": "float64"})
    return out


def wide_devices(long: pd.DataFrame) -> pd.DataFrame:
    """One row per device: ``<metric>_<attack>`` means, ``ssim_<attack>_lo/_hi`` and
    the worst case (``<metric>_worst_case``, ``worst_case_attack`` = the attack of
    the highest SSIM, whose interval ``ssim_worst_case_lo/_hi`` is)."""
    d = long[long["scope"] == "device"]
    if d.empty:
        return pd.DataFrame(columns=["device_id"])
    value = _spread(d, "device_id", "value")
    ssim = d[d["metric"] == "ssim"]
    bounds = {s: _spread(ssim, "device_id", s) for s in ("lo", "hi")}
    cols: dict[str, pd.Series] = {}
    for attack in sorted(set(d["attack"]) - {WORST_CASE}):
        for metric in _METRICS[:-1]:
            cols[f"{metric}_{attack}"] = value[(metric, attack)]
        for side, frame in bounds.items():
            cols[f"ssim_{attack}_{side}"] = frame[("ssim", attack)]
        cols[f"recognisable_{attack}"] = value[("recognisable", attack)]
    worst = d[(d["attack"] == WORST_CASE) & (d["metric"] == "ssim")]
    cols["worst_case_attack"] = worst.set_index("device_id")["chosen_attack"]
    for metric in _METRICS:
        cols[f"{metric}_{WORST_CASE}"] = value[(metric, WORST_CASE)]
    for side, frame in bounds.items():
        cols[f"ssim_{WORST_CASE}_{side}"] = frame[("ssim", WORST_CASE)]
    out = pd.DataFrame(cols).rename_axis("device_id").reset_index()
    out["device_id"] = out["device_id"].astype("int64")
    return out


def wide_tiers(long: pd.DataFrame) -> pd.DataFrame:
    """One row per tier: information columns (with ``info_samples`` and
    ``mi_estimator``), then ``<metric>_<attack>_mean/_lo/_hi`` per attack."""
    t = long[long["scope"] == "tier"]
    if t.empty:
        return pd.DataFrame(columns=["tier"])
    info = t[t["attack"] == INFORMATION]
    cols: dict[str, pd.Series] = {}
    for metric, g in info.groupby("metric", sort=False):
        cols[str(metric)] = g.set_index("tier")["value"]
    if info["n"].notna().any():
        samples = info.groupby("tier")["n"].max()
        cols["info_samples"] = (samples if samples.isna().any()
                                else samples.astype("int64"))
    for key, metric in _ESTIMATORS.items():
        rows = info[(info["metric"] == metric) & info["estimator"].notna()]
        if len(rows):
            cols[key] = rows.set_index("tier")["estimator"]
    leak = t[t["attack"] != INFORMATION]
    stats = {s: _spread(leak, "tier", s) for s in ("value", "lo", "hi")}
    for attack in sorted(set(leak["attack"])):
        for metric in _METRICS:
            for stat, name in (("value", "mean"), ("lo", "lo"), ("hi", "hi")):
                if (metric, attack) in stats[stat]:
                    cols[f"{metric}_{attack}_{name}"] = stats[stat][(metric, attack)]
    order = list(dict.fromkeys(t["tier"]))
    return pd.DataFrame(cols).reindex(order).rename_axis("tier").reset_index()


def _spread(rows: pd.DataFrame, index: str, stat: str) -> pd.DataFrame:
    """``stat`` with one column per (metric, attack)."""
    return rows.pivot(index=index, columns=["metric", "attack"], values=stat)


_PREFIXES = tuple(f"{m}_" for m in _METRICS) + (
    "worst_case_attack", "dcor2_bc", "mi_", "nonzero_", "eval_acc_real", "chance",
    "info_samples")


def strip_leakage(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` without the columns an earlier attack pass added."""
    return frame[[c for c in frame.columns if not c.startswith(_PREFIXES)]]


def merge_leakage(base: pd.DataFrame, extra: pd.DataFrame, key: str) -> pd.DataFrame:
    """``base`` without earlier leakage columns, joined with ``extra`` on ``key``."""
    base = strip_leakage(base)
    return base.merge(extra, on=key, how="left") if len(extra) else base


def write_table(folder: Path, name: str, frame: pd.DataFrame, csv: bool = True) -> None:
    """``name.parquet`` (and its ``.csv`` twin), each written under a temporary name
    and renamed, so a crash never leaves half a table where a reader looks."""
    _atomic(folder / f"{name}.parquet", lambda p: frame.to_parquet(p, index=False))
    if csv:
        _atomic(folder / f"{name}.csv", lambda p: frame.to_csv(p, index=False))


def _atomic(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)


def save_reconstructions(folder: Path, results: list[TierLeakage]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for r in results:
        for label, arrays in r.reconstructions.items():
            np.savez_compressed(folder / f"{label}__{r.tier}.npz", **arrays)
