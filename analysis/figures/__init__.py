"""Figures drawn from plain DataFrames (no Ray, no recomputation), on the Agg canvas.

Every function returns a :class:`matplotlib.figure.Figure`; pass ``ax=`` to draw into
an existing axes. Axis labels state which direction is better and the metric
convention (``/work/shared/reference/metrics.md``).
"""

from analysis.figures._style import axis_label, figure_png, value_label
from analysis.figures.budget import (binned_trend, default_leakage,
                                     information_vs_budget, leakage_vs_budget,
                                     tier_leakage_vs_budget)
from analysis.figures.frontier import pareto_front, privacy_utility_frontier
from analysis.figures.images import reconstruction_grid
from analysis.figures.matched import matched_accuracy_ranges
from analysis.figures.participation import participation_bars
from analysis.figures.search import leakage_vs_attack_budget
from analysis.figures.tiers import tier_bars, training_curves

__all__ = [
    "axis_label",
    "binned_trend",
    "default_leakage",
    "figure_png",
    "information_vs_budget",
    "leakage_vs_attack_budget",
    "leakage_vs_budget",
    "matched_accuracy_ranges",
    "pareto_front",
    "participation_bars",
    "privacy_utility_frontier",
    "reconstruction_grid",
    "tier_bars",
    "tier_leakage_vs_budget",
    "training_curves",
    "value_label",
]
