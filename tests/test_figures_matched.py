"""The defense-ranges figure behind the matched-accuracy table."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.colors import to_rgba
from test_matched import POINTS, write_sweep

from analysis.figures import matched_accuracy_ranges
from analysis.matched import defense_ranges
from analysis.report import write_report


def test_defense_ranges_are_the_points_matched_accuracy_reads(tmp_path):
    ranges = defense_ranges(write_sweep(tmp_path / "s"))
    assert len(ranges) == 2 * len(POINTS)                 # a row per point and tier
    low = ranges[ranges["tier"] == "low"].set_index("setting")
    assert low.loc["none", "cost_points"] == 0
    assert low.loc["gaussian_noise(sigma=1.0)", "cost_points"] == pytest.approx(5)
    assert low.loc["dropout(rate=0.9)", "cost_points"] == pytest.approx(35)
    # failed (sigma 4) and collapsed (nopeek a=50) points are not usable
    assert not low.loc["gaussian_noise(sigma=4.0)", "usable"]
    assert not low.loc["nopeek(a=50)", "usable"]
    assert low["usable"].sum() == len(POINTS) - 2
    high = ranges[ranges["tier"] == "high"].set_index("setting")
    assert high.loc["none", "ssim_worst_case"] == pytest.approx(1.0)  # 0.9 + 0.1


def test_a_panel_per_tier_a_line_per_defense_the_highlight_in_black(tmp_path):
    fig = matched_accuracy_ranges(write_sweep(tmp_path / "s"), highlight="dropout",
                                  drops=(1, 3, 5))
    axes = fig.axes
    assert [ax.get_title() for ax in axes] == ["tier low", "tier high"]
    low = {line.get_label(): line for line in axes[0].get_lines()
           if not line.get_label().startswith("_")}
    assert set(low) == {"gaussian_noise", "dropout", "nopeek", "none (reference)"}
    # each line: the usable points in order of cost (sigma 4 failed: not drawn)
    noise = low["gaussian_noise"]
    assert np.allclose(noise.get_xdata(), [1, 5, 15])
    assert np.allclose(noise.get_ydata(), [0.6, 0.4, 0.2])
    assert np.allclose(low["nopeek"].get_xdata(), [1])   # a=50 collapsed: left out
    assert np.allclose(low["none (reference)"].get_xydata(), [[0, 0.9]])
    assert to_rgba(low["dropout"].get_color()) == to_rgba("black")
    assert low["dropout"].get_linewidth() > noise.get_linewidth()
    verticals = sorted(line.get_xdata()[0] for line in axes[0].get_lines()
                       if line.get_label().startswith("_"))
    assert verticals == [1, 3, 5]
    # one legend for the figure, one entry per defense and the reference
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        "gaussian_noise", "dropout", "nopeek", "none (reference)"]


def test_the_sweep_report_draws_the_ranges_and_bad_metrics_are_named(tmp_path):
    sweep = write_sweep(tmp_path / "s")
    with pytest.raises(ValueError, match="metric='psnr'.*choose from"):
        matched_accuracy_ranges(sweep, metric="psnr")
    html_path, md_path = write_report(sweep)
    md = md_path.read_text()
    assert "Each defense's strengths: worst-case SSIM against accuracy cost" in md
    assert "Defense ranges figure skipped" not in md
