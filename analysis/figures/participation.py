"""Who trained how often: rounds completed and straggled per device, per rung."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.figures._style import new_figure, tier_colours
from analysis.figures.budget import ladder_order

__all__ = ["participation_bars"]

_PANELS = (("rounds_completed", "rounds completed"),
           ("rounds_straggled", "rounds straggled (past the deadline)"))


def participation_bars(devices: pd.DataFrame) -> Figure:
    """Share of each tier's devices by rounds completed (left) and straggled
    (right): grouped bars, one colour per tier. Devices unable to serve are left out
    (they never take part).

    Parameters
    ----------
    devices : DataFrame
        ``tier``, ``rounds_completed`` and ``rounds_straggled`` per device.
    """
    missing = [c for c in ("tier", *(c for c, _ in _PANELS)) if c not in devices]
    if missing:
        raise ValueError(f"devices lacks {missing}: no participation recorded")
    d = devices[devices["tier"].notna()]
    if d.empty:
        raise ValueError("no device serves a tier")
    tiers = ladder_order(d)   # rungs smallest first, as every figure lists them
    colours = tier_colours(tiers)
    fig = new_figure((10.0, 4.0))
    axes = fig.subplots(1, 2, sharey=True)
    width = 0.8 / len(tiers)
    for ax, (col, label) in zip(axes, _PANELS, strict=True):
        upto = int(d[col].max())
        x = np.arange(upto + 1)
        for i, tier in enumerate(tiers):
            values = d.loc[d["tier"].astype(str) == tier, col].astype(int).to_numpy()
            share = np.bincount(values, minlength=upto + 1) / len(values)
            ax.bar(x + (i - (len(tiers) - 1) / 2) * width, share, width,
                   color=colours[tier], edgecolor="black", lw=0.5, label=tier)
        ax.set_xticks(x)
        ax.set_xlabel(f"{label} per device")
        ax.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("share of the tier's devices")
    axes[1].legend(title="tier", fontsize="small")
    fig.suptitle("Participation on the virtual clock: who trained how often",
                 fontsize="medium")
    return fig
