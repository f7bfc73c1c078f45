"""The attacker's search in analysis: ``Run.budgets``, the grid table and the report
section, on synthetic run directories (the real searched run: tests/test_search.py)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from analysis.report import build_report
from analysis.rundir import ATTACK_BUDGET_COLUMNS, load_run
from analysis.search import search_table, searched_attacks
from analysis.tables import with_ci
from simulator.budgets import COLUMNS, budget_table, worst_point
from simulator.leakage import write_table
from _run_dirs import TIERS, write_run

WIDTHS, AUX = (8, 16, 32), (24, 48)


def search_budgets(seed: int = 0) -> pd.DataFrame:
    """``attack_budgets`` of a run whose inverse network searched width x aux_size
    (6 points per tier) beside an unsearched ``rmle``; built by the simulator's own
    table function, the worst point chosen by its own rule."""
    rng = np.random.default_rng(seed)
    rows = []
    for tier in TIERS:
        points = []
        for width in WIDTHS:
            for aux in AUX:
                ssim = rng.uniform(0.2, 0.8)
                points.append({
                    "tier": tier, "attack": "inverse_network",
                    "threat_model": "black_box_query",
                    "setting": json.dumps({"aux_size": aux, "width": width},
                                          separators=(",", ":")),
                    "aux_images": aux, "oracle_queries": aux,
                    "optimisation_steps": 2 * aux, "cpu_seconds": 0.01 * width * aux,
                    "devices": 4, "ssim": ssim, "ssim_lo": ssim - 0.05,
                    "ssim_hi": ssim + 0.05, "psnr": 10 + 10 * ssim,
                    "mse": 0.1 - 0.1 * ssim, "attack_acc": rng.uniform(),
                    "nn_ident": rng.uniform(), "recognisable": rng.uniform()})
        worst = worst_point([p["ssim"] for p in points])
        rows += [{**p, "worst": i == worst} for i, p in enumerate(points)]
        rows.append({"tier": tier, "attack": "rmle", "threat_model": "black_box_query",
                     "setting": "", "worst": True, "aux_images": 48,
                     "oracle_queries": 48, "optimisation_steps": 10,
                     "cpu_seconds": 1.0, "devices": 4, "ssim": 0.5, "ssim_lo": 0.4,
                     "ssim_hi": 0.6, "psnr": 15.0, "mse": 0.05, "attack_acc": 0.5,
                     "nn_ident": 0.2, "recognisable": 0.6})
    return budget_table(rows)


def test_run_budgets_are_read_and_empty_for_older_runs(tmp_path):
    assert ATTACK_BUDGET_COLUMNS == COLUMNS
    old = load_run(write_run(tmp_path / "old"))
    assert old.budgets.empty and list(old.budgets.columns) == list(COLUMNS)
    plain = load_run(write_run(tmp_path / "plain", attacked=False))
    assert plain.budgets.empty and list(plain.budgets.columns) == list(COLUMNS)
    path = write_run(tmp_path / "searched")
    write_table(path, "attack_budgets", search_budgets())
    budgets = load_run(path).budgets
    pd.testing.assert_frame_equal(budgets,
                                  pd.read_parquet(path / "attack_budgets.parquet"))
    assert len(budgets) == 2 * (6 + 1) and list(budgets.columns) == list(COLUMNS)


def test_search_table_lists_every_grid_point_and_marks_the_kept_one():
    budgets = search_budgets()
    table = search_table(budgets)
    grid = budgets[budgets["attack"] == "inverse_network"].reset_index(drop=True)
    assert len(table) == len(grid) == 2 * 6 and set(table["attack"]) == {
        "inverse_network"}                     # rmle searched nothing: not listed
    assert table["setting"].iloc[0] == "aux_size=24, width=8"
    assert (table["worst"] == "WORST").tolist() == grid["worst"].tolist()
    assert table.groupby("tier")["worst"].apply(lambda w: (w == "WORST").sum()).eq(
        1).all()
    assert table["SSIM (95% CI)"].tolist() == [
        with_ci(*v) for v in grid[["ssim", "ssim_lo", "ssim_hi"]].to_numpy()]
    for col in ("aux_images", "optimisation_steps", "cpu_seconds"):
        assert table[col].tolist() == grid[col].tolist()
    assert searched_attacks(budgets) == ["inverse_network"]
    assert search_table(budgets[budgets["attack"] == "rmle"]).empty


def test_report_adds_the_search_section_only_for_searched_runs(tmp_path):
    searched = write_run(tmp_path / "searched")
    write_table(searched, "attack_budgets", search_budgets())
    doc = build_report(load_run(searched))
    html, md = doc.html(), doc.markdown(tmp_path)
    assert "Attacker&#x27;s budget (searched attacks)" in html
    assert "## Attacker's budget (searched attacks)" in md
    assert html.count("<td>WORST</td>") == len(TIERS)
    assert "<td>aux_size=48, width=32</td>" in html
    for param in ("aux_size", "width"):
        assert f"inverse_network: tier SSIM (95% CI) against {param}" in md
    assert "skipped" not in html
    # unsearched attacks (settings "") render exactly as a run without the table
    unsearched = write_run(tmp_path / "unsearched")
    budgets = search_budgets()
    write_table(unsearched, "attack_budgets", budgets[budgets["setting"] == ""])
    plain = build_report(load_run(write_run(tmp_path / "plain")))
    assert build_report(load_run(unsearched)).html() == plain.html()
    assert doc.figure_count == plain.figure_count + 2
