"""Stage ``records``: the attack units become the run's leakage tables.

Reads ``stages/attack`` and writes the long leakage table with the per-device and
per-tier views derived from it (:meth:`simulator.records.RunRecorder.leakage`). A unit
that failed is absent from the tables and listed in the manifest's ``failures``.
"""

from __future__ import annotations

import time

import pandas as pd

from simulator.adversary import TierLeakage, combine
from simulator.stages.attack import INFORMATION, load_unit, units
from simulator.stages.context import RunContext

__all__ = ["records"]


def records(ctx: RunContext) -> None:
    t0 = time.perf_counter()
    index = pd.read_parquet(ctx.path / "observations" / "index.parquet", columns=["tier"])
    tiers = sorted(index["tier"].astype(str).unique())
    results: list[TierLeakage] = []
    for tier in tiers:
        parts, info = [], {}
        for unit in units(ctx.ws, [tier]):
            got = load_unit(ctx, unit)
            if got is None:
                continue
            if unit.label == INFORMATION:
                info = got
            else:
                parts.append(got)
        results.append(combine(tier, parts, info))
    ctx.recorder.leakage(results)
    ctx.recorder.mark_stage("records", time.perf_counter() - t0)
