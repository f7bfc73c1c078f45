"""siftsim analysis: read run directories, tables, figures and reports.

Reads what the simulator recorded; never imports ``simulator`` or ``strategies``.
Names load lazily (PEP 562) so ``import analysis`` stays light (no torch, no
matplotlib until a figure or metric is used). Metrics live in ``analysis.metrics``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Run": "analysis.rundir",
    "RunDirectoryError": "analysis.rundir",
    "attacks_in": "analysis.rundir",
    "load_run": "analysis.rundir",
    "load_sweep": "analysis.rundir",
    "load_sweep_leakage": "analysis.rundir",
    "sweep_axes": "analysis.rundir",
    "information_table": "analysis.tables",
    "leakage_table": "analysis.tables",
    "collapsed_tiers": "analysis.tables",
    "tier_summary": "analysis.tables",
    "worst_case_devices": "analysis.tables",
    "participation_summary": "analysis.fleet",
    "stragglers": "analysis.fleet",
    "search_table": "analysis.search",
    "searched_attacks": "analysis.search",
    "matched_accuracy": "analysis.matched",
    "tier_sentences": "analysis.versus",
    "versus_best_baseline": "analysis.versus",
    "information_vs_budget": "analysis.figures",
    "leakage_vs_attack_budget": "analysis.figures",
    "leakage_vs_budget": "analysis.figures",
    "pareto_front": "analysis.figures",
    "participation_bars": "analysis.figures",
    "privacy_utility_frontier": "analysis.figures",
    "reconstruction_grid": "analysis.figures",
    "tier_bars": "analysis.figures",
    "training_curves": "analysis.figures",
    "build_report": "analysis.report",
    "write_report": "analysis.report",
    "compare_runs": "analysis.compare",
    "write_comparison": "analysis.compare",
    "write_sweep_report": "analysis.compare",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'analysis' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this hook
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
