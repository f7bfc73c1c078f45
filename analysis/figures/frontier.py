"""Privacy-utility frontier: which configurations no other one beats on both axes."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from analysis.figures._style import (axis_label, describe, legend_beside, maybe_log_x,
                                     new_axes, resolve_column, tier_colours, value_label)
from analysis.figures.budget import default_leakage

__all__ = ["pareto_front", "privacy_utility_frontier"]

FRONT_GID = "pareto_front"
NAMED_POINTS = 24   # label every point up to this many; past it, only the front's points


def pareto_front(leakage: np.ndarray | pd.Series, utility: np.ndarray | pd.Series
                 ) -> np.ndarray:
    """Mask of the non-dominated points (lower leakage and higher utility are better).

    A point is dominated when another has leakage <= and utility >= with one strict;
    rows with a non-finite value are never on the front. Ties are all kept.
    """
    x, y = np.asarray(leakage, dtype=float), np.asarray(utility, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"leakage and utility must be 1-D of one length, got shapes "
                         f"{x.shape} and {y.shape}")
    ok = np.isfinite(x) & np.isfinite(y)
    xo, yo = x[:, None], y[:, None]  # row i: is some j better than i?
    better = (x[None, :] <= xo) & (y[None, :] >= yo) & ((x[None, :] < xo)
                                                         | (y[None, :] > yo))
    dominated = (better & ok[None, :]).any(axis=1)
    return ok & ~dominated


def privacy_utility_frontier(frame: pd.DataFrame, leakage: str | None = None,
                             utility: str = "accuracy_mean",
                             group: str | None = "defense",
                             ax: Axes | None = None) -> Figure:
    """Leakage against utility, one point per row, with the Pareto front as a step line.

    Works on a tier table (a row per tier), a sweep table (a row per point and tier;
    failed points are left out) or :func:`analysis.compare.compare_runs` output
    (``group="run"``).

    Parameters
    ----------
    leakage : str, optional
        Lower is better, e.g. ``ssim_worst_case_mean`` (default); a cost column
        (``bytes_per_sample``) gives a cost frontier.
    utility : str
        Higher is better.
    group : str or None
        Column that colours the points (``defense``, ``run``, a sweep axis).
    """
    data, x_col, y_col = _rows(frame, leakage, utility, group)
    keys = data[group].astype(str) if group else pd.Series("all", index=data.index)
    colours = tier_colours(list(dict.fromkeys(keys)))
    size, columns = legend_beside(len(colours) + 1, (9.0, 4.6))   # + the front's entry
    fig, ax = new_axes(ax, figsize=size)
    front = _draw_front(ax, data[x_col].to_numpy(float), data[y_col].to_numpy(float))
    named = front if len(data) > NAMED_POINTS else np.ones(len(data), dtype=bool)
    for key, colour in colours.items():
        mine = (keys == key).to_numpy()
        g = data[mine]
        ax.scatter(g[x_col], g[y_col], s=55, color=colour, edgecolor="black",
                   label=value_label(key), zorder=3)
        for (_, row) in g[named[mine]].iterrows():
            ax.annotate(_point_label(row, group), (row[x_col], row[y_col]),
                        textcoords="offset points", xytext=(5, 4), fontsize="x-small")
    ax.set_xlabel(axis_label(x_col))
    ax.set_ylabel(axis_label(y_col))
    leaks = describe(x_col)[2] is not None
    if not leaks:  # a cost axis may span decades; leakage scores stay linear
        maybe_log_x(ax, data[x_col])
    kind = "Privacy" if leaks else "Cost"
    ax.set_title(f"{kind}-utility frontier: {x_col} (better: up, left)")
    ax.legend(title=group, fontsize="x-small", loc="upper left", bbox_to_anchor=(1.01, 1.0),
              ncols=columns)
    ax.grid(alpha=0.3)
    return fig


def _rows(frame: pd.DataFrame, leakage: str | None, utility: str,
          group: str | None) -> tuple[pd.DataFrame, str, str]:
    """Completed rows with finite values, and the resolved column names."""
    data = frame
    if "status" in data.columns:  # sweep tables: failed points have no results
        data = data[data["status"].astype(str) == "complete"]
    x_col = resolve_column(data, leakage or default_leakage(data), "leakage")
    y_col = resolve_column(data, utility, "utility")
    if group is not None and group not in data.columns:
        raise ValueError(f"group={group!r} is not a column; columns: "
                         f"{list(data.columns)}")
    data = data[np.isfinite(data[x_col].astype(float))
                & np.isfinite(data[y_col].astype(float))]
    if data.empty:
        raise ValueError(f"leakage={x_col!r} / utility={y_col!r} have no finite rows")
    return data, x_col, y_col


def _draw_front(ax: Axes, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The non-dominated points joined as a staircase (``steps-post``); returns the
    front's mask."""
    front = pareto_front(x, y)
    fx, fy = x[front], y[front]
    order = np.lexsort((fy, fx))
    # ringed markers keep a one-point front visible (a step line needs two)
    ax.step(fx[order], fy[order], where="post", color="black", lw=1.4, ls="--",
            marker="o", ms=13, mfc="none", label="Pareto front", gid=FRONT_GID,
            zorder=2)
    return front


def _point_label(row: pd.Series, group: str | None) -> str:
    parts = []
    if "point" in row.index and group != "point":
        parts.append(f"p{row['point']}")
    if "tier" in row.index and group != "tier":
        parts.append(str(row["tier"]))
    return "/".join(parts)
