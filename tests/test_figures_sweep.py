"""Figures of large sweeps: one legend entry per point must not crowd out the plot."""

from __future__ import annotations

import warnings

import pandas as pd

from analysis.figures import pareto_front, privacy_utility_frontier, tier_leakage_vs_budget
from analysis.figures._style import figure_png


def _fits(fig) -> None:
    """The figure renders without matplotlib's layout warning, its legend inside the
    figure and its plot a real share of it."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # "constrained_layout not applied" included
        figure_png(fig)
    renderer = fig.canvas.get_renderer()
    box = fig.axes[0].get_legend().get_window_extent(renderer)
    assert box.y0 >= 0 and box.y1 <= fig.bbox.height and box.x1 <= fig.bbox.width
    plot = fig.axes[0].get_window_extent(renderer)
    assert plot.width > 0.4 * fig.bbox.width and plot.height > 0.5 * fig.bbox.height


def test_a_41_point_sweep_keeps_its_legends_and_plots_in_the_figures():
    """One legend entry per sweep point fits beside a plot that keeps its size (a
    fixed-size figure squeezed the axes to nothing, with matplotlib's warning, and cut
    the legend off); the frontier then names only its front's points."""
    tiers = pd.DataFrame({"tier": ["low", "mid", "high"], "macs": [1e5, 4e5, 5e6],
                          "ssim_rmle_mean": [0.2, 0.4, 0.7],
                          "ssim_rmle_lo": [0.1, 0.3, 0.6], "ssim_rmle_hi": [0.3, 0.5, 0.8]})
    sweep = pd.concat([tiers.assign(strength=s, accuracy_mean=0.5 + s / 100,
                                    ssim_rmle_mean=tiers["ssim_rmle_mean"] + s / 100)
                       for s in range(41)], ignore_index=True)
    _fits(tier_leakage_vs_budget(sweep, group="strength", leakage="ssim_rmle"))
    fig = privacy_utility_frontier(sweep, leakage="ssim_rmle", group="strength")
    _fits(fig)
    front = pareto_front(sweep["ssim_rmle_mean"], sweep["accuracy_mean"])
    assert 0 < len(fig.axes[0].texts) == front.sum() < len(sweep)
