"""Privacy at matched accuracy: each defense's leakage where it costs ``k`` points.

A defense sweep has one axis whose values are defense specs (``tiers.*.defense:
[{name: none}, {name: gaussian_noise, sigma: 0.5}, ...]``); the points of one defense
name are its strength range. Points compared at their own accuracies mix privacy with
utility, so per tier each defense is read at the accuracy of the undefended point
(``{name: none}``) minus ``k`` accuracy points: its points sorted by accuracy, the
worst-case leakage of the two that bracket the target, interpolated linearly in
accuracy. A range that does not reach the target is marked, never extrapolated.

Intervals: a paired bootstrap over devices. Every point of a sweep has the same
devices, so one resample of a tier's device ids (with replacement) serves every point
of a replicate; each point's tier means (``accuracy`` from ``devices.parquet``, the
per-device worst case from ``leakage.parquet``) are recomputed on it, then the
reference accuracy and the interpolation. Reads the run directories; recomputes no
metric.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis._device_bootstrap import TierReplicates, tier_replicates
from analysis.rundir import load_sweep, sweep_axes
from analysis.tables import collapsed_tiers

__all__ = ["CANNOT_REACH", "MATCHED", "METRICS", "NO_POINT", "REFERENCE", "TOO_WEAK",
           "can_match", "defense_axes", "defense_ranges", "matched_accuracy",
           "setting_label"]

METRICS = ("ssim", "attack_acc", "nn_ident")  # worst case over attacks; higher leaks
REFERENCE = "none"
MATCHED, CANNOT_REACH, TOO_WEAK = "matched", "cannot reach", "range too weak"
NO_POINT = "no usable point"
_PERCENTILES = (2.5, 97.5)


def matched_accuracy(sweep: str | Path | pd.DataFrame,
                     drops: Sequence[float] = (1, 3, 5), *, axis: str | None = None,
                     replicates: int = 200, seed: int = 0) -> pd.DataFrame:
    """Each defense's worst-case leakage at the undefended accuracy minus ``drops``.

    A defense's range is its points that differ only in numbers (strengths); a point
    with another switch (``{name: siftfunnel, funnel: false}``) is a defense of its own.

    Parameters
    ----------
    sweep
        A sweep directory, or its table (:func:`analysis.rundir.load_sweep`; its
        ``run_dir`` column locates the per-device files).
    drops
        Accuracy cost in points (1 = 0.01 accuracy) at which each defense is read.
    axis
        The defense axis; default: the one axis whose values are defense specs.
    replicates, seed
        Bootstrap replicates and the seed of their draws (fixed: reproducible).

    Returns
    -------
    DataFrame
        One row per (other axes, defense, tier, drop): ``reference_accuracy``,
        ``target_accuracy``, ``status`` (:data:`MATCHED`, :data:`CANNOT_REACH`: even
        the weakest setting costs more; :data:`TOO_WEAK`: even the strongest costs
        less, its leakage reported at ``reached_accuracy``; :data:`NO_POINT`),
        ``points`` (strengths used), ``excluded`` (failed or collapsed),
        ``lower_setting`` / ``upper_setting`` (the bracketing points, lower and higher
        accuracy), ``reached_accuracy``, ``<metric>_worst_case`` with ``_lo`` /
        ``_hi`` (2.5 / 97.5 bootstrap percentiles), ``replicates_used`` (those
        behind the interval: a replicate whose resampled range misses its own target
        is left out of a matched row's) and ``interval`` (how the interval was made,
        or why it is missing; also in ``attrs["interval_notes"]``).

    Raises
    ------
    ValueError
        No defense axis, no worst-case leakage, or a tier without a usable ``none``.
    """
    return _matched(sweep, drops, axis, replicates, seed)[0]


def _matched(sweep: str | Path | pd.DataFrame, drops: Sequence[float], axis: str | None,
             replicates: int, seed: int) -> tuple[pd.DataFrame, list[np.ndarray | None]]:
    """:func:`matched_accuracy` and each row's replicate values (``(replicates,
    metrics)`` or None), paired within a tier: every defense is read on the same
    resampled devices."""
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")
    table, root = _table(sweep)
    axis = axis or _one_axis(table)
    metrics = _metrics(table)
    rows = _points(table, axis)
    others = _other_axes(table, rows, axis)
    frames, draws = [], []
    for keys, tier, part in _tier_parts(rows, others):
        frame, values = _tier(part, tier, axis, drops, metrics, (replicates, seed, root))
        frames.append(frame.assign(**keys) if keys else frame)
        draws += values
    frames = [f for f in frames if len(f)]
    if not frames:
        raise ValueError(f"axis {axis!r} holds no defense but {REFERENCE!r} on any "
                         "tier: add the defenses to compare to the sweep axis")
    out = pd.concat(frames, ignore_index=True)   # empty frames had no draws either
    out = out[[*others, *[c for c in out.columns if c not in others]]]
    out.attrs.update(axis=axis, metrics=metrics,
                     interval_notes=list(dict.fromkeys(out["interval"])))
    return out, draws


def defense_ranges(sweep: str | Path | pd.DataFrame, *, axis: str | None = None
                   ) -> pd.DataFrame:
    """Each defense's points per tier, as :func:`matched_accuracy` reads them.

    One row per (other axes, tier, point): ``defense`` (the range it belongs to),
    ``setting``, ``usable`` (complete, not collapsed), ``accuracy``, the tier's
    ``reference_accuracy`` (its ``none`` point) and ``cost_points`` (reference
    minus accuracy, in accuracy points), and the worst-case leakage means
    (``<metric>_worst_case``). The undefended points are included (defense
    ``none``, cost 0). The drawing of :func:`analysis.figures.matched_accuracy_ranges`
    and the interpolation of :func:`matched_accuracy` read the same points.

    Raises
    ------
    ValueError
        As :func:`matched_accuracy`: no defense axis, no worst-case leakage, or a
        tier without a usable ``none``.
    """
    table, _ = _table(sweep)
    axis = axis or _one_axis(table)
    metrics = _metrics(table)
    rows = _points(table, axis)
    frames = []
    for keys, tier, part in _tier_parts(rows, _other_axes(table, rows, axis)):
        ref = float(_reference(part, tier, axis)["accuracy_mean"])
        frames.append(pd.DataFrame({
            **{a: part[a].to_numpy() for a in keys},
            "tier": part["tier"].to_numpy(), "defense": part["_defense"].to_numpy(),
            "setting": part["_setting"].to_numpy(),
            "usable": part["_usable"].to_numpy(bool),
            "accuracy": part["accuracy_mean"].to_numpy(float),
            "reference_accuracy": ref,
            "cost_points": 100.0 * (ref - part["accuracy_mean"].to_numpy(float)),
            **{f"{m}_worst_case": part[_column(m)].to_numpy(float) for m in metrics}}))
    out = pd.concat(frames, ignore_index=True)
    out.attrs.update(axis=axis, metrics=metrics)
    return out


def _metrics(table: pd.DataFrame) -> list[str]:
    """The :data:`METRICS` whose worst case the sweep table holds (at least one)."""
    metrics = [m for m in METRICS if _column(m) in table.columns]
    if not metrics:
        raise ValueError("the sweep table has no worst-case leakage column ("
                         f"{', '.join(map(_column, METRICS))}): run the sweep with "
                         "`adversary.enabled: true`")
    return metrics


def _other_axes(table: pd.DataFrame, rows: pd.DataFrame, axis: str) -> list[str]:
    """Sweep axes besides ``axis`` that vary: each of their values is read apart."""
    return [a for a in sweep_axes(table)
            if a != axis and a in rows and rows[a].nunique(dropna=False) > 1]


def _tier_parts(rows: pd.DataFrame, others: list[str]
                ) -> Iterator[tuple[dict[str, Any], str, pd.DataFrame]]:
    """``(other axes' values, tier, its rows)`` in the sweep's order."""
    groups = rows.groupby(others, sort=False, dropna=False) if others else [((), rows)]
    for key, group in groups:
        keys = dict(zip(others, key if isinstance(key, tuple) else (key,)))
        for tier in dict.fromkeys(group["tier"]):
            yield keys, str(tier), group[group["tier"] == tier]


def can_match(table: pd.DataFrame) -> bool:
    """Whether :func:`matched_accuracy` applies: one defense axis with a ``none``
    point and another defense, and worst-case leakage in the table."""
    try:
        axis = _one_axis(table)
    except ValueError:
        return False
    if not any(_column(m) in table.columns for m in METRICS):
        return False
    names = {s.get("name") for s in map(_spec, table[axis]) if s}
    return REFERENCE in names and len(names) > 1


def defense_axes(table: pd.DataFrame) -> list[str]:
    """Sweep axes whose every value is a defense spec (a dict, or its JSON, with a
    ``name``)."""
    return [a for a in sweep_axes(table) if table[a].notna().any()
            and all(_spec(v) is not None for v in table[a].dropna())]


def setting_label(spec: dict[str, Any]) -> str:
    """``gaussian_noise(sigma=0.5)``; the bare name for a defense at its defaults."""
    args = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "name")
    return f"{spec.get('name', '?')}({args})" if args else str(spec.get("name", "?"))


def _variant(spec: dict[str, Any]) -> str:
    """The defense a point belongs to: its name and its switches (booleans, names).

    Only numbers are strengths along one defense's range; points that differ in a
    switch (an ablation: ``{name: siftfunnel, funnel: false}``) are different defenses,
    and interpolating between them would mean nothing.
    """
    switches = {k: v for k, v in spec.items() if k != "name" and (
        isinstance(v, bool) or not isinstance(v, (int, float)))}
    return setting_label({"name": spec.get("name"), **switches})


def _spec(value: Any) -> dict[str, Any] | None:
    if isinstance(value, str) and value.lstrip().startswith("{"):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            return None
    ok = isinstance(value, dict) and isinstance(value.get("name"), str)
    return value if ok else None


def _column(metric: str) -> str:
    return f"{metric}_worst_case_mean"


def _table(sweep: str | Path | pd.DataFrame) -> tuple[pd.DataFrame, Path | None]:
    if isinstance(sweep, pd.DataFrame):
        root = sweep.attrs.get("path")
        return sweep, Path(root) if root else None
    return load_sweep(sweep), Path(sweep)


def _one_axis(table: pd.DataFrame) -> str:
    axes = defense_axes(table)
    if not axes:
        raise ValueError(f"no sweep axis holds defense specs (axes: {sweep_axes(table)}"
                         "): sweep e.g. `tiers.*.defense: [{name: none}, {name: "
                         "gaussian_noise, sigma: 0.5}, ...]`")
    named = [a for a in axes if a.endswith("defense")]
    if len(axes) == 1 or len(named) == 1:
        return named[0] if named else axes[0]
    raise ValueError(f"several axes hold defense specs {axes}: pass axis= one of them")


def _points(table: pd.DataFrame, axis: str) -> pd.DataFrame:
    """The table with ``_defense``, ``_setting`` and ``_usable`` (complete, not
    collapsed, with an accuracy); rows whose tier does not run the axis's defense
    (an axis over one tier) are dropped."""
    specs = [_spec(v) or {} for v in table[axis]]
    rows = table.assign(_name=[str(s.get("name")) for s in specs],
                        _defense=[_variant(s) for s in specs],
                        _setting=[setting_label(s) if s else "" for s in specs])
    if "defense" in rows:  # the tier's own record of what it ran
        ran = rows["defense"].isna() | (rows["defense"].astype(str) == rows["_name"])
        rows = rows[ran]
    usable = ~collapsed_tiers(rows) & rows["accuracy_mean"].notna()
    if "status" in rows:
        usable &= rows["status"].astype(str) == "complete"
    return rows.assign(_usable=usable.to_numpy())


def _has_run(group: pd.DataFrame) -> bool:
    """Whether any point of a defense has run (finished or failed): a sweep still in
    progress lists its pending defenses nowhere rather than as 'no usable point'."""
    return "status" not in group or group["status"].astype(str).isin(
        ["complete", "failed"]).any()


def _reference(rows: pd.DataFrame, tier: str, axis: str) -> pd.Series:
    ref = rows[(rows["_defense"] == REFERENCE) & rows["_usable"]]
    if ref.empty:
        raise ValueError(
            f"tier {tier!r} has no complete, non-collapsed point with defense "
            f"{REFERENCE!r} on axis {axis!r}: the reference accuracy is that of the "
            f"undefended point; add `{{name: {REFERENCE}}}` to sweep.axes[{axis!r}] "
            "(or rerun its failed point) with `siftsim sweep SCENARIO`")
    return ref.iloc[0]


def _tier(rows: pd.DataFrame, tier: str, axis: str, drops: Sequence[float],
          metrics: list[str], boot: tuple[int, int, Path | None]
          ) -> tuple[pd.DataFrame, list[np.ndarray | None]]:
    """Every (defense, drop) row of one tier, and each row's replicate values."""
    ref = _reference(rows, tier, axis)
    replicates, seed, root = boot
    usable = rows[rows["_usable"]]
    reps = tier_replicates(usable, tier, metrics, replicates,
                           np.random.default_rng([seed, zlib.crc32(tier.encode())]),
                           root)
    out, draws = [], []
    for name, group in rows.groupby("_defense", sort=False):
        if name == REFERENCE or not _has_run(group):
            continue
        for drop in drops:
            row, values = _row(ref, group, float(drop), metrics, reps)
            out.append({"defense": name, "tier": tier, "drop": drop, **row})
            draws.append(values)
    return pd.DataFrame(out), draws


def _row(ref: pd.Series, group: pd.DataFrame, drop: float, metrics: list[str],
         reps: TierReplicates) -> tuple[dict[str, Any], np.ndarray | None]:
    """One defense (``group``: its rows of the tier) at one drop: the estimate and its
    bootstrap interval, and the replicates' values (paired across the tier's
    defenses: every defense is read on the same resampled devices)."""
    points = group[group["_usable"]].sort_values("accuracy_mean", kind="stable")
    target = float(ref["accuracy_mean"]) - drop / 100.0
    acc = points["accuracy_mean"].to_numpy(float)
    leak = points[[_column(m) for m in metrics]].to_numpy(float)
    status, lo, hi, w = _bracket(acc, target)
    settings = points["_setting"].tolist()
    row: dict[str, Any] = {
        "reference_accuracy": float(ref["accuracy_mean"]), "target_accuracy": target,
        "status": status, "points": len(points), "excluded": len(group) - len(points),
        "lower_setting": settings[lo] if status in (MATCHED, TOO_WEAK) else "",
        "upper_setting": settings[hi] if status in (MATCHED, CANNOT_REACH) else "",
        "reached_accuracy": target if status == MATCHED else
        float(acc[lo]) if status in (TOO_WEAK, CANNOT_REACH) else np.nan}
    value = _interpolate(leak, lo, hi, w) if status in (MATCHED, TOO_WEAK) \
        else np.full(len(metrics), np.nan)
    draws = _replicate_values(ref, points, drop, status, lo, reps)
    bounds = np.full((2, len(metrics)), np.nan) if draws is None else \
        _percentiles(draws)
    for j, m in enumerate(metrics):
        row.update({f"{m}_worst_case": value[j], f"{m}_worst_case_lo": bounds[0, j],
                    f"{m}_worst_case_hi": bounds[1, j]})
    used = 0 if draws is None else int(np.isfinite(draws).any(axis=1).sum())
    row.update(replicates_used=used, interval=reps.note)
    return row, draws


def _bracket(acc: np.ndarray, target: float) -> tuple[str, int, int, float]:
    """Status, the bracketing indices into ascending ``acc`` and the weight of the
    upper one (``value = v[lo] + w * (v[hi] - v[lo])``)."""
    if len(acc) == 0:
        return NO_POINT, 0, 0, 0.0
    if acc[-1] < target:
        return CANNOT_REACH, len(acc) - 1, len(acc) - 1, 0.0
    if acc[0] > target:
        return TOO_WEAK, 0, 0, 0.0
    hi = int(np.searchsorted(acc, target, side="left"))  # first accuracy >= target
    if acc[hi] == target:
        return MATCHED, hi, hi, 0.0
    return MATCHED, hi - 1, hi, float((target - acc[hi - 1]) / (acc[hi] - acc[hi - 1]))


def _interpolate(leak: np.ndarray, lo: int, hi: int, w: float) -> np.ndarray:
    return leak[lo] + w * (leak[hi] - leak[lo]) if w else leak[lo]


def _replicate_values(ref: pd.Series, points: pd.DataFrame, drop: float, status: str,
                      lo: int, reps: TierReplicates) -> np.ndarray | None:
    """``(replicates, metrics)`` leakage per replicate; NaN rows where a replicate
    does not match. A range too weak keeps its strongest point's leakage; None where
    no interval applies (no per-device files, nothing reached)."""
    if not reps.available or status in (CANNOT_REACH, NO_POINT):
        return None
    ids = points["point"].tolist()
    acc, leak = reps.accuracy(ids), reps.leakage(ids)  # (R, n), (R, n, M)
    if status == TOO_WEAK:
        return leak[:, lo, :]
    targets = reps.accuracy([ref["point"]])[:, 0] - drop / 100.0
    out = np.full(leak[:, 0, :].shape, np.nan)
    for r in range(len(targets)):
        order = np.argsort(acc[r], kind="stable")
        state, i, j, w = _bracket(acc[r][order], targets[r])
        if state == MATCHED:
            out[r] = _interpolate(leak[r][order], i, j, w)
    return out


def _percentiles(draws: np.ndarray) -> np.ndarray:
    """2.5 / 97.5 percentiles per metric over the replicates that matched."""
    out = np.full((2, draws.shape[1]), np.nan)
    for j in range(draws.shape[1]):
        keep = draws[np.isfinite(draws[:, j]), j]
        if len(keep):
            out[:, j] = np.percentile(keep, _PERCENTILES)
    return out
