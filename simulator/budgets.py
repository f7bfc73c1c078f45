"""What each attack cost the attacker, and which grid point a searched attack keeps.

``attack_budgets``
    One row per (tier, attack, setting): every attack unit that finished, searched or
    not. Columns:

    - ``tier``, ``attack`` (the label), ``threat_model``;
    - ``setting``: the grid point as JSON with sorted keys (``{"width":32}``); ``""``
      for an attack without ``search``;
    - ``worst``: whether this point is the one the leakage records hold for this tier
      and attack (always true for an unsearched attack);
    - ``aux_images``, ``oracle_queries``, ``optimisation_steps``: what the attacker
      spent (:class:`simulator.adversary.Spend`); ``cpu_seconds``: CPU time of the
      unit's worker (null for units finished before budgets were recorded);
    - ``devices`` and the point's tier-level leakage: ``ssim`` (with ``ssim_lo`` /
      ``ssim_hi``), ``psnr``, ``mse``, ``attack_acc``, ``nn_ident``,
      ``recognisable``: the same numbers as the tier rows of ``leakage`` (means over
      the tier's devices), for every point, so leakage can be drawn against budget.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from simulator.leakage import images_table, leakage_long

if TYPE_CHECKING:
    from simulator.adversary import AttackResult

__all__ = ["BUDGET_COLUMNS", "COLUMNS", "budget_table", "point_rows", "worst_point"]

BUDGET_COLUMNS = ("aux_images", "oracle_queries", "optimisation_steps", "cpu_seconds")
_METRICS = ("ssim", "psnr", "mse", "attack_acc", "nn_ident", "recognisable")
COLUMNS = ("tier", "attack", "threat_model", "setting", "worst", *BUDGET_COLUMNS,
           "devices", *_METRICS, "ssim_lo", "ssim_hi")


def point_rows(tier: str, points: list[tuple[str, AttackResult]]) -> list[dict]:
    """One row per point (its setting text and result) of one attack on ``tier``,
    the worst one marked (:func:`worst_point`)."""
    from simulator.adversary import combine
    rows = []
    for setting, result in points:
        long = leakage_long(images_table([combine(tier, [result], {})]))
        t = long[(long["scope"] == "tier") & (long["attack"] == result.label)]
        t = t.set_index("metric")
        first = result.images["threat_model"][:1]
        rows.append({"tier": tier, "attack": result.label,
                     "threat_model": str(first[0]) if len(first) else None,
                     "setting": setting, **dict.fromkeys(BUDGET_COLUMNS),
                     **result.budget,
                     "devices": t["n"].get("ssim"),
                     **{m: t["value"].get(m, np.nan) for m in _METRICS},
                     "ssim_lo": t["lo"].get("ssim", np.nan),
                     "ssim_hi": t["hi"].get("ssim", np.nan)})
    if not rows:   # every point failed
        return rows
    worst = worst_point([r["ssim"] for r in rows])
    for i, row in enumerate(rows):
        row["worst"] = i == worst
    return rows


def worst_point(tier_ssim: list[float]) -> int:
    """The grid point that leaked most on a tier: the highest mean SSIM over the
    tier's devices (each device's SSIM a mean over its images). Ties go to the
    first point in grid order; a point without images (NaN) only when all are."""
    values = np.array([-np.inf if np.isnan(v) else v for v in tier_ssim])
    return int(np.argmax(values))


def budget_table(rows: list[dict]) -> pd.DataFrame:
    """The ``attack_budgets`` table (columns :data:`COLUMNS`), one dtype per column."""
    frame = pd.DataFrame(rows, columns=list(COLUMNS))
    return frame.astype({"tier": "str", "attack": "str", "threat_model": "object",
                         "setting": "str", "worst": "bool", "aux_images": "Int64",
                         "oracle_queries": "Int64", "optimisation_steps": "Int64",
                         "cpu_seconds": "float64", "devices": "Int64",
                         **{m: "float64" for m in (*_METRICS, "ssim_lo", "ssim_hi")}})

