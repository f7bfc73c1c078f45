"""One defense against the best baseline at matched accuracy, tier by tier, in words.

Per tier and accuracy cost ``k`` (:func:`analysis.matched.matched_accuracy`): among the
other defenses whose range reaches the undefended accuracy minus ``k`` points, the best
baseline is the one that leaks least there (lowest worst-case ``metric``). The
difference, defense minus best baseline, gets a paired bootstrap interval: both are
read on the same resampled devices. Verdict: ``leaks less`` when the whole interval is
below 0, ``leaks more`` when it is above, ``no clear difference`` otherwise; ``not
comparable`` says why (the defense, or every baseline, misses that accuracy).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.matched import CANNOT_REACH, MATCHED, TOO_WEAK, _matched

__all__ = ["LESS", "MORE", "NOT_COMPARABLE", "UNCLEAR", "tier_sentences",
           "versus_best_baseline"]

LESS, MORE, UNCLEAR = "leaks less", "leaks more", "no clear difference"
NOT_COMPARABLE = "not comparable"
_VERBS = {LESS: "leaks less than", MORE: "leaks more than",
          UNCLEAR: "shows no clear difference from"}
_LABELS = {"ssim": "SSIM", "attack_acc": "attack accuracy", "nn_ident": "identification"}


def versus_best_baseline(sweep: str | Path | pd.DataFrame, defense: str = "siftfunnel",
                         metric: str = "ssim", drops: Sequence[float] = (1, 3, 5), *,
                         replicates: int = 200, seed: int = 0) -> pd.DataFrame:
    """``defense`` against the best other defense at each tier and accuracy cost.

    Returns
    -------
    DataFrame
        One row per (other axes, tier, drop): ``defense``, ``status`` (its matched
        status), ``value`` / ``lo`` / ``hi``; ``baseline`` (its setting range, or "")
        with ``baseline_value`` / ``_lo`` / ``_hi``; ``difference`` with ``_lo`` /
        ``_hi`` (2.5 / 97.5 percentiles of the paired replicates); ``verdict`` and
        ``reason`` (why not comparable).

    Raises
    ------
    ValueError
        ``defense`` is not on the sweep's defense axis, or ``metric`` is not measured;
        and what :func:`analysis.matched.matched_accuracy` raises.
    """
    frame, draws = _matched(sweep, drops, None, replicates, seed)
    metrics = frame.attrs["metrics"]
    if metric not in metrics:
        raise ValueError(f"metric {metric!r} is not in the sweep (measured: {metrics})")
    if defense not in set(frame["defense"]):
        raise ValueError(f"defense {defense!r} is not on the sweep's defense axis "
                         f"(there: {sorted(set(frame['defense']))})")
    j, col = metrics.index(metric), f"{metric}_worst_case"
    others = list(frame.columns[:list(frame.columns).index("defense")])
    rows = []
    for key, group in frame.groupby([*others, "tier", "drop"], sort=False, dropna=False):
        mine = group[group["defense"] == defense]
        if mine.empty:
            continue
        me = mine.iloc[0]
        rivals = group[(group["defense"] != defense) & (group["status"] == MATCHED)]
        best = rivals.loc[rivals[col].idxmin()] if len(rivals) else None
        row = dict(zip([*others, "tier", "drop"], key), defense=defense,
                   status=me["status"], value=me[col], lo=me[f"{col}_lo"],
                   hi=me[f"{col}_hi"])
        row.update(_baseline(best, col))
        row.update(_interval(draws[mine.index[0]], None if best is None
                             else draws[best.name], j))
        reason = _not_comparable(me["status"], best is not None,
                                 bool((group["defense"] != defense).any()))
        lo, hi = row["difference_lo"], row["difference_hi"]
        row.update(difference=np.nan if reason else row["value"] - row["baseline_value"],
                   verdict=NOT_COMPARABLE if reason else
                   LESS if hi < 0 else MORE if lo > 0 else UNCLEAR, reason=reason)
        rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs.update(metric=metric, defense=defense, others=others)
    return out


def tier_sentences(versus: pd.DataFrame) -> list[str]:
    """One plain sentence per tier (and other-axes group) from
    :func:`versus_best_baseline`, whatever the answer."""
    metric, defense = versus.attrs["metric"], versus.attrs["defense"]
    label = _LABELS.get(metric, metric)
    keys = [*versus.attrs["others"], "tier"]
    out = []
    for key, group in versus.groupby(keys, sort=False, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        where = ", ".join(f"{k}={v}" for k, v in zip(keys[:-1], key[:-1]))
        parts = [_clause(r, label) for r in group.to_dict("records")]
        out.append(f"Tier {key[-1]}{f' ({where})' if where else ''}: at matched accuracy "
                   f"{defense} " + "; ".join(parts) + ".")
    return out


def _baseline(best: pd.Series | None, col: str) -> dict:
    if best is None:
        return {"baseline": "", "baseline_value": np.nan, "baseline_lo": np.nan,
                "baseline_hi": np.nan}
    settings = " .. ".join(dict.fromkeys(s for s in (best["lower_setting"],
                                                      best["upper_setting"]) if s))
    return {"baseline": settings or best["defense"], "baseline_value": best[col],
            "baseline_lo": best[f"{col}_lo"], "baseline_hi": best[f"{col}_hi"]}


def _interval(mine: np.ndarray | None, theirs: np.ndarray | None, j: int) -> dict:
    """2.5 / 97.5 percentiles of the paired replicates' differences (NaN: none)."""
    out = {"difference_lo": np.nan, "difference_hi": np.nan}
    if mine is None or theirs is None:
        return out
    pairs = mine[:, j] - theirs[:, j]
    pairs = pairs[np.isfinite(pairs)]
    if len(pairs):
        out["difference_lo"], out["difference_hi"] = np.percentile(pairs, (2.5, 97.5))
    return out


def _not_comparable(status: str, has_baseline: bool, others_ran: bool) -> str:
    """Why the defense cannot be compared at this accuracy ("" when it can)."""
    if status == CANNOT_REACH:
        return "cannot reach that accuracy"
    if status == TOO_WEAK:
        return "is too weak to reach that accuracy (its strongest setting costs less)"
    if status != MATCHED:
        return "has no usable point"
    if has_baseline:
        return ""
    return ("has no baseline that reaches that accuracy" if others_ran
            else "has no baseline measured yet")


def _clause(r: dict, label: str) -> str:
    at = f"{r['drop']:g} point{'s' if r['drop'] != 1 else ''} below no defense"
    if r["verdict"] == NOT_COMPARABLE:
        return f"{r['reason']} at {at}"
    interval = (f"[{r['difference_lo']:+.2f}, {r['difference_hi']:+.2f}]"
                if np.isfinite(r["difference_lo"]) else "(no interval)")
    return (f"{_VERBS[r['verdict']]} the best baseline at {at} ({label} {r['value']:.2f} "
            f"vs {r['baseline_value']:.2f} for {r['baseline']}, difference "
            f"{r['difference']:+.2f} {interval})")
