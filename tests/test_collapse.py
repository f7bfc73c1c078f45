"""Collapse of a tier's training: the detector, the policy (warn, stop, rollback) and
the marking of collapsed tiers in the summary, the report and comparisons."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from simulator.engine.collapse import FeatureStats, TrainingCollapsed, unhealthy
from simulator.engine.local import run_locally
from simulator.interrupt import RunInterrupted
from simulator.loading import ScenarioError, validate_scenario
from simulator.run import run_scenario
from simulator.scenario import Collapse


def _edge(collapsing: bool) -> nn.Module:
    """A conv + ReLU edge; a collapsing one has biases so negative its ReLU is dead."""
    torch.manual_seed(0)
    edge = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU())
    if collapsing:
        with torch.no_grad():
            edge[0].bias.fill_(-100.0)
    return edge


def _stats(z: torch.Tensor, y: np.ndarray, pred: np.ndarray, batches: int = 4) -> dict:
    stats = FeatureStats()
    for zb, yb, pb in zip(np.array_split(z.detach().numpy(), batches),
                          np.array_split(y, batches), np.array_split(pred, batches)):
        stats.add(zb, yb, pb)
    return stats.summary()


def test_detector_fires_on_a_collapsing_edge_and_not_on_a_healthy_one():
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    y = np.random.default_rng(2).integers(0, 4, 64)
    majority = np.full(64, np.bincount(y).argmax())    # a cloud that learnt the prior
    cfg = Collapse()
    dead = _stats(_edge(True)(x), y, majority)
    assert dead["nonzero_share"] == 0 and dead["feature_spread"] == 0
    assert dead["train_accuracy"] == pytest.approx(dead["majority_share"])
    reasons = unhealthy(dead, age=5, cfg=cfg)
    assert [r.split(" ")[0] for r in reasons] == ["non-zero", "feature", "training"]
    # zeros are dead from the first round; the accuracy test waits for accuracy_after
    assert len(unhealthy(dead, age=0, cfg=cfg)) == 2
    good = _stats(_edge(False)(x), y, y)
    assert good["nonzero_share"] > 0.2 and good["feature_spread"] > 0.01
    assert unhealthy(good, age=5, cfg=cfg) == []


def test_constant_features_and_chance_accuracy_fire_on_their_own():
    y = np.arange(40) % 4
    const = _stats(torch.full((40, 3, 2, 2), 0.7), y, y)
    assert const["nonzero_share"] == 1 and const["feature_spread"] < 1e-12
    assert [r.split(" ")[1] for r in unhealthy(const, 5, Collapse())] == ["spread"]
    noise = _stats(torch.randn(40, 12, generator=torch.Generator().manual_seed(0)), y,
                   np.zeros(40, dtype=int))
    assert unhealthy(noise, 2, Collapse()) == []            # still learning
    assert len(unhealthy(noise, 3, Collapse())) == 1
    assert unhealthy(noise, 3, Collapse(accuracy_margin=None)) == []


def test_feature_stats_merge_as_if_sent_at_once():
    rng = np.random.default_rng(0)
    z = np.maximum(rng.normal(size=(30, 5)), 0).astype(np.float32)
    y = rng.integers(0, 3, 30)
    one, parts = FeatureStats(), [FeatureStats(), FeatureStats()]
    one.add(z[:12], y[:12], y[:12])
    one.add(z[12:], y[12:], y[12:])
    parts[0].add(z[12:], y[12:], y[12:])
    parts[1].add(z[:12], y[:12], y[:12])
    parts[1].merge(parts[0])
    assert parts[1].summary() == pytest.approx(one.summary())


def test_non_finite_features_are_unhealthy_whatever_the_thresholds():
    y = np.arange(40) % 4
    z = torch.randn(40, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    assert _stats(z, y, y)["finite_share"] == 1.0
    z[3, 0] = float("inf")
    z[9, 1, 0, 0] = float("nan")
    stats = _stats(z, y, y)
    assert stats["finite_share"] == pytest.approx(1 - 5 / z.numel())
    off = Collapse(min_nonzero=0, min_spread=0, accuracy_margin=None)
    [reason] = unhealthy(stats, age=0, cfg=off)
    assert reason.startswith("non-finite features")


def test_the_policy_is_validated_and_warns_by_default(smoke_raw):
    assert validate_scenario(smoke_raw).training.collapse.action == "warn"
    smoke_raw["training"]["collapse"] = {"action": "ignore", "weight_factor": 2}
    with pytest.raises(ScenarioError) as err:
        validate_scenario(smoke_raw)
    for part in ("training.collapse.action", "'warn', 'stop' or 'rollback'",
                 "training.collapse.weight_factor"):
        assert part in str(err.value), part


# End to end: NoPeek at a = 1000 with lr 0.03 kills the small tier's funnel (alone, its
# ReLU dies in round 3; beside the large tier, its accuracy falls to the label prior).

def _collapsing(raw: dict, rounds: int, alone: bool, **collapse) -> dict:
    # the biased V-statistic at a = 1000 erases the small tier's features in round 3
    small = raw["tiers"][0] | {"defense": {"name": "nopeek", "a": 1000.0,
                                           "dcor_estimator": "v"}}
    raw["tiers"] = [small] if alone else [small, raw["tiers"][1]]
    raw["training"].update(rounds=rounds, optimizer={"name": "adam", "lr": 0.03},
                           collapse=collapse)
    return raw


class _Lines:
    def __init__(self, stop_at: tuple[str, int] | None = None) -> None:
        self.lines, self.stop_at = [], stop_at

    def __call__(self, phase: str, done: int, total: int, note: str = "") -> None:
        self.lines.append((phase, done, note))
        if (phase, done) == self.stop_at:
            raise RunInterrupted("test stop")


def _run(raw: dict, path, **kw):
    return run_scenario(validate_scenario(raw), path, transport_factory=run_locally,
                        **kw)


def _manifest(path) -> dict:
    return json.loads((path / "manifest.json").read_text())


@pytest.fixture(scope="module")
def warned(tmp_path_factory):
    from conftest import SMOKE
    import copy
    lines = _Lines()
    raw = _collapsing(copy.deepcopy(SMOKE), rounds=5, alone=False)
    return _run(raw, tmp_path_factory.mktemp("warn") / "run", progress=lines), lines


def test_warn_records_the_collapse_and_the_run_goes_on(warned):
    path, lines = warned
    rounds = pd.read_parquet(path / "rounds.parquet")
    small = rounds[rounds["tier"] == "small"].set_index("round")
    # the round it collapses in (and whether it stays so) depends on float rounding:
    # records, manifest and message must agree on whatever happened
    collapsed = small["collapsed"].tolist()
    assert True in collapsed and not any(collapsed[:3])
    first = collapsed.index(True)
    assert small["collapse_action"].tolist() == ["warn" if c else "" for c in collapsed]
    assert not rounds.loc[rounds["tier"] == "large", "collapsed"].any()
    assert (rounds["edge_loss_weight"] == 1.0).all()
    for col in ("nonzero_share", "feature_variance", "feature_spread", "train_accuracy",
                "majority_share"):
        assert rounds[col].notna().all(), col
    m = _manifest(path)
    assert m["status"] == "complete" and m["failures"] == []
    assert [(c["round"], c["tier"], c["action"]) for c in m["collapses"]][0] == \
        (first, "small", "warn")
    warnings = [note for phase, _, note in lines.lines if phase == "collapse"]
    assert len(warnings) == len(m["collapses"])
    assert f"tier small collapsed in round {first}" in warnings[0]
    tiers = pd.read_parquet(path / "tiers.parquet").set_index("tier")
    assert tiers["collapsed"].tolist() == [True, False]
    assert tiers.loc["small", "rounds_collapsed"] == sum(collapsed)


def test_summary_report_and_comparison_mark_collapsed_tiers(warned, tmp_path, capsys):
    from analysis import write_comparison, write_report
    from simulator.cli import _print_tiers
    path, _ = warned
    _print_tiers(path)
    out, err = capsys.readouterr()
    table = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "COLLAPSED" in table["small"] and "COLLAPSED" not in table["large"]
    assert "Collapsed training: small sent" in err
    html = write_report(path, tmp_path / "report")[0].read_text()
    assert "Collapsed training: small" in html and "COLLAPSED" in html
    page = write_comparison([path], tmp_path / "cmp").read_text()
    assert "Collapsed training: smoke / small" in page and "COLLAPSED" in page


def test_stop_ends_the_run_naming_the_tier(smoke_raw, tmp_path):
    raw = _collapsing(smoke_raw, rounds=5, alone=True, action="stop",
                      accuracy_margin=None)
    # the round it dies in depends on the CPU's rounding (3 or 4 seen); the records
    # must agree with the message, whichever it is
    with pytest.raises(TrainingCollapsed, match=r"tier small collapsed in round \d+ "
                       r"\(non-zero share 0 .*training.collapse.action: rollback") as info:
        _run(raw, tmp_path / "run")
    rnd = int(re.search(r"in round (\d+)", str(info.value)).group(1))
    assert 1 <= rnd < 5
    m = _manifest(tmp_path / "run")
    assert m["status"] == "failed" and "tier small collapsed" in m["error"]
    assert "train" not in m["stages"] and "deploy" not in m["stages"]
    assert [(c["round"], c["action"]) for c in m["collapses"]] == [(rnd, "stop")]
    rounds = pd.read_parquet(tmp_path / "run" / "rounds.parquet")
    assert rounds["round"].max() == rnd and rounds["collapse_action"].iloc[-1] == "stop"


@pytest.fixture(scope="module")
def rolled_back(tmp_path_factory):
    from conftest import SMOKE
    import copy
    raw = _collapsing(copy.deepcopy(SMOKE), rounds=6, alone=True, action="rollback",
                      weight_factor=0.01, accuracy_margin=None)
    return raw, _run(raw, tmp_path_factory.mktemp("rollback") / "run")


def test_rollback_restores_the_tier_and_lowers_its_edge_loss_weight(rolled_back):
    _, path = rolled_back
    rounds = pd.read_parquet(path / "rounds.parquet").set_index("round")
    actions = rounds["collapse_action"].tolist()
    assert actions.count("rollback") == 1
    rnd = actions.index("rollback")           # 3 or 4, by the CPU's rounding
    assert 1 <= rnd < 5, "no round left after the rollback to show the recovery"
    assert actions == [""] * rnd + ["rollback"] + [""] * (5 - rnd)
    assert rounds["edge_loss_weight"].tolist() == pytest.approx(
        [1] * (rnd + 1) + [0.01] * (5 - rnd))
    assert rounds.loc[rnd, "nonzero_share"] == 0
    # restored to a live edge, the tier sends informative features again
    assert (rounds.loc[rnd + 1:, "nonzero_share"] > 0.05).all()
    assert (rounds.loc[rnd + 1:, "feature_spread"] > 0.1).all()
    assert not rounds.loc[rnd + 1:, "collapsed"].any()
    m = _manifest(path)
    assert m["status"] == "complete"
    [record] = m["collapses"]
    assert (record["round"], record["tier"], record["action"]) == \
        (rnd, "small", "rollback")
    tier = pd.read_parquet(path / "tiers.parquet").iloc[0]
    assert not tier["collapsed"] and tier["rollbacks"] == 1
    assert pd.read_parquet(path / "devices.parquet")["served"].all()


def test_a_resumed_run_keeps_the_rollback_state(rolled_back, tmp_path):
    raw, reference = rolled_back
    path = tmp_path / "run"
    with pytest.raises(RunInterrupted):    # stopped after round 4: after the rollback
        _run(raw, path, progress=_Lines(stop_at=("train", 5)))
    resumed = _run(raw, path, resume=True)
    for name in ("rounds", "devices", "tiers"):
        pd.testing.assert_frame_equal(pd.read_parquet(resumed / f"{name}.parquet"),
                                      pd.read_parquet(reference / f"{name}.parquet"))
    assert _manifest(resumed)["collapses"] == _manifest(reference)["collapses"]
