"""Sweeps: expansion and validation up front, failures recorded, resume, one table."""

from __future__ import annotations

import copy
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import SMOKE
from simulator.loading import ScenarioError
from simulator.sweep import expand_sweep, run_sweep

REPO = Path(__file__).resolve().parents[1]


def _tiny(**sweep) -> dict:
    raw = copy.deepcopy(SMOKE)
    raw["dataset"].update(num_samples=300, num_classes=3)
    raw["tiers"] = [{"name": "a", "count": 2}, {"name": "b", "count": 2,
                                                 "encoder": {"name": "funnel", "width": 8}}]
    raw["training"].update(rounds=1, local_steps=1, batch_size=8)
    raw["sweep"] = sweep
    return raw


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_grid_and_zip_expansion():
    grid = expand_sweep(_tiny(axes={"training.rounds": [1, 2],
                                    "tiers.0.defense": [{"name": "none"},
                                                        {"name": "dropout", "rate": 0.5}]}))
    assert len(grid) == 4
    assert grid[3].scenario.training.rounds == 2
    assert grid[3].scenario.tiers[0].defense.rate == pytest.approx(0.5)
    assert len({p.scenario.name for p in grid}) == 4 and grid[0].scenario.sweep is None
    zipped = expand_sweep(_tiny(mode="zip", axes={"training.rounds": [1, 2],
                                                  "seed": [5, 6]}))
    assert [(p.scenario.training.rounds, p.scenario.seed) for p in zipped] == [(1, 5), (2, 6)]


def test_every_bad_point_is_reported_before_anything_runs():
    with pytest.raises(ScenarioError) as info:
        expand_sweep(_tiny(axes={"tiers.0.defense": [{"name": "gaussian_noise", "sigma": -1},
                                                     {"name": "none"},
                                                     {"name": "nothing"}]}))
    problems = info.value.problems
    assert len(problems) == 2
    assert problems[0].startswith("point 0 (tiers.0.defense=") and "sigma" in problems[0]
    assert problems[1].startswith("point 2 ")


def test_zip_needs_equal_lengths():
    with pytest.raises(ScenarioError, match="one length"):
        expand_sweep(_tiny(mode="zip", axes={"seed": [1, 2], "training.rounds": [1]}))


def test_failures_are_recorded_and_resume_skips_finished_points(tmp_path):
    path = _write(tmp_path, _tiny(axes={"seed": [1, 2, 3]}))
    calls = []

    def runner(scenario, out):
        calls.append(scenario.seed)
        if scenario.seed == 2:
            raise RuntimeError("boom")
        from simulator.engine.local import run_locally
        from simulator.run import run_scenario
        return run_scenario(scenario, out, transport_factory=run_locally)

    folder = run_sweep(path, tmp_path / "out", runner=runner)
    table = pd.read_parquet(folder / "sweep.parquet")
    status = table.groupby("point")["status"].first().to_dict()
    assert status == {0: "complete", 1: "failed", 2: "complete"}
    assert "boom" in table[table["point"] == 1]["error"].iloc[0]
    assert set(table[table["status"] == "complete"]["tier"]) == {"a", "b"}
    assert "seed" in table and "accuracy_mean" in table

    run_sweep(path, tmp_path / "out", runner=runner)  # resume: only the failed point
    assert calls == [1, 2, 3, 2]


def test_a_different_sweep_in_the_same_folder_is_refused(tmp_path):
    run_sweep(_write(tmp_path, _tiny(axes={"seed": [1]})), tmp_path / "out",
              runner=lambda sc, out: None)
    with pytest.raises(ScenarioError, match="different sweep"):
        run_sweep(_write(tmp_path, _tiny(axes={"seed": [9]})), tmp_path / "out",
                  runner=lambda sc, out: None)


@pytest.mark.slow
def test_points_run_as_ray_tasks(tmp_path):
    folder = run_sweep(_write(tmp_path, _tiny(axes={"seed": [1, 2]}, parallel=2)),
                       tmp_path / "out")
    table = pd.read_parquet(folder / "sweep.parquet")
    assert set(table["status"]) == {"complete"} and set(table["seed"]) == {1, 2}


@pytest.mark.parametrize("name", ["defenses_mnist.yaml", "siftfunnel_ablation.yaml"])
def test_shipped_sweeps_expand(name):
    raw = yaml.safe_load((REPO / "scenarios" / name).read_text())
    assert len(expand_sweep(raw, name)) >= 9
