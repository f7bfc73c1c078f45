"""Attack search grids: validated with the attack's own fields, one unit per point, the
worst point per tier in the records, and what every attack result cost."""

from __future__ import annotations

import copy
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from simulator.budgets import COLUMNS as BUDGET_COLUMNS
from simulator.cli import main
from simulator.engine.local import run_locally
from simulator.interrupt import RunInterrupted
from simulator.leakage import COLUMNS
from simulator.loading import ScenarioError, validate_scenario
from simulator.preflight import preflight
from simulator.run import attack_run, run_scenario
from simulator.search import grid, setting_key, setting_text

EPOCHS, BATCH = 2, 8
INVERSE = {"name": "inverse_network", "epochs": EPOCHS, "batch_size": BATCH,
           "width": 16}
QUERY_FREE = {"name": "query_free", "shadow_epochs": 1, "iterations": 5}


def _with_attacks(raw: dict, *attacks: dict) -> dict:
    raw["training"].update(rounds=2, fraction=1.0)
    raw["adversary"] = {"enabled": True, "threat_model": "black_box_query",
                        "attacks": list(attacks), "evaluation_epochs": 1,
                        "information": {"enabled": False}}
    return raw


def _problems(raw: dict) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        validate_scenario(raw)
    return info.value.problems


def _run(raw: dict, path: Path, **kw) -> Path:
    return run_scenario(validate_scenario(raw), path, transport_factory=run_locally,
                        **kw)


def _search(pool: int) -> str:
    return f"adversary.attacks.0.search={{width: [8, 16], aux_size: [24, {pool}]}}"


def _budgets(path: Path) -> pd.DataFrame:
    return pd.read_parquet(path / "attack_budgets.parquet")


def _leakage(path: Path, attack: str) -> pd.DataFrame:
    long = pd.read_parquet(path / "leakage.parquet")
    return long[long["attack"] == attack].reset_index(drop=True)


def _units(path: Path, tier: str) -> list[str]:
    return sorted(p.name for p in (path / "stages" / "attack" / tier).iterdir())


def _inverse_network_steps(aux: int) -> int:
    """Epochs x mini-batches of the decoder's training split (10% held out, and a
    trailing single row joins the batch before it)."""
    train = aux - min(aux - 1, max(1, round(aux * 0.1)))
    return EPOCHS * (math.ceil(train / BATCH) - (train % BATCH == 1 and train > BATCH))


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A run without search (local engine): the reference for the searched ones."""
    from conftest import SMOKE
    raw = _with_attacks(copy.deepcopy(SMOKE), INVERSE, QUERY_FREE)
    return _run(raw, tmp_path_factory.mktemp("plain") / "run")


@pytest.fixture(scope="module")
def pool(plain) -> int:
    """Every auxiliary image the adversary holds (what query_free was given)."""
    return int(_budgets(plain).query("attack == 'query_free'")["aux_images"].iloc[0])


@pytest.fixture(scope="module")
def searched(plain, pool, tmp_path_factory):
    """The plain run attacked again with a 4-point grid on the inverse network."""
    path = tmp_path_factory.mktemp("searched") / "run"
    shutil.copytree(plain, path)
    return attack_run(path, [_search(pool)], executor="local")


# -- the schema -------------------------------------------------------------------

def test_search_names_and_values_are_checked_by_the_attacks_own_fields(smoke_raw):
    raw = _with_attacks(smoke_raw, {**INVERSE, "search": {
        "widht": [8], "epochs": [0, 2], "lr": 0.1, "batch_size": [8, 8],
        "depth_extra": []}})
    problems = sorted(_problems(raw))
    assert len(problems) == 5
    batch, depth, epochs, lr, widht = problems
    assert widht.startswith("adversary.attacks[0].search.widht: not a parameter of "
                            "attack 'inverse_network'; it searches: width, depth_extra")
    assert widht.endswith("aux_size")
    assert epochs.startswith("adversary.attacks[0].search.epochs[0]: ")
    assert "greater than or equal to 1" in epochs and "(got 0)" in epochs
    assert lr.startswith("adversary.attacks[0].search.lr: give a list of values")
    assert batch.startswith("adversary.attacks[0].search.batch_size: ")
    assert "repeated: [8]" in batch
    assert depth.startswith(
        "adversary.attacks[0].search.depth_extra: give at least one")


def test_a_grid_above_the_cap_names_its_size_and_how_to_shrink_it(smoke_raw):
    raw = _with_attacks(smoke_raw, QUERY_FREE, {**INVERSE, "search": {
        "width": [8, 16, 32], "epochs": [1, 2, 3], "aux_size": [16, 32]}})
    (problem,) = _problems(raw)
    assert problem.startswith("adversary: attacks[1].search has 18 points "
                              "(3 width x 3 epochs x 2 aux_size), more than "
                              "max_search_points (16)")
    assert "drop values" in problem and "raise adversary.max_search_points" in problem
    raw["adversary"]["max_search_points"] = 18
    sc = validate_scenario(raw)
    points = grid(sc.adversary.attacks[1])
    assert len(points) == 18 and points[0] == {"width": 8, "epochs": 1, "aux_size": 16}
    assert grid(sc.adversary.attacks[0]) == [{}]


def test_a_fault_may_strike_one_grid_point_that_exists(smoke_raw):
    raw = _with_attacks(smoke_raw, {**INVERSE, "search": {"width": [8, 16]}})
    raw["faults"] = {"kill_adversary": [{"tier": "small", "attack": "inverse_network",
                                         "point": 2}]}
    (problem,) = _problems(raw)
    assert "faults.kill_adversary[0].point is 2" in problem and "points 0-1" in problem


def test_aux_size_beyond_the_auxiliary_data_fails_preflight(smoke_raw):
    raw = _with_attacks(smoke_raw, {**INVERSE, "aux_size": 50},
                        {**QUERY_FREE, "search": {"aux_size": [16, 5000]}})
    with pytest.raises(ScenarioError) as err:
        preflight(validate_scenario(raw))
    (problem,) = err.value.problems
    assert problem.startswith("adversary.attacks[1].search.aux_size: 5000 auxiliary "
                              "images asked, but the adversary's auxiliary data holds")


def test_validate_prints_each_attacks_grid_size(tmp_path, smoke_raw, capsys):
    raw = _with_attacks(smoke_raw, {**INVERSE, "search": {"width": [8, 16],
                                                          "aux_size": [16, 24]}},
                        QUERY_FREE)
    path = tmp_path / "searched.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "attack grids: inverse_network 4 points (2 width x 2 aux_size), " \
           "query_free 1 point" in out


def test_setting_keys_are_stable_and_order_free():
    # unit file names of existing run directories depend on this key: never change it
    assert setting_key({"width": 8, "aux_size": 24}) == \
        setting_key({"aux_size": 24, "width": 8}) == "340a305513"
    assert setting_text({"width": 8, "aux_size": 24}) == '{"aux_size":24,"width":8}'
    assert setting_text({}) == ""


# -- runs ------------------------------------------------------------------------

def test_an_unsearched_run_keeps_its_unit_files_and_records_budgets(plain, pool):
    for tier in ("small", "large"):
        assert _units(plain, tier) == ["inverse_network.npz", "query_free.npz"]
    assert list(pd.read_parquet(plain / "leakage.parquet").columns) == list(COLUMNS)
    budgets = _budgets(plain)
    assert list(budgets.columns) == list(BUDGET_COLUMNS)
    assert len(budgets) == 4 and budgets["worst"].all()
    assert (budgets["setting"] == "").all()
    inverse = budgets[budgets["attack"] == "inverse_network"]
    free = budgets[budgets["attack"] == "query_free"]
    assert (inverse["aux_images"] == pool).all() and (free["aux_images"] == pool).all()
    assert (inverse["oracle_queries"] == pool).all()      # each aux image queried once
    assert (free["oracle_queries"] == 0).all()            # it never queries the edge
    assert (inverse["optimisation_steps"] == _inverse_network_steps(pool)).all()
    # shadow-edge steps, then 5 inversion iterations per chunk of observed features
    assert (free["optimisation_steps"] > 5).all()
    assert (budgets["cpu_seconds"] > 0).all()
    # a budget row's leakage is the tier row of the leakage table
    tiers = _leakage(plain, "inverse_network").query(
        "scope == 'tier' and metric == 'ssim'")
    assert np.allclose(inverse.set_index("tier")["ssim"].sort_index(),
                       tiers.set_index("tier")["value"].sort_index())


def test_a_searched_attack_records_every_point_and_its_worst(plain, searched, pool):
    budgets = _budgets(searched)
    inverse = budgets[budgets["attack"] == "inverse_network"]
    assert len(inverse) == 8 and inverse.groupby("tier")["worst"].sum().eq(1).all()
    settings = [json.loads(s) for s in inverse["setting"]]
    assert {(s["width"], s["aux_size"]) for s in settings} == \
        {(8, 24), (8, pool), (16, 24), (16, pool)}
    for tier in ("small", "large"):
        keys = sorted(f"inverse_network-{setting_key(s)}.npz"
                      for s, t in zip(settings, inverse["tier"]) if t == tier)
        assert _units(searched, tier) == sorted([*keys, "query_free.npz"])
    # what each point spent follows its setting
    aux = inverse["setting"].map(lambda s: json.loads(s)["aux_size"])
    assert (inverse["aux_images"] == aux).all()
    assert (inverse["oracle_queries"] == aux).all()
    assert (inverse["optimisation_steps"] == aux.map(_inverse_network_steps)).all()
    # the records hold, per tier, the point with the highest mean SSIM
    worst = inverse[inverse["worst"]].set_index("tier")
    assert (worst["ssim"] == inverse.groupby("tier")["ssim"].max()).all()
    rows = _leakage(searched, "inverse_network")
    tier_ssim = rows.query("scope == 'tier' and metric == 'ssim'").set_index("tier")
    assert np.allclose(tier_ssim["value"], worst.loc[tier_ssim.index, "ssim"])
    device_ssim = rows.query("scope == 'device' and metric == 'ssim'")
    assert np.allclose(device_ssim.groupby("tier")["value"].mean(),
                       worst.sort_index()["ssim"])
    # every point draws the attack's own seeds: the point equal to the unsearched
    # attack gives its numbers, and the other attack is untouched
    same = inverse[inverse["setting"] == setting_text({"aux_size": pool, "width": 16})]
    before = _budgets(plain).query("attack == 'inverse_network'")
    assert np.array_equal(same.set_index("tier")["ssim"].sort_index(),
                          before.set_index("tier")["ssim"].sort_index())
    pd.testing.assert_frame_equal(_leakage(searched, "query_free"),
                                  _leakage(plain, "query_free"))


def test_a_resumed_search_redoes_only_the_points_not_finished(plain, searched, pool,
                                                              tmp_path, stop_at):
    path = tmp_path / "run"
    shutil.copytree(plain, path)
    with pytest.raises(RunInterrupted):
        attack_run(path, [_search(pool)], progress=stop_at("attack", 2),
                   executor="local")
    finished = {p: p.stat().st_mtime_ns
                for p in (path / "stages" / "attack").rglob("*.npz")}
    assert len(finished) == 2
    raw = yaml.safe_load((path / "scenario.yaml").read_text())
    _run(raw, path, resume=True)
    assert {p: p.stat().st_mtime_ns for p in finished} == finished
    assert len(list((path / "stages" / "attack").rglob("*.npz"))) == 10
    pd.testing.assert_frame_equal(pd.read_parquet(path / "leakage.parquet"),
                                  pd.read_parquet(searched / "leakage.parquet"))
    pd.testing.assert_frame_equal(_budgets(path).drop(columns="cpu_seconds"),
                                  _budgets(searched).drop(columns="cpu_seconds"))


def test_a_grid_point_that_dies_twice_is_recorded_and_the_others_count(smoke_raw,
                                                                       tmp_path):
    raw = _with_attacks(smoke_raw, {**INVERSE, "search": {"width": [8, 16]}})
    raw["faults"] = {"kill_adversary": [{"tier": "small", "attack": "inverse_network",
                                         "point": 1, "times": 2}]}
    path = _run(raw, tmp_path / "run")
    manifest = json.loads((path / "manifest.json").read_text())
    [failure] = manifest["failures"]
    assert (failure["tier"], failure["attack"], failure["setting"]) == \
        ("small", "inverse_network", '{"width":16}')
    key = setting_key({"width": 16})
    assert (path / "stages" / "attack" / "small" /
            f"inverse_network-{key}.failed.json").is_file()
    budgets = _budgets(path)
    assert budgets.groupby("tier").size().to_dict() == {"small": 1, "large": 2}
    small = budgets[budgets["tier"] == "small"].iloc[0]
    assert small["setting"] == '{"width":8}' and small["worst"]
    assert set(_leakage(path, "inverse_network")["tier"]) == {"small", "large"}


def test_analysis_reads_and_draws_the_searched_grid(plain, searched, pool, tmp_path):
    from analysis.figures import leakage_vs_attack_budget
    from analysis.report import build_report
    from analysis.rundir import load_run
    from analysis.search import searched_attacks
    run = load_run(searched)
    pd.testing.assert_frame_equal(run.budgets, _budgets(searched))
    assert searched_attacks(run.budgets) == ["inverse_network"]
    assert searched_attacks(load_run(plain).budgets) == []   # its report: no section
    fig = leakage_vs_attack_budget(run.budgets, "aux_size")
    assert [ax.get_title() for ax in fig.axes] == ["tier large", "tier small"]
    for ax in fig.axes:
        lines = {c.get_label(): c.lines[0] for c in ax.containers}
        assert list(lines) == ["width=8", "width=16"]
        assert all(ln.get_xdata().tolist() == [24, pool] for ln in lines.values())
    md = build_report(run).markdown(tmp_path)
    assert "## Attacker's budget (searched attacks)" in md and "skipped" not in md
    for param in ("aux_size", "width"):
        assert f"inverse_network: tier SSIM (95% CI) against {param}" in md
