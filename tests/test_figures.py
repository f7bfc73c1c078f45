"""Figures from plain DataFrames: artists, values drawn, labels, Pareto front."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.container import BarContainer, ErrorbarContainer
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.image import AxesImage

from analysis.figures import (axis_label, information_vs_budget,
                              leakage_vs_attack_budget, leakage_vs_budget,
                              pareto_front, privacy_utility_frontier,
                              reconstruction_grid, tier_bars, tier_leakage_vs_budget,
                              training_curves)
from analysis.figures.frontier import FRONT_GID
from analysis.figures.search import WORST_GID

TIERS = {"low": 1e5, "mid": 4e5, "high": 5e6}


@pytest.fixture
def devices() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = [{"device_id": 10 * k + i, "tier": t, "macs": macs, "params": 100 * (k + 1),
             "latency_ms": rng.uniform(1, 2), "accuracy": rng.uniform(0.6, 1.0),
             "ssim_rmle": rng.uniform(0.1, 0.8),
             "ssim_worst_case": rng.uniform(0.3, 0.9)}
            for k, (t, macs) in enumerate(TIERS.items()) for i in range(5)]
    return pd.DataFrame(rows)


@pytest.fixture
def tiers() -> pd.DataFrame:
    return pd.DataFrame({
        "tier": list(TIERS), "defense": ["none", "siftfunnel", "none"],
        "macs": list(TIERS.values()), "bytes_per_sample": [256, 768, 8192],
        "accuracy_mean": [0.8, 0.9, 0.95], "accuracy_lo": [0.7, 0.85, np.nan],
        "accuracy_hi": [0.9, 0.95, np.nan], "ssim_rmle_mean": [0.2, 0.4, 0.7],
        "ssim_rmle_lo": [0.1, 0.3, 0.6], "ssim_rmle_hi": [0.3, 0.5, 0.8],
        "attack_acc_rmle_mean": [0.2, 0.3, 0.8], "chance": [0.1] * 3,
        "mi_nats": [0.5, 1.0, 3.0], "dcor2_bc": [0.1, 0.2, 0.5]})


def _of(fig: Figure, kind: type) -> list:
    ax = fig.axes[0]
    pool = ax.collections if kind is PathCollection else ax.containers
    return [a for a in pool if isinstance(a, kind)]


def test_leakage_vs_budget_scatter_per_tier_and_mean_with_interval(devices):
    fig = leakage_vs_budget(devices, "ssim_rmle", "macs")
    assert isinstance(fig, Figure)
    scatters = _of(fig, PathCollection)
    assert [s.get_label() for s in scatters] == list(TIERS)
    assert [len(s.get_offsets()) for s in scatters] == [5, 5, 5]
    bars = _of(fig, ErrorbarContainer)
    assert len(bars) == 3
    for bar, tier in zip(bars, TIERS, strict=True):
        y = bar.lines[0].get_ydata()[0]
        expected = devices.loc[devices["tier"] == tier, "ssim_rmle"].mean()
        assert y == pytest.approx(expected)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"  # 1e5 .. 5e6 spans decades
    assert "lower = more private" in ax.get_ylabel() and "11x11" in ax.get_ylabel()
    assert "FLOPs/2" in ax.get_xlabel()
    assert leakage_vs_budget(devices, budget="params").axes[0].get_xscale() == "linear"
    # default leakage is the worst case
    assert "ssim_worst_case" in leakage_vs_budget(devices).axes[0].get_title()


def test_leakage_vs_budget_lists_rungs_smallest_first(devices):
    shuffled = devices.iloc[::-1].reset_index(drop=True)   # high's devices come first
    scatters = _of(leakage_vs_budget(shuffled, "ssim_rmle", "macs"), PathCollection)
    assert [s.get_label() for s in scatters] == list(TIERS)
    unsized = shuffled.drop(columns=["macs"])
    scatters = _of(leakage_vs_budget(unsized, "ssim_rmle", "latency_ms"), PathCollection)
    assert [s.get_label() for s in scatters] == list(TIERS)[::-1]


def test_leakage_vs_budget_rejects_unknown_columns(devices):
    with pytest.raises(ValueError, match="budget='flops'"):
        leakage_vs_budget(devices, "ssim_rmle", "flops")
    with pytest.raises(ValueError, match="did the adversary run"):
        leakage_vs_budget(devices.drop(columns=["ssim_rmle", "ssim_worst_case"]))


def test_pareto_front_hand_case():
    leak = [0.1, 0.2, 0.3, 0.4, 0.2, np.nan, 0.5, 0.05]
    util = [0.5, 0.7, 0.6, 0.9, 0.7, 1.00, 0.9, 0.4]
    # C (0.3, 0.6) loses to B; G (0.5, 0.9) ties D on utility with more leakage;
    # the NaN row is never on the front; the duplicate of B is kept
    expected = [True, True, False, True, True, False, False, True]
    assert pareto_front(leak, util).tolist() == expected
    with pytest.raises(ValueError, match="1-D of one length"):
        pareto_front([0.1, 0.2], [0.3])


def test_frontier_marks_the_front_with_a_step_line(tiers):
    sweep = pd.concat([tiers.assign(point=0), tiers.assign(point=1)], ignore_index=True)
    sweep["status"] = "complete"
    sweep.loc[1, "ssim_rmle_mean"] = 0.9
    # a failed point that would dominate everything must not count
    failed = tiers.iloc[:1].assign(point=2, status="failed", ssim_rmle_mean=0.0,
                                   accuracy_mean=1.0)
    fig = privacy_utility_frontier(pd.concat([sweep, failed]), "ssim_rmle")
    ax = fig.axes[0]
    assert [s.get_label() for s in _of(fig, PathCollection)] == ["none", "siftfunnel"]
    front = [ln for ln in ax.get_lines() if ln.get_gid() == FRONT_GID]
    assert len(front) == 1
    x = np.unique(front[0].get_xdata())
    assert x.tolist() == pytest.approx([0.2, 0.4, 0.7])
    assert front[0].get_drawstyle() == "steps-post"
    assert "lower = more private" in ax.get_xlabel()
    assert "higher = more useful" in ax.get_ylabel()
    with pytest.raises(ValueError, match="group='nope'"):
        privacy_utility_frontier(tiers, "ssim_rmle", group="nope")


def test_reconstruction_grid_counts_gray_and_rgb():
    rng = np.random.default_rng(1)
    gray = rng.uniform(size=(5, 1, 6, 6)).astype(np.float32)
    fig = reconstruction_grid(gray, gray, title="t", n=8)
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 10 and images[0].get_array().shape == (6, 6)
    assert images[0].get_cmap().name == "gray"
    rgb = rng.uniform(size=(12, 3, 6, 6))
    fig = reconstruction_grid(rgb, rgb * 0.5, n=8)
    images = [im for ax in fig.axes for im in ax.get_images()]
    assert len(images) == 16 and images[0].get_array().shape == (6, 6, 3)
    assert all(isinstance(im, AxesImage) for im in images)
    with pytest.raises(ValueError, match="differ"):
        reconstruction_grid(gray, gray[:3])
    with pytest.raises(ValueError, match="C in"):
        reconstruction_grid(gray[:, 0], gray[:, 0])


def test_tier_bars_heights_and_intervals(tiers):
    fig = tier_bars(tiers, "accuracy")
    bars = _of(fig, BarContainer)
    assert len(bars) == 1
    assert [p.get_height() for p in bars[0].patches] == pytest.approx([0.8, 0.9, 0.95])
    err = _of(fig, ErrorbarContainer)
    assert len(err) == 1
    segments = err[0].lines[2][0].get_segments()
    assert [s[:, 1].tolist() for s in segments[:2]] == [pytest.approx([0.7, 0.9]),
                                                        pytest.approx([0.85, 0.95])]
    assert segments[2][:, 1].tolist() == pytest.approx([0.95, 0.95])  # no interval
    chance = tier_bars(tiers, "attack_acc_rmle_mean").axes[0].get_lines()
    assert [ln.get_ydata()[0] for ln in chance if ln.get_label() == "chance"] == (
        pytest.approx([0.1]))
    with pytest.raises(ValueError, match="ssim_rmle"):
        tier_bars(tiers, "psnr_rmle")


def test_training_curves_one_line_per_tier():
    rounds = pd.DataFrame({"round": [1, 0, 1, 0], "tier": ["a", "a", "b", "b"],
                           "loss": [1.0, 2.0, 0.5, 0.7]})
    lines = training_curves(rounds).axes[0].get_lines()
    assert [ln.get_label() for ln in lines] == ["a", "b"]
    assert lines[0].get_ydata().tolist() == [2.0, 1.0]  # sorted by round
    with pytest.raises(ValueError, match="loss"):
        training_curves(rounds.drop(columns=["loss"]))


def test_information_vs_budget_and_shared_axes(tiers):
    fig = Figure()
    ax = fig.add_subplot()
    assert information_vs_budget(tiers, "dcor2_bc", "macs", ax=ax) is fig
    scatters = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(scatters) == 3 and ax.get_xscale() == "log"
    assert "bias-corrected" in ax.get_ylabel()
    fig = information_vs_budget(tiers, "mi_nats", "bytes_per_sample")
    assert fig.axes[0].get_xscale() == "log"
    assert axis_label("latency_ms_mean").startswith("Simulated latency")
    assert axis_label("ssim_a_b_mean").startswith("SSIM (lower = more private)")


def test_tier_leakage_vs_budget_one_line_per_group_through_its_tiers(tiers):
    sweep = pd.concat([tiers.assign(strength=s, ssim_rmle_mean=tiers["ssim_rmle_mean"] / s)
                       for s in (1, 2)], ignore_index=True)
    fig = tier_leakage_vs_budget(sweep, group="strength", leakage="ssim_rmle")
    ax = fig.axes[0]
    lines = [ln for ln in ax.get_lines() if isinstance(ln, Line2D) and ln.get_label()
             in {"1", "2"}]
    assert sorted(ln.get_label() for ln in lines) == ["1", "2"]
    for line in lines:  # each line runs through its group's tiers in budget order
        s = int(line.get_label())
        assert list(line.get_xdata()) == sorted(TIERS.values())
        expected = sweep[sweep["strength"] == s].sort_values("macs")["ssim_rmle_mean"]
        np.testing.assert_allclose(line.get_ydata(), expected)
    markers = [c for c in ax.collections if isinstance(c, PathCollection)
               and len(c.get_offsets())]
    assert [len(c.get_offsets()) for c in markers] == [3, 3]
    assert len(_of(fig, ErrorbarContainer)) == 2  # intervals from ssim_rmle_lo/_hi
    labels = ax.get_legend_handles_labels()[1]
    assert {f"tier {t}" for t in TIERS} <= set(labels)
    assert ax.get_xscale() == "log" and "lower = more private" in ax.get_ylabel()
    with pytest.raises(ValueError, match="'strength'"):
        tier_leakage_vs_budget(tiers, group="strength")


def test_plugin_specs_become_readable_legend_labels(tiers):
    from analysis.figures import value_label
    spec = '{"name": "siftfunnel", "beta": 0.4, "gamma": 0.1}'
    assert value_label(spec) == "siftfunnel beta=0.4 gamma=0.1"
    assert value_label('{"name": "none"}') == "none"
    assert value_label("0.5") == "0.5" and value_label('{"a": 1}') == '{"a": 1}'
    assert value_label("x" * 80, width=10) == "xxxxxxx..."
    frame = tiers.assign(axis=[spec, spec, '{"name": "none"}'])
    fig = privacy_utility_frontier(frame, "ssim_rmle", group="axis")
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "siftfunnel beta=0.4 gamma=0.1" in labels and "none" in labels


def test_binned_trend_hand_case():
    from analysis.figures import binned_trend
    x = np.arange(20.0)
    trend = binned_trend(x, 2 * x, bins=4)
    assert trend["n"].tolist() == [5, 5, 5, 5]
    assert trend["x"].tolist() == [2.0, 7.0, 12.0, 17.0]
    assert trend["mean"].tolist() == [4.0, 14.0, 24.0, 34.0]
    assert (trend["lo"] < trend["mean"]).all() and (trend["mean"] < trend["hi"]).all()
    assert len(binned_trend(x, x, bins=8)) == 4          # at least 5 points per bin
    assert binned_trend(np.ones(50), np.arange(50.0)).empty   # one budget: no trend
    assert binned_trend(x[:9], x[:9]).empty               # too few for two bins


def test_continuous_budgets_draw_clouds_with_a_binned_trend_per_rung():
    rng = np.random.default_rng(1)
    rows = [{"device_id": i, "tier": tier, "compute_gflops": g,
             "ssim_worst_case": base + 0.05 * np.log10(g) + rng.normal(0, 0.02)}
            for tier, base in (("funnel", 0.2), ("plain", 0.6))
            for i, g in enumerate(10 ** rng.uniform(-1, 2, 400))]
    devices = pd.DataFrame(rows)
    fig = leakage_vs_budget(devices, budget="compute_gflops", bins=6)
    ax = fig.axes[0]
    assert [len(s.get_offsets()) for s in _of(fig, PathCollection)] == [400, 400]
    assert not _of(fig, ErrorbarContainer)    # trends replace the tier means
    trends = {ln.get_gid(): ln for ln in ax.get_lines()}
    assert set(trends) == {"trend:funnel", "trend:plain"}
    from analysis.figures import binned_trend
    for tier in ("funnel", "plain"):
        g = devices[devices["tier"] == tier]
        expected = binned_trend(g["compute_gflops"], g["ssim_worst_case"], 6)
        np.testing.assert_allclose(trends[f"trend:{tier}"].get_ydata(), expected["mean"])
        assert np.all(np.diff(trends[f"trend:{tier}"].get_ydata()) > 0)  # rises
    assert ax.get_xscale() == "log" and "GFLOP/s" in ax.get_xlabel()
    assert "binned mean, 95% CI" in ax.get_legend_handles_labels()[1]


def test_participation_bars_share_of_devices_per_rung():
    from analysis.figures import participation_bars
    devices = pd.DataFrame({"tier": ["a", "a", "a", "a", "b", "b", None],
                            "rounds_completed": [0, 3, 3, 2, 1, 1, 0],
                            "rounds_straggled": [3, 0, 0, 1, 0, 0, 0]})
    fig = participation_bars(devices)
    left, right = fig.axes
    heights = [[p.get_height() for p in c] for c in left.containers]
    assert heights == [[0.25, 0.0, 0.25, 0.5], [0.0, 1.0, 0.0, 0.0]]
    assert [[p.get_height() for p in c] for c in right.containers][0] == \
        [0.5, 0.25, 0.0, 0.25]
    with pytest.raises(ValueError, match="rounds_completed"):
        participation_bars(devices.drop(columns=["rounds_completed"]))


# -- leakage against the attacker's budget (attack_budgets) ------------------------

def _panels(fig: Figure) -> dict[str, object]:
    return {ax.get_title().removeprefix("tier "): ax for ax in fig.axes}


def _lines(ax) -> dict[str, ErrorbarContainer]:
    return {c.get_label(): c for c in ax.containers
            if isinstance(c, ErrorbarContainer)}


def _grid_rows(budgets: pd.DataFrame, tier: str) -> pd.DataFrame:
    rows = budgets[(budgets["tier"] == tier) & (budgets["attack"] == "inverse_network")]
    params = pd.DataFrame([json.loads(s) for s in rows["setting"]], index=rows.index)
    return rows.join(params)


def test_attack_budget_figure_a_panel_per_tier_a_line_per_other_parameter():
    from test_report_search import AUX, WIDTHS, search_budgets
    budgets = search_budgets()
    fig = leakage_vs_attack_budget(budgets, "aux_size")   # the one searched attack
    panels = _panels(fig)
    assert list(panels) == ["low", "high"]   # in table order
    for tier, ax in panels.items():
        rows = _grid_rows(budgets, tier)
        lines = _lines(ax)
        assert list(lines) == [f"width={w}" for w in WIDTHS]   # by value, not text
        for width in WIDTHS:
            line = lines[f"width={width}"]
            g = rows[rows["width"] == width].sort_values("aux_size")
            assert line.lines[0].get_xdata().tolist() == list(AUX)
            np.testing.assert_allclose(line.lines[0].get_ydata(), g["ssim"])
            bars = [s[:, 1] for s in line.lines[2][0].get_segments()]
            np.testing.assert_allclose(bars, g[["ssim_lo", "ssim_hi"]].to_numpy())
        (star,) = [c for c in ax.collections if c.get_gid() == f"{WORST_GID}:{tier}"]
        worst = rows[rows["worst"]]
        np.testing.assert_allclose(star.get_offsets(),
                                   worst[["aux_size", "ssim"]].to_numpy(float))
        assert worst["ssim"].iloc[0] == rows["ssim"].max()
    assert "lower = more private" in fig.axes[0].get_ylabel()
    assert "aux_size" in fig.axes[0].get_xlabel()
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == [
        *(f"width={w}" for w in WIDTHS), "kept in leakage.parquet (highest SSIM)"]
    # along width: a line per aux_size, through the three widths
    lines = _lines(_panels(leakage_vs_attack_budget(budgets, "width"))["low"])
    assert list(lines) == [f"aux_size={a}" for a in AUX]
    assert lines["aux_size=48"].lines[0].get_xdata().tolist() == list(WIDTHS)


def test_attack_budget_figure_on_budget_columns_and_other_metrics():
    from test_report_search import WIDTHS, search_budgets
    budgets = search_budgets()
    # aux_size alone fixes aux_images: it runs along x, the lines stay per width
    ax = _panels(leakage_vs_attack_budget(budgets, "aux_images"))["low"]
    assert list(_lines(ax)) == [f"width={w}" for w in WIDTHS]
    # CPU time follows every parameter: a marker per grid point
    ax = _panels(leakage_vs_attack_budget(budgets, "cpu_seconds"))["low"]
    assert [len(c.lines[0].get_xdata()) for c in _lines(ax).values()] == [1] * 6
    # another metric: its values, no interval recorded; the star stays on the
    # point the records keep (highest SSIM), wherever its MSE lies
    fig = leakage_vs_attack_budget(budgets, "width", leakage="mse")
    ax = _panels(fig)["high"]
    rows = _grid_rows(budgets, "high")
    line = _lines(ax)["aux_size=24"]
    np.testing.assert_allclose(
        line.lines[0].get_ydata(),
        rows[rows["aux_size"] == 24].sort_values("width")["mse"])
    assert not line.has_yerr
    (star,) = [c for c in ax.collections if c.get_gid() == f"{WORST_GID}:high"]
    worst = rows[rows["worst"]]
    np.testing.assert_allclose(star.get_offsets(),
                               worst[["width", "mse"]].to_numpy(float))
    assert "higher = more private" in fig.axes[0].get_ylabel()
    # an unsearched attack: one marker per tier at its budget
    ax = _panels(leakage_vs_attack_budget(budgets, "aux_images", attack="rmle"))["low"]
    assert [c.lines[0].get_xdata().tolist() for c in _lines(ax).values()] == [[48]]


def test_attack_budget_figure_with_a_failed_point_keeps_every_line():
    from test_report_search import search_budgets
    budgets = search_budgets()
    failed = budgets[(budgets["tier"] == "high") & budgets["setting"].str.contains(
        '"width":32') & ~budgets["worst"]].index[:1]
    fig = leakage_vs_attack_budget(budgets.drop(index=failed), "aux_size")
    high = _lines(_panels(fig)["high"])
    assert len(high["width=32"].lines[0].get_xdata()) == 1
    assert len(fig.legends[0].get_texts()) == 4


def test_attack_budget_figure_names_what_it_can_draw():
    from test_report_search import search_budgets
    budgets = search_budgets()
    with pytest.raises(ValueError) as err:
        leakage_vs_attack_budget(budgets, "depth")
    for name in ("x='depth'", "aux_size", "width", "aux_images", "cpu_seconds"):
        assert name in str(err.value)
    with pytest.raises(ValueError, match=r"leakage='ssim_lo'.*'nn_ident'"):
        leakage_vs_attack_budget(budgets, "width", leakage="ssim_lo")
    with pytest.raises(ValueError, match=r"attack='nope'.*'rmle'"):
        leakage_vs_attack_budget(budgets, "width", attack="nope")
    with pytest.raises(ValueError, match="'rmle' searched"):
        leakage_vs_attack_budget(budgets, "width", attack="rmle")
    twice = pd.concat([budgets, budgets.assign(attack="inverse_network_2")])
    with pytest.raises(ValueError, match=r"pass attack=.*'inverse_network_2'"):
        leakage_vs_attack_budget(twice, "width")
    with pytest.raises(ValueError, match="attack_budgets is empty"):
        leakage_vs_attack_budget(budgets.iloc[:0], "width")
    named = budgets.assign(setting=budgets["setting"].str.replace(
        '"width":8', '"width":"small"'))
    with pytest.raises(ValueError, match=r"x='width' takes values that are not num"):
        leakage_vs_attack_budget(named, "width")
