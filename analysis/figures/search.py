"""An attack's leakage against the attacker's budget: one panel per tier, a point per
grid point of its search, the point the records keep marked."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from analysis.figures._style import axis_label, maybe_log_x, new_figure
from analysis.search import BUDGETS, METRICS, searched_attacks, setting_label, settings

__all__ = ["WORST_GID", "leakage_vs_attack_budget"]

WORST_GID = "worst"   # gid prefix of the marker on the point the records keep
_STYLES = ("-", "--", ":", "-.")
_WORST_LABEL = "kept in leakage.parquet (highest SSIM)"


def leakage_vs_attack_budget(budgets: pd.DataFrame, x: str, leakage: str = "ssim",
                             attack: str | None = None) -> Figure:
    """Tier leakage of one attack against a searched parameter or a budget column.

    One panel per tier (shared y axis). Each grid point is a marker, with its 95%
    interval over the tier's devices where recorded (``<leakage>_lo`` / ``_hi``:
    SSIM); points that differ only in ``x`` are joined into a line, one line (and
    colour) per value of the other searched parameters. A budget column that one
    parameter alone fixes (``aux_images`` by ``aux_size``) runs along that parameter
    rather than splitting lines by it. A star marks the point ``leakage.parquet``
    holds for the tier (the highest mean SSIM, whichever metric is drawn).

    Parameters
    ----------
    budgets : DataFrame
        ``attack_budgets`` (``Run.budgets``).
    x : str
        A parameter the attack searched (``width``, ``aux_size``, ...; read from
        ``setting``) or a budget column: ``aux_images``, ``oracle_queries``,
        ``optimisation_steps``, ``cpu_seconds``.
    leakage : str
        ``ssim``, ``psnr``, ``mse``, ``attack_acc``, ``nn_ident``, ``recognisable``.
    attack : str, optional
        The attack label; default the one searched attack (or the only attack).
    """
    attack, rows = _attack_rows(budgets, attack)
    params = settings(rows)
    if leakage not in METRICS or leakage not in rows.columns:
        raise ValueError(f"leakage={leakage!r} is not a leakage column of "
                         f"attack_budgets; choose from {list(METRICS)}")
    if x in params.columns:
        xs = params[x]
    elif x in BUDGETS and x in rows.columns:
        xs = rows[x]
    else:
        raise ValueError(f"x={x!r} is neither a parameter attack {attack!r} searched "
                         f"({list(params.columns)}) nor a budget column "
                         f"({list(BUDGETS)})")
    try:
        xs = xs.astype(float)
    except (TypeError, ValueError):
        raise ValueError(f"x={x!r} takes values that are not numbers "
                         f"({sorted(set(map(str, xs)))}): draw it along another "
                         "parameter or a budget column") from None
    ys = rows[leakage].astype(float)
    keep = np.isfinite(xs) & np.isfinite(ys)
    if not keep.any():
        raise ValueError(f"attack {attack!r} has no finite {leakage!r} / {x!r} rows")
    rows, params, xs, ys = rows[keep], params[keep], xs[keep], ys[keep]
    by = [p for p in params.columns if p != x and not (
        x in BUDGETS and _fixes(params[p], xs, rows["tier"]))]
    lines = [setting_label(v) for v in params[by].to_dict("records")]
    ordered = params[by].sort_values(by) if by else params[by]   # by value, not text
    line_order = list(dict.fromkeys(setting_label(v)
                                    for v in ordered.to_dict("records")))
    return _draw(rows.assign(_x=xs, _y=ys, _line=lines), line_order, x, leakage,
                 attack, by)


def _draw(data: pd.DataFrame, line_order: list[str], x: str, leakage: str,
          attack: str, by: list[str]) -> Figure:
    from matplotlib import colormaps
    shades = colormaps["Dark2"]
    colour = {line: shades(i % shades.N) for i, line in enumerate(line_order)}
    bounds = [f"{leakage}_lo", f"{leakage}_hi"]
    tiers = list(dict.fromkeys(data["tier"].astype(str)))
    fig = new_figure((3.4 * len(tiers) + 2.4, 4.8))
    axes = fig.subplots(1, len(tiers), sharey=True, squeeze=False)[0]
    for ax, tier in zip(axes, tiers, strict=True):
        g = data[data["tier"].astype(str) == tier]
        for line in line_order:
            pts = g[g["_line"] == line].sort_values("_x")
            if pts.empty:
                continue
            y = pts["_y"].to_numpy(float)
            err = None
            if all(b in pts.columns for b in bounds):
                lo, hi = (pts[b].to_numpy(float) for b in bounds)
                err = np.clip(np.nan_to_num([y - lo, hi - y]), 0, None)
            i = line_order.index(line)
            ax.errorbar(pts["_x"], y, yerr=err, fmt=_STYLES[i % len(_STYLES)] + "o",
                        color=colour[line], capsize=3, ms=5, label=line or attack)
        worst = g[g["worst"].astype(bool)]
        ax.scatter(worst["_x"], worst["_y"], marker="*", s=260, color="gold",
                   edgecolor="black", zorder=4, gid=f"{WORST_GID}:{tier}",
                   label=_WORST_LABEL)
        maybe_log_x(ax, g["_x"])
        ax.set_title(f"tier {tier}", fontsize="medium")
        ax.set_xlabel(axis_label(x))
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(axis_label(leakage))
    handles: dict[str, object] = {}
    for ax in axes:   # a point may have failed on one tier: gather every entry
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    handles[_WORST_LABEL] = handles.pop(_WORST_LABEL)   # lines first, then the star
    fig.legend(list(handles.values()), list(handles), fontsize="x-small",
               title=", ".join(by) or None, loc="outside right center")
    fig.suptitle(f"{attack}: tier {leakage} against {x}, a marker per grid point",
                 fontsize="medium")
    return fig


def _attack_rows(budgets: pd.DataFrame, attack: str | None
                 ) -> tuple[str, pd.DataFrame]:
    """The label and rows of the attack to draw; ValueError naming the choices."""
    names = list(dict.fromkeys(budgets["attack"].astype(str)))
    if not names:
        raise ValueError("attack_budgets is empty: no attack finished (or the run "
                         "predates the table; rerun `siftsim attack RUN_DIR`)")
    if attack is None:
        candidates = searched_attacks(budgets) or names
        if len(candidates) > 1:
            raise ValueError(f"several attacks to choose from: pass attack= one of "
                             f"{candidates}")
        attack = candidates[0]
    if attack not in names:
        raise ValueError(f"attack={attack!r} is not in attack_budgets; attacks: "
                         f"{names}")
    return attack, budgets[budgets["attack"].astype(str) == attack]


def _fixes(param: pd.Series, xs: pd.Series, tiers: pd.Series) -> bool:
    """Whether ``param`` alone fixes ``xs`` on every tier (one x per its value)."""
    frame = pd.DataFrame({"t": tiers, "p": param, "x": xs})
    return bool(frame.groupby(["t", "p"])["x"].nunique().le(1).all())
