"""Stage ``records``: the attack units become the run's leakage tables.

Reads ``stages/attack`` and writes the long leakage table with the per-device and
per-tier views derived from it (:meth:`simulator.records.RunRecorder.leakage`), and
``attack_budgets`` (:mod:`simulator.budgets`): what every attack unit cost and, for a
searched attack, every grid point's tier result. A searched attack's leakage records
are those of its worst grid point per tier (highest mean SSIM,
:func:`simulator.budgets.worst_point`). A unit that failed is absent from the tables
and listed in the manifest's ``failures``.
"""

from __future__ import annotations

import itertools
import time

import pandas as pd

from simulator.adversary import TierLeakage, combine
from simulator.budgets import budget_table, point_rows
from simulator.search import setting_text
from simulator.stages.attack import INFORMATION, load_unit, units
from simulator.stages.context import RunContext

__all__ = ["records"]


def records(ctx: RunContext) -> None:
    t0 = time.perf_counter()
    index = pd.read_parquet(ctx.path / "observations" / "index.parquet", columns=["tier"])
    tiers = sorted(index["tier"].astype(str).unique())
    results: list[TierLeakage] = []
    budgets: list[dict] = []
    for tier in tiers:
        parts, info = [], {}
        for label, group in itertools.groupby(units(ctx.ws, [tier]),
                                              key=lambda u: u.label):
            if label == INFORMATION:
                info = load_unit(ctx, next(group)) or {}
                continue
            found = [(u, r) for u in group if (r := load_unit(ctx, u)) is not None]
            rows = point_rows(tier, [(setting_text(dict(u.setting)), r)
                                     for u, r in found])
            budgets += rows
            parts += [r for (_, r), row in zip(found, rows) if row["worst"]]
        results.append(combine(tier, parts, info))
    ctx.recorder.leakage(results, budget_table(budgets))
    ctx.recorder.mark_stage("records", time.perf_counter() - t0)

