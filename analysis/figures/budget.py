"""Leakage and information against the edge budget (compute, size, bytes, latency)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis.figures._style import (axis_label, legend_beside, maybe_log_x, new_axes,
                                     resolve_column, tier_colours, value_label)

__all__ = ["binned_trend", "default_leakage", "information_vs_budget", "ladder_order",
           "leakage_vs_budget", "tier_leakage_vs_budget"]


def default_leakage(frame: pd.DataFrame) -> str:
    """``ssim_worst_case`` (``ssim_worst_case_mean`` on tier tables).

    The simulator writes this view whenever an attack ran; which other attacks exist
    is read from the long leakage table (``Run.attacks``), not from column names.
    """
    for name in ("ssim_worst_case", "ssim_worst_case_mean"):
        if name in frame.columns:
            return name
    raise ValueError("the frame has no worst-case leakage column (ssim_worst_case or "
                     "ssim_worst_case_mean): did the adversary run? Pass leakage= "
                     "to draw one attack's column")


def leakage_vs_budget(devices: pd.DataFrame, leakage: str | None = None,
                      budget: str = "macs", ax: Axes | None = None,
                      bins: int = 8) -> Figure:
    """Per-device leakage against an edge budget, coloured by tier (encoder rung).

    One cloud of points per tier (every device). Where a tier's budgets are one value
    (``macs`` of a tier's encoder), its mean with a 95% Student-t interval over devices
    (error bar at the budget); where they vary from device to device (a fleet's drawn
    ``compute_gflops``, ``latency_ms``, ``memory_mb``), a binned trend instead: the
    mean per quantile bin of the budget with its 95% interval as a band
    (:func:`binned_trend`).

    Parameters
    ----------
    devices : DataFrame
        A device table (``tier`` plus the two columns).
    leakage : str, optional
        Any numeric column, e.g. ``ssim_inverse_network`` or ``accuracy``; default the
        worst-case SSIM.
    budget : str
        ``macs``, ``params``, ``bytes_per_sample``, ``latency_ms``,
        ``compute_gflops``, ...
    bins : int
        Most bins of a tier's trend (each holds at least 5 devices).
    """
    y_col = resolve_column(devices, leakage or default_leakage(devices), "leakage")
    x_col = resolve_column(devices, budget, "budget")
    data = _finite_rows(devices, y_col, x_col, ("leakage", "budget"))
    data = data[data["tier"].notna()]   # devices unable to serve belong to no rung
    fig, ax = new_axes(ax)
    tiers = ladder_order(data)
    colours = tier_colours(tiers)
    crowded = len(data) > 300   # thousands of devices: small, faint points
    legend_for = {"mean": True, "trend": True}
    for tier in tiers:
        g = data[data["tier"].astype(str) == tier]
        _draw_tier(ax, tier, g[x_col].to_numpy(float), g[y_col].to_numpy(float),
                   colours[tier], crowded, bins, legend_for)
    maybe_log_x(ax, data[x_col])
    ax.set_xlabel(axis_label(x_col))
    ax.set_ylabel(axis_label(y_col))
    ax.set_title(f"{y_col} vs {x_col}, per device")
    legend = ax.legend(title="tier", fontsize="small")
    for handle in legend.legend_handles:   # faint points, legible legend
        handle.set_alpha(1.0)
    ax.grid(alpha=0.3)
    return fig


def _draw_tier(ax: Axes, tier: str, x: np.ndarray, y: np.ndarray, colour: Any,
               crowded: bool, bins: int, legend_for: dict[str, bool]) -> None:
    """One tier's cloud of devices, with its binned trend where its budgets vary,
    else its mean and 95% interval at its one budget. ``legend_for`` names the
    summaries still to label in the legend (each once)."""
    from analysis.metrics import mean_ci  # torch-backed: imported only when drawing

    ax.scatter(x, y, s=5 if crowded else 14, alpha=0.25 if crowded else 0.45,
               color=colour, label=tier, rasterized=crowded)
    trend = binned_trend(x, y, bins)
    if len(trend) >= 2:
        ax.fill_between(trend["x"], trend["lo"], trend["hi"], color=colour, alpha=0.15,
                        lw=0)
        ax.plot(trend["x"], trend["mean"], "-o", color=colour, ms=4, lw=1.8,
                markeredgecolor="black", zorder=3, gid=f"trend:{tier}",
                label="binned mean, 95% CI" if legend_for.pop("trend", False)
                else "_nolegend_")
        return
    mean, lo, hi = mean_ci(y)
    err = np.nan_to_num([[mean - lo], [hi - mean]], nan=0.0)
    ax.errorbar([float(x.mean())], [mean], yerr=err, fmt="D", color=colour,
                markeredgecolor="black", capsize=4, ms=7, zorder=3,
                label="tier mean, 95% CI" if legend_for.pop("mean", False)
                else "_nolegend_")


def ladder_order(devices: pd.DataFrame) -> list[str]:
    """Tiers smallest encoder first (median MACs), as a ladder lists its rungs; in
    order of appearance where the table has no ``macs``."""
    tiers = devices["tier"].astype(str)
    if "macs" not in devices.columns:
        return list(dict.fromkeys(tiers))
    size = devices.groupby(tiers, sort=False)["macs"].median()
    return list(size.sort_values(kind="stable").index)


def binned_trend(x: np.ndarray, y: np.ndarray, bins: int = 8,
                 min_per_bin: int = 5) -> pd.DataFrame:
    """Mean of ``y`` per quantile bin of ``x``, with a 95% Student-t interval.

    Bins hold about equally many points (at least ``min_per_bin``; ties in ``x``
    stay in one bin). ``x`` of a bin is its median, so the trend reads the same on a
    log axis. Empty (no rows) when ``x`` takes fewer than two distinct values or there
    are too few points for two bins: a tier with one budget has no trend.

    Returns
    -------
    DataFrame
        ``x``, ``mean``, ``lo``, ``hi``, ``n``: one row per bin, in ``x`` order.
    """
    from analysis.metrics import mean_ci

    x, y = np.asarray(x, float), np.asarray(y, float)
    columns = ["x", "mean", "lo", "hi", "n"]
    count = min(int(bins), len(x) // max(1, int(min_per_bin)))
    if count < 2 or len(np.unique(x)) < 2:
        return pd.DataFrame(columns=columns)
    edges = np.unique(np.quantile(x, np.linspace(0, 1, count + 1)))
    which = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    rows = []
    for b in np.unique(which):
        inside = which == b
        mean, lo, hi = mean_ci(y[inside])
        rows.append([float(np.median(x[inside])), mean, lo, hi, int(inside.sum())])
    out = pd.DataFrame(rows, columns=columns)
    return out if len(out) >= 2 else pd.DataFrame(columns=columns)


def information_vs_budget(tiers: pd.DataFrame, info: str = "mi_nats",
                          budget: str = "macs", ax: Axes | None = None) -> Figure:
    """One point per tier: information carried by z against the tier's edge budget.

    Parameters
    ----------
    tiers : DataFrame
        A tier (or sweep) table with ``tier`` and the two columns.
    info : str
        ``mi_nats``, ``mi_paper_nats``, ``dcor2_bc``, ``nonzero_per_sample``, ...
    budget : str
        ``macs``, ``params``, ``bytes_per_sample``, ``latency_ms`` (``_mean``), ...
    """
    y_col = resolve_column(tiers, info, "info")
    x_col = resolve_column(tiers, budget, "budget")
    data = _finite_rows(tiers, y_col, x_col, ("info", "budget"))
    fig, ax = new_axes(ax)
    names = list(dict.fromkeys(data["tier"].astype(str)))
    colours = tier_colours(names)
    for tier in names:
        g = data[data["tier"].astype(str) == tier]
        ax.scatter(g[x_col], g[y_col], s=60, color=colours[tier], edgecolor="black",
                   label=tier, zorder=3)
        for x, y in zip(g[x_col], g[y_col], strict=True):
            ax.annotate(tier, (x, y), textcoords="offset points", xytext=(5, 5),
                        fontsize="small")
    maybe_log_x(ax, data[x_col])
    ax.set_xlabel(axis_label(x_col))
    ax.set_ylabel(axis_label(y_col))
    ax.set_title(f"{y_col} vs {x_col}, per tier")
    ax.legend(title="tier", fontsize="small")
    ax.grid(alpha=0.3)
    return fig


def tier_leakage_vs_budget(tiers: pd.DataFrame, group: str, leakage: str | None = None,
                           budget: str = "macs", ax: Axes | None = None) -> Figure:
    """Tier means of leakage against the tier's edge budget, one line per ``group``.

    For sweep tables (a row per point and tier): each line joins the tiers of one
    ``group`` value (e.g. one defense strength) in budget order, each marker is a tier
    (coloured by tier) with its 95% interval over devices when ``<leakage>_lo``/``_hi``
    are present.

    Parameters
    ----------
    tiers : DataFrame
        ``tier``, ``group`` and the two columns (leakage as ``..._mean``).
    group : str
        Column naming the line a row belongs to, e.g. a sweep axis.
    leakage : str, optional
        Default the worst-case SSIM tier mean.
    budget : str
        ``macs``, ``params``, ``bytes_per_sample``, ``latency_ms`` (``_mean``), ...
    """
    if group not in tiers.columns:
        raise ValueError(f"group={group!r} is not a column of the frame")
    y_col = resolve_column(tiers, leakage or default_leakage(tiers), "leakage")
    x_col = resolve_column(tiers, budget, "budget")
    data = _finite_rows(tiers, y_col, x_col, ("leakage", "budget"), ("tier", group))
    stem = y_col.removesuffix("_mean")
    bounds = (f"{stem}_lo", f"{stem}_hi")
    colours = tier_colours(list(dict.fromkeys(data["tier"].astype(str))))
    size, columns = legend_beside(data[group].astype(str).nunique() + len(colours),
                                  (9.0, 4.6))
    fig, ax = new_axes(ax, figsize=size)
    styles = ("-", "--", ":", "-.")
    from matplotlib import colormaps
    shades = colormaps["Dark2"]  # lines: one hue per group, apart from tier colours
    for i, (key, g) in enumerate(data.groupby(data[group].astype(str), sort=False)):
        g = g.sort_values(x_col)
        x, y = g[x_col].to_numpy(float), g[y_col].to_numpy(float)
        ax.plot(x, y, styles[i % len(styles)], color=shades(i % shades.N), lw=1.6,
                label=value_label(key), zorder=2)
        if all(b in g.columns for b in bounds):
            err = np.nan_to_num([y - g[bounds[0]].to_numpy(float),
                                 g[bounds[1]].to_numpy(float) - y], nan=0.0)
            ax.errorbar(x, y, yerr=np.clip(err, 0.0, None), fmt="none", ecolor="0.6",
                        capsize=3, zorder=2)
        ax.scatter(x, y, s=55, c=[colours[t] for t in g["tier"].astype(str)],
                   edgecolor="black", zorder=3)
    for tier, colour in colours.items():  # one legend entry per tier colour
        ax.scatter([], [], s=55, color=colour, edgecolor="black", label=f"tier {tier}")
    maybe_log_x(ax, data[x_col])
    ax.set_xlabel(axis_label(x_col))
    ax.set_ylabel(axis_label(y_col))
    ax.set_title(f"{stem}: tier means (95% CI), a line per {group}", fontsize="medium")
    ax.legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0),
              ncols=columns)
    ax.grid(alpha=0.3)
    return fig


def _finite_rows(frame: pd.DataFrame, y_col: str, x_col: str, names: tuple[str, str],
                 required: tuple[str, ...] = ("tier",)) -> pd.DataFrame:
    """Rows where both columns are finite; ValueError naming what is missing."""
    for col in required:
        if col not in frame.columns:
            raise ValueError(f"the frame needs a {col!r} column")
    data = frame[np.isfinite(frame[y_col].astype(float))
                 & np.isfinite(frame[x_col].astype(float))]
    if data.empty:
        raise ValueError(f"{names[0]}={y_col!r} / {names[1]}={x_col!r} have no finite "
                         "rows")
    return data
