"""Sweeps: expansion and validation up front, failures recorded, resume, one table."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from conftest import SMOKE
from simulator.loading import ScenarioError
from simulator.sweep import SweepPoint, expand_sweep, run_point, run_sweep, sweep_table

REPO = Path(__file__).resolve().parents[1]


def _tiny(**sweep) -> dict:
    raw = copy.deepcopy(SMOKE)
    raw["dataset"].update(num_samples=300, num_classes=3)
    raw["tiers"] = [{"name": "a", "count": 2},
                    {"name": "b", "count": 2,
                     "encoder": {"name": "funnel", "width": 8}}]
    raw["training"].update(rounds=1, local_steps=1, batch_size=8)
    raw["sweep"] = sweep
    return raw


def _write(tmp_path: Path, raw: dict) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


class FakeRunner:
    """Writes a tiers table whose accuracy encodes the point; counts its calls."""

    def __init__(self, fail_seed: int | None = None, interrupt_at: int | None = None):
        self.calls: list[str] = []
        self.fail_seed, self.interrupt_at = fail_seed, interrupt_at

    def __call__(self, scenario, out: Path) -> None:
        self.calls.append(scenario.name)
        if len(self.calls) == self.interrupt_at:
            raise KeyboardInterrupt
        if scenario.seed == self.fail_seed:
            raise RuntimeError("boom")
        out.mkdir(parents=True, exist_ok=True)
        acc = scenario.training.rounds / 10 + scenario.seed / 100
        pd.DataFrame({"tier": [t.name for t in scenario.tiers],
                      "accuracy_mean": [acc] * len(scenario.tiers)}).to_parquet(
            out / "tiers.parquet")


def test_grid_expansion_order_values_and_names():
    raw = _tiny(axes={"training.rounds": [1, 2],
                      "tiers.0.defense": [{"name": "none"},
                                          {"name": "dropout", "rate": 0.5}],
                      "training.optimizer.lr": [1e-4]})
    before = copy.deepcopy(raw)
    grid = expand_sweep(raw)
    assert raw == before  # the caller's mapping is untouched
    assert [p.index for p in grid] == [0, 1, 2, 3]
    assert [(p.scenario.training.rounds, p.scenario.tiers[0].defense.name)
            for p in grid] == [(1, "none"), (1, "dropout"), (2, "none"), (2, "dropout")]
    assert grid[3].values == {"training.rounds": 2,
                              "tiers.0.defense": {"name": "dropout", "rate": 0.5},
                              "training.optimizer.lr": 1e-4}
    assert grid[3].scenario.tiers[0].defense.rate == pytest.approx(0.5)
    assert all(p.scenario.training.optimizer.lr == 1e-4 for p in grid)  # exact
    assert [p.label for p in grid] == ["p000", "p001", "p002", "p003"]
    assert [p.scenario.name for p in grid] == [f"smoke-p00{i}" for i in range(4)]
    assert all("sweep" not in p.raw and p.scenario.sweep is None for p in grid)
    assert grid[1].describe() == ("training.rounds=1, tiers.0.defense={name: dropout, "
                                  "rate: 0.5}, training.optimizer.lr=0.0001")


def test_zip_expansion_pairs_values():
    zipped = expand_sweep(_tiny(mode="zip", axes={"training.rounds": [1, 2, 3],
                                                  "seed": [5, 6, 7]}))
    assert [(p.scenario.training.rounds, p.scenario.seed) for p in zipped] == \
        [(1, 5), (2, 6), (3, 7)]


def test_zip_needs_equal_lengths():
    with pytest.raises(ScenarioError, match="one length") as info:
        expand_sweep(_tiny(mode="zip", axes={"seed": [1, 2], "training.rounds": [1]}))
    (problem,) = info.value.problems
    assert "seed: 2" in problem and "training.rounds: 1" in problem


def test_every_bad_point_is_reported_before_anything_runs(tmp_path):
    raw = _tiny(axes={"tiers.0.defense": [{"name": "gaussian_noise", "sigma": -1},
                                          {"name": "none"}, {"name": "nothing"}]})
    runner = FakeRunner()
    with pytest.raises(ScenarioError) as info:
        run_sweep(raw, tmp_path / "out", runner=runner)
    problems = info.value.problems
    assert len(problems) == 2
    assert problems[0].startswith("point 0 (tiers.0.defense={name: gaussian_noise, "
                                  "sigma: -1}): tiers[0].defense.sigma:")
    assert problems[1].startswith("point 2 (tiers.0.defense={name: nothing}): "
                                  "tiers[0].defense")
    assert runner.calls == [] and not (tmp_path / "out").exists()
    with pytest.raises(ScenarioError,
                       match=r"point 0 \(tiers.5.count=1\): .*not an index"):
        expand_sweep(_tiny(axes={"tiers.5.count": [1]}))


@pytest.mark.parametrize("sweep, message", [
    (None, "no `sweep` section"),
    ({"axes": {}}, "at least one axis"),
    ({"axes": {"seed": [1]}, "mode": "product"}, "sweep.mode"),
])
def test_malformed_sweep_sections_are_named(sweep, message):
    with pytest.raises(ScenarioError, match=message):
        expand_sweep(_tiny(**sweep) if sweep else {**_tiny(), "sweep": None})


def test_sweep_table_has_one_row_per_point_and_tier_with_axis_columns(tmp_path):
    raw = _tiny(axes={"training.rounds": [1, 2],
                      "tiers.0.defense": [{"name": "none"},
                                          {"name": "dropout", "rate": 0.5}]})
    raw["output_dir"] = str(tmp_path / "runs")
    folder = run_sweep(raw, runner=FakeRunner())  # default folder
    assert folder == tmp_path / "runs" / "smoke-sweep"
    table = pd.read_parquet(folder / "sweep.parquet")
    assert list(table.columns[:8]) == ["point", "training.rounds", "tiers.0.defense",
                                       "status", "error", "engine", "run_dir", "tier"]
    assert len(table) == 8 and set(table["status"]) == {"complete"}
    assert set(table["engine"]) == {"local"}
    assert table["point"].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert table["training.rounds"].tolist() == [1, 1, 1, 1, 2, 2, 2, 2]
    dropout = json.loads(table["tiers.0.defense"].iloc[2])
    assert dropout == {"name": "dropout", "rate": 0.5}
    assert table["accuracy_mean"].iloc[-1] == pytest.approx(0.2 + 0.03)
    assert pd.read_csv(folder / "sweep.csv").shape == table.shape
    manifest = json.loads((folder / "p003" / "manifest.json").read_text())
    assert manifest["engine"] == "local" and manifest["status"] == "complete"
    assert manifest["sweep_point"]["axes"]["training.rounds"] == 2
    points = json.loads((folder / "sweep.json").read_text())["points"]
    assert points[3]["scenario"]["training"]["rounds"] == 2
    pd.testing.assert_frame_equal(sweep_table(folder), table)


def test_failures_are_recorded_and_resume_reruns_only_unfinished_points(tmp_path):
    """Two real points with the local engine; the middle one fails."""
    path = _write(tmp_path, _tiny(axes={"seed": [1, 2, 3]}))
    calls = []

    def runner(scenario, out):
        calls.append(scenario.seed)
        if scenario.seed == 2:
            raise RuntimeError("boom")
        return run_point(scenario, out)

    folder = run_sweep(path, tmp_path / "out", runner=runner)
    table = pd.read_parquet(folder / "sweep.parquet")
    status = table.groupby("point")["status"].first().to_dict()
    assert status == {0: "complete", 1: "failed", 2: "complete"}
    failed = table[table["point"] == 1]
    assert failed["error"].iloc[0] == "RuntimeError: boom"
    assert failed["accuracy_mean"].isna().all() and set(failed["tier"]) == {"a", "b"}
    assert table[table["status"] == "complete"]["accuracy_mean"].notna().all()
    assert table["seed"].tolist() == [1, 1, 2, 2, 3, 3]
    manifest = json.loads((folder / "p001" / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "boom" in manifest["error"]

    run_sweep(path, tmp_path / "out", runner=runner)  # resume: only the failed point
    assert calls == [1, 2, 3, 2]
    (old,) = (folder / "history").glob("*/p001")  # the earlier attempt is kept
    assert json.loads((old / "manifest.json").read_text())["status"] == "failed"


def test_an_interruption_keeps_the_finished_points(tmp_path):
    runner = FakeRunner(interrupt_at=3)
    with pytest.raises(KeyboardInterrupt):
        run_sweep(_tiny(axes={"seed": [1, 2, 3, 4]}), tmp_path / "out", runner=runner)
    table = pd.read_parquet(tmp_path / "out" / "sweep.parquet")
    assert table.groupby("point")["status"].first().tolist() == \
        ["complete", "complete", "pending", "pending"]
    resumed = FakeRunner()
    run_sweep(_tiny(axes={"seed": [1, 2, 3, 4]}), tmp_path / "out", runner=resumed)
    assert resumed.calls == ["smoke-p002", "smoke-p003"]


def test_a_sweep_grows_by_appended_values(tmp_path):
    out, said = tmp_path / "out", []
    run_sweep(_tiny(axes={"seed": [1, 2]}), out, runner=FakeRunner())
    grown = FakeRunner()
    run_sweep(_tiny(axes={"seed": [1, 2, 3, 4]}), out, runner=grown,
              progress=lambda *a: said.append(a))
    assert grown.calls == ["smoke-p002", "smoke-p003"]  # the finished two are kept
    assert ("sweep", 2, 4, f"2 new points appended to the sweep in {out}") in said
    assert not (out / "history").exists()
    table = pd.read_parquet(out / "sweep.parquet")
    assert table.groupby("point")["seed"].first().tolist() == [1, 2, 3, 4]
    assert set(table["status"]) == {"complete"}
    # the record now holds four points: a later run with the first two is refused
    with pytest.raises(ScenarioError, match="4 before, 2 now.*grows only at its end"):
        run_sweep(_tiny(axes={"seed": [1, 2]}), out, runner=FakeRunner())
    # a value inserted before the end changes a finished point: refused
    with pytest.raises(ScenarioError, match=r"points\[1\]\.values\.seed: 2 before, 9"):
        run_sweep(_tiny(axes={"seed": [1, 9, 2, 3, 4]}), out, runner=FakeRunner())


def test_a_grid_grows_by_its_first_axis_only(tmp_path):
    out = tmp_path / "out"
    axes = {"seed": [1, 2], "training.rounds": [1, 2]}
    run_sweep(_tiny(axes=axes), out, runner=FakeRunner())
    grown = FakeRunner()
    run_sweep(_tiny(axes={**axes, "seed": [1, 2, 3]}), out, runner=grown)
    assert grown.calls == ["smoke-p004", "smoke-p005"]   # seed 3 x rounds 1, 2
    # a value of the last axis lands between finished points: another sweep
    with pytest.raises(ScenarioError, match=r"points\[2\].*first axis"):
        run_sweep(_tiny(axes={"seed": [1, 2, 3], "training.rounds": [1, 2, 3]}), out,
                  runner=FakeRunner())


def test_a_parameter_gained_since_at_its_default_keeps_the_sweep(tmp_path):
    # points that ran before the code gained decoder_standardize: their record lacks it
    out = tmp_path / "out"
    adversarial = {"name": "adversarial", "lam": 1.0, "decoder_width": 4}
    run_sweep(_tiny(axes={"tiers.*.defense": [adversarial]}), out, runner=FakeRunner())
    record = json.loads((out / "sweep.json").read_text())
    for tier in record["points"][0]["scenario"]["tiers"]:
        del tier["defense"]["decoder_standardize"]
    (out / "sweep.json").write_text(json.dumps(record))
    strong = {**adversarial, "lam": 10.0, "decoder_standardize": True}
    grown = FakeRunner()
    run_sweep(_tiny(axes={"tiers.*.defense": [adversarial, strong]}), out, runner=grown)
    assert grown.calls == ["smoke-p001"]
    kept = json.loads((out / "sweep.json").read_text())["points"]
    assert "decoder_standardize" not in kept[0]["scenario"]["tiers"][0]["defense"]
    assert kept[1]["scenario"]["tiers"][0]["defense"]["decoder_standardize"] is True
    # set away from its default on a finished point, it changes what ran: refused
    with pytest.raises(ScenarioError, match=r"points\[0\].*defense: "
                       "decoder_standardize set now, not before"):
        run_sweep(_tiny(axes={"tiers.*.defense": [{**adversarial,
                                                   "decoder_standardize": True},
                                                  strong]}), out, runner=FakeRunner())
    # a default that changed under a recorded setting is still a difference
    kept[0]["scenario"]["tiers"][0]["defense"]["decoder_lr"] = 0.002
    (out / "sweep.json").write_text(json.dumps({**record, "points": kept}))
    with pytest.raises(ScenarioError, match="decoder_lr: 0.002 before, 0.001 now"):
        run_sweep(_tiny(axes={"tiers.*.defense": [adversarial, strong]}), out,
                  runner=FakeRunner())


def test_an_existing_folder_is_never_overwritten(tmp_path):
    out = tmp_path / "out"
    run_sweep(_tiny(axes={"seed": [1, 2]}), out, runner=FakeRunner())
    changed = (r"different sweep \(points\[1\]\.values\.seed: 2 before, 9 now\)"
               r".*new --out")
    with pytest.raises(ScenarioError, match=changed):
        run_sweep(_tiny(axes={"seed": [1, 9]}), out, runner=FakeRunner())
    with pytest.raises(ScenarioError, match="different sweep.*2 before, 1 now"):
        run_sweep(_tiny(axes={"seed": [1]}), out, runner=FakeRunner())
    with pytest.raises(ScenarioError, match="--no-resume"):
        run_sweep(_tiny(axes={"seed": [1, 2]}), out, resume=False, runner=FakeRunner())
    with pytest.raises(ScenarioError, match="not a sweep directory"):
        run_sweep(_tiny(axes={"seed": [1]}), out / "p000", runner=FakeRunner())


def test_overrides_apply_before_expansion(tmp_path):
    path = _write(tmp_path, _tiny(axes={"seed": [1]}))
    runner = FakeRunner()
    folder = run_sweep(path, tmp_path / "out", runner=runner,
                       overrides=["training.rounds=3", "sweep.axes={seed: [4, 5]}"])
    table = pd.read_parquet(folder / "sweep.parquet")
    assert table["seed"].unique().tolist() == [4, 5]
    assert table["accuracy_mean"].iloc[0] == pytest.approx(0.3 + 0.04)
    with pytest.raises(ValueError, match="parallel"):
        run_sweep(path, tmp_path / "other", parallel=0, runner=runner)


@pytest.mark.slow
def test_points_run_as_ray_tasks_with_the_same_records(tmp_path):
    raw = _tiny(axes={"seed": [1, 2]}, parallel=2)
    lines = {"ray": [], "seq": []}
    folder = run_sweep(_write(tmp_path, raw), tmp_path / "ray",
                       progress=lambda *line: lines["ray"].append(line))
    table = pd.read_parquet(folder / "sweep.parquet")
    assert set(table["status"]) == {"complete"} and set(table["seed"]) == {1, 2}
    sequential = run_sweep(raw, tmp_path / "seq", parallel=1,
                           progress=lambda *line: lines["seq"].append(line))
    # each point's own progress reaches the sweep's console, named by the point
    # (from the Ray tasks through a relay), the same lines as a sequential sweep
    for engine, seen in lines.items():
        phases = {line[0] for line in seen}
        assert {"p000 train", "p001 train", "p000 inference", "sweep"} <= phases, engine
    # (the sweep's own count follows the order points finish in, Ray's is not fixed)
    def lines_of(seen):
        return sorted((p, None if p == "sweep" else d, t, n) for p, d, t, n in seen)
    assert lines_of(lines["ray"]) == lines_of(lines["seq"])
    other = pd.read_parquet(sequential / "sweep.parquet")
    metrics = ["tier", "accuracy_mean", "accuracy_pooled", "macs"]
    pd.testing.assert_frame_equal(table[metrics], other[metrics])
    assert np.isfinite(table["accuracy_mean"]).all()


@pytest.mark.parametrize("name", ["defenses_mnist.yaml", "siftfunnel_ablation.yaml",
                                  "defenses_frontier_mnist.yaml"])
def test_shipped_sweeps_expand(name):
    raw = yaml.safe_load((REPO / "scenarios" / name).read_text())
    points = expand_sweep(raw, name)
    assert len(points) >= 9 and all(isinstance(p, SweepPoint) for p in points)
    assert len({p.label for p in points}) == len(points)


def test_points_that_would_train_the_same_evaluator_share_it(tmp_path):
    """The evaluation classifier depends on data, splits, backbone, seed and epochs only:
    a point whose defense differs gets a finished point's copy; another seed does not."""
    from simulator.evaluator import evaluator_inputs, train_evaluator
    from simulator.run import build_workspace
    from simulator.stages.attack import evaluator_path
    from simulator.sweep import _share_evaluator
    raw = _tiny(axes={"seed": [1, 2], "tiers.*.defense": [{"name": "none"},
                                                          {"name": "dropout"}]})
    raw["adversary"] = {"enabled": True, "evaluation_epochs": 1}
    points = expand_sweep(raw)
    # the claim behind sharing: another defense trains the same classifier, bit for bit
    same = [train_evaluator(build_workspace(p.scenario)) for p in points[:2]]
    assert evaluator_inputs(points[0].scenario) == evaluator_inputs(points[1].scenario)
    assert all(torch.equal(same[0][k], same[1][k]) for k in same[0])
    assert evaluator_inputs(points[2].scenario) != evaluator_inputs(points[0].scenario)
    source = evaluator_path(tmp_path / points[0].label)
    source.parent.mkdir(parents=True)
    torch.save(same[0], source)
    for p in points[1:]:
        _share_evaluator(tmp_path, points, p)
    assert evaluator_path(tmp_path / points[1].label).read_bytes() == source.read_bytes()
    assert not evaluator_path(tmp_path / points[2].label).exists()
    assert not evaluator_path(tmp_path / points[3].label).exists()


@pytest.mark.parametrize("stop", ["signal", "exit"])
def test_a_point_stopped_on_the_way_continues_from_its_checkpoint(tmp_path, stop):
    """Interrupted in its second round, the point resumes there (not from scratch, not
    moved to history/) and ends with the records of an uninterrupted sweep. ``exit``:
    the point's process is told to exit (SystemExit: a sweep's Ray worker when its
    driver stops), which is an interruption too, not a failure."""
    from simulator.interrupt import RunInterrupted
    raw = _tiny(axes={"seed": [1]})
    raw["training"]["rounds"] = 3
    seen = []
    error = RunInterrupted("test stop") if stop == "signal" else SystemExit(1)

    def stop_in_round_two(phase, done, total, note=""):
        seen.append((phase, done, note))
        if (phase, done) == ("p000 train", 2):
            raise error

    with pytest.raises(type(error)):
        run_sweep(raw, tmp_path / "out", parallel=1, progress=stop_in_round_two)
    manifest = json.loads((tmp_path / "out" / "p000" / "manifest.json").read_text())
    assert manifest["status"] == "interrupted"
    seen.clear()
    run_sweep(raw, tmp_path / "out", parallel=1,
              progress=lambda phase, done, total, note="": seen.append((phase, done, note)))
    assert any("resuming training after round 1" in note for *_, note in seen)
    assert [d for phase, d, _ in seen if phase == "p000 train"] == [2, 3]
    assert not (tmp_path / "out" / "history").exists()
    fresh = run_sweep(raw, tmp_path / "fresh", parallel=1)
    cols = ["tier", "accuracy_mean", "accuracy_pooled"]
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "out" / "sweep.parquet")[cols],
                                  pd.read_parquet(fresh / "sweep.parquet")[cols])
