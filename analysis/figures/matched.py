"""Each defense's strength range against its accuracy cost, per tier: the picture
behind the "privacy at matched accuracy" table (:mod:`analysis.matched`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, NullLocator

from analysis.figures._style import axis_label, new_figure, tier_colours
from analysis.matched import REFERENCE, defense_ranges

__all__ = ["matched_accuracy_ranges"]

LINEAR_POINTS = 10   # the x axis is linear up to this many points of cost, log beyond


def matched_accuracy_ranges(sweep: str | Path | pd.DataFrame, metric: str = "ssim",
                            drops: Sequence[float] = (1, 3, 5),
                            highlight: str | None = "siftfunnel",
                            axis: str | None = None) -> Figure:
    """Worst-case leakage against accuracy cost, a panel per tier, a line per defense.

    Each defense's usable points (complete, not collapsed) are joined in order of
    cost, where cost is the tier's undefended accuracy minus the point's, in
    accuracy points; the undefended point sits at cost 0 (a black star). Dotted
    verticals mark ``drops``, where the matched-accuracy table reads every line
    (interpolated between the two points around it). ``highlight`` (a defense name)
    is drawn thick in black. The x axis is linear up to :data:`LINEAR_POINTS` points
    and logarithmic beyond, so collapsed settings (tens of points) stay in view
    without squeezing the region the table reads.

    Parameters
    ----------
    sweep
        A sweep directory or its table (:func:`analysis.rundir.load_sweep`).
    metric
        ``ssim``, ``attack_acc`` or ``nn_ident`` (the worst case over attacks).
    """
    ranges = defense_ranges(sweep, axis=axis)
    column = f"{metric}_worst_case"
    if column not in ranges:
        raise ValueError(f"metric={metric!r} has no worst-case column in the sweep; "
                         f"choose from {ranges.attrs['metrics']}")
    others = list(ranges.columns[:ranges.columns.get_loc("tier")])
    if others:
        raise ValueError(f"the sweep has axes besides the defense ({others}): draw one "
                         "value of them at a time (filter the table)")
    tiers = list(dict.fromkeys(ranges["tier"]))
    defenses = [d for d in dict.fromkeys(ranges["defense"]) if d != REFERENCE]
    styles = {d: {"color": "black", "lw": 2.6, "ms": 5, "zorder": 3} if d == highlight
              else {"color": c, "lw": 1.2, "ms": 3.5, "zorder": 2}
              for d, c in tier_colours(defenses).items()}
    fig = new_figure((3.6 * len(tiers) + 2.4, 4.6))
    axes = fig.subplots(1, len(tiers), sharey=True, squeeze=False)[0]
    usable = ranges[ranges["usable"]]
    for ax, tier in zip(axes, tiers, strict=True):
        _panel(ax, usable[usable["tier"] == tier], column, styles, drops)
        ax.set_title(f"tier {tier}")
    axes[0].set_ylabel(axis_label(column))
    entries: dict[str, object] = {}   # a defense without points on the first tier too
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            entries.setdefault(label, handle)
    fig.legend(list(entries.values()), list(entries), loc="outside right upper",
               fontsize=8, title="defense (its strengths)")
    fig.suptitle(f"{metric} worst case at each defense's accuracy cost "
                 f"(dotted: the matched costs {', '.join(f'{k:g}' for k in drops)})")
    return fig


def _panel(ax: Axes, rows: pd.DataFrame, column: str, styles: dict[str, dict],
           drops: Sequence[float]) -> None:
    """One tier: a line per defense in order of cost, the reference star, the drops."""
    for defense, style in styles.items():
        line = rows[rows["defense"] == defense].sort_values("cost_points")
        if not line.empty:
            ax.plot(line["cost_points"], line[column], marker="o", label=defense,
                    **style)
    ref = rows[rows["defense"] == REFERENCE]
    ax.plot(ref["cost_points"], ref[column], marker="*", ms=13, color="black",
            ls="none", zorder=4, label=f"{REFERENCE} (reference)")
    for k in drops:
        ax.axvline(k, color="grey", ls=":", lw=1, zorder=1)
    ax.set_xscale("symlog", linthresh=LINEAR_POINTS, linscale=2)
    low, high = rows["cost_points"].min(), rows["cost_points"].max()
    ax.set_xlim(min(-2.0, float(low) - 1), max(2.0 * max(drops), 1.15 * float(high)))
    ax.xaxis.set_major_locator(FixedLocator(
        [t for t in (-5, 0, *drops, 10, 20, 50, 100) if t >= low - 1]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel("Accuracy cost, points (lower = more useful)\n"
                  "undefended accuracy minus the point's")
    ax.grid(alpha=0.3)
