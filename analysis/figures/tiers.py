"""Per-tier summaries: bars with intervals, and training loss per round."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis.figures._style import axis_label, new_axes, tier_colours

__all__ = ["tier_bars", "training_curves"]


def tier_bars(tiers: pd.DataFrame, metric_prefix: str,
              ax: Axes | None = None) -> Figure:
    """Bars of ``<prefix>_mean`` per tier with the ``_lo/_hi`` 95% interval.

    Parameters
    ----------
    tiers : DataFrame
        A tier table.
    metric_prefix : str
        e.g. ``accuracy``, ``ssim_worst_case``, ``attack_acc_rmle``,
        ``latency_ms`` (no interval recorded: bars without error bars).
    """
    prefix = metric_prefix.removesuffix("_mean")
    col = f"{prefix}_mean"
    if col not in tiers.columns:
        known = sorted(c[:-5] for c in tiers.columns if c.endswith("_mean"))
        raise ValueError(f"metric_prefix={metric_prefix!r}: no {col!r} column; "
                         f"prefixes with a _mean column: {known}")
    if "tier" not in tiers.columns:
        raise ValueError("tiers needs a 'tier' column")
    names = tiers["tier"].astype(str).tolist()
    mean = tiers[col].to_numpy(float)
    fig, ax = new_axes(ax)
    colours = tier_colours(list(dict.fromkeys(names)))
    yerr = None
    if f"{prefix}_lo" in tiers.columns and f"{prefix}_hi" in tiers.columns:
        lo = tiers[f"{prefix}_lo"].to_numpy(float)
        hi = tiers[f"{prefix}_hi"].to_numpy(float)
        # one device gives no interval: draw the bar, not a NaN whisker
        yerr = np.nan_to_num(np.vstack([mean - lo, hi - mean]), nan=0.0).clip(min=0)
    x = np.arange(len(names))
    ax.bar(x, mean, yerr=yerr, capsize=5, color=[colours[n] for n in names],
           edgecolor="black")
    ax.set_xticks(x, names)
    if prefix.startswith("attack_acc") and "chance" in tiers.columns:
        ax.axhline(float(tiers["chance"].mean()), color="grey", ls=":", label="chance")
        ax.legend(fontsize="small")
    ax.set_xlabel("tier")
    ax.set_ylabel(axis_label(col))
    ax.set_title(f"{prefix} per tier" + (" (95% CI over devices)" if yerr is not None
                                         else ""))
    ax.grid(axis="y", alpha=0.3)
    return fig


def training_curves(rounds: pd.DataFrame, ax: Axes | None = None) -> Figure:
    """Training loss per round, one line per tier (``all`` in centralized mode)."""
    missing = {"round", "tier", "loss"} - set(rounds.columns)
    if missing:
        raise ValueError(f"rounds lacks columns {sorted(missing)}; has "
                         f"{list(rounds.columns)}")
    fig, ax = new_axes(ax)
    names = list(dict.fromkeys(rounds["tier"].astype(str)))
    colours = tier_colours(names)
    for tier in names:
        g = rounds[rounds["tier"].astype(str) == tier].sort_values("round")
        g = g[np.isfinite(g["loss"].astype(float))]
        ax.plot(g["round"], g["loss"], marker="o", ms=3, color=colours[tier],
                label=tier)
    centralized = names == ["all"]
    ax.set_xlabel("epoch (centralized training)" if centralized else "round")
    ax.set_ylabel(axis_label("loss"))
    ax.set_title("Training loss per round")
    ax.legend(title="tier", fontsize="small")
    ax.grid(alpha=0.3)
    return fig
