"""The fleet inside a run: rungs by budget, unable devices, rounds on the virtual clock."""

from __future__ import annotations

import io
from dataclasses import asdict

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from simulator.cli import main
from simulator.engine.cloud import Cloud
from simulator.engine.coordinator import (TrainState, plan_rounds, planned_cohorts,
                                          round_plans, run_split_training, sample_round)
from simulator.engine.local import LocalTransport, run_locally
from simulator.engine.workspace import ModelKit, peak_activation_bytes
from simulator.fleet import RoundPlan
from simulator.latency import training_seconds
from simulator.loading import validate_scenario
from simulator.run import build_workspace, run_scenario
from simulator.seeding import rng

DEADLINE_S = 2.5


@pytest.fixture
def ladder_raw(smoke_raw) -> dict:
    """24 devices on a two-rung ladder (funnel, plain), hardware from distributions.

    On 16 x 16 images the funnel needs 0.02 MB and the plain cut 0.43 MB: 0.01 MB of
    memory fits no rung, 0.1 MB the funnel, 4 MB both. A round (5 steps of 16) takes
    0.06 s (funnel) or 2.2 s (plain) at 2 GFLOP/s and 2.9 s or 234 s at 0.01 GFLOP/s,
    so under a 2.5 s deadline the slow devices straggle whatever their rung.
    """
    raw = smoke_raw
    raw["devices"] = 24
    for tier in raw["tiers"]:
        del tier["count"]
    raw["fleet"] = {"profile": {
        "memory_mb": {"dist": "categorical", "values": [0.01, 0.1, 4]},
        "compute_gflops": {"dist": "categorical", "values": [0.01, 2]}}}
    raw["assignment"] = {"memory": True}
    raw["training"].update(rounds=3, fraction=1.0,
                           timing={"deadline_s": DEADLINE_S, "interval_s": 60})
    return raw


def test_rung_costs_measure_activations():
    edge = torch.nn.Sequential(torch.nn.Conv2d(1, 8, 3, padding=1),
                               torch.nn.ReLU(inplace=True), torch.nn.Flatten())
    # conv: 1 x 4 x 4 in + 8 x 4 x 4 out, float32; in-place ReLU and the view add none
    assert peak_activation_bytes(edge, (1, 4, 4)) == 4 * (16 + 128)
    edge[1] = torch.nn.ReLU()   # a new output beside its input
    assert peak_activation_bytes(edge, (1, 4, 4)) == 4 * (128 + 128)


def test_ladder_run_end_to_end(ladder_raw, tmp_path):
    path = run_scenario(validate_scenario(ladder_raw), tmp_path / "run",
                        transport_factory=run_locally)
    devices = pd.read_parquet(path / "devices.parquet").set_index("device_id")
    assert len(devices) == 24
    by_memory = devices.groupby("memory_mb")["tier"].agg(lambda t: set(t.fillna("-")))
    assert by_memory.to_dict() == {0.01: {"-"}, 0.1: {"small"}, 4.0: {"large"}}
    unable = devices[devices["unable"]]
    assert len(unable) and unable["tier"].isna().all() and unable["node"].isna().all()
    assert unable["assignment"].str.startswith("unable: smallest rung 'small'").all()
    assert not unable["served"].any() and unable["accuracy"].isna().all()
    assert (unable["rounds_selected"] == 0).all() and unable["macs"].isna().all()
    served = devices[~devices["unable"]]
    assert served["served"].all() and (served["profile_origin"] == "profile").all()
    assert served["assignment"].str.contains("fits memory").all()

    # a device slower than the deadline is selected every round and never completes
    kit = ModelKit(build_workspace(validate_scenario(ladder_raw)))
    work = served.apply(lambda d: training_seconds(
        kit.costs[d["tier"]], _Hardware(d), validate_scenario(ladder_raw).training),
        axis=1)
    slow, fast = served[work > DEADLINE_S], served[work <= DEADLINE_S]
    assert len(slow) and len(fast) and set(slow["tier"]) == {"small", "large"}
    assert (slow["rounds_selected"] == 3).all() and (slow["rounds_completed"] == 0).all()
    assert (slow["rounds_straggled"] == 3).all() and (slow["rounds_trained"] == 0).all()
    assert (slow["busy_s"] == 3 * DEADLINE_S).all()
    assert (fast["rounds_completed"] == 3).all() and (fast["rounds_trained"] == 3).all()
    assert (fast["rounds_straggled"] == 0).all()
    # the cohorts planned without training (bench/fleet.py --ceiling) are those trained
    planned = pd.Series(0, index=devices.index)
    for cohorts in planned_cohorts(kit.ws, kit):
        for ids in cohorts.values():
            planned[ids] += 1
    assert planned.sum() > 0 and (planned == devices["rounds_trained"]).all()

    # participation: per device tallies agree with the per-round records
    part = pd.read_parquet(path / "participation.parquet")
    assert set(part["status"]) == {"completed", "straggled"}
    counts = part.groupby(["device_id", "status"]).size().unstack(fill_value=0)
    counts = counts.reindex(served.index, fill_value=0)
    assert (counts["completed"] == served["rounds_completed"]).all()
    assert (counts["straggled"] == served["rounds_straggled"]).all()
    totals = part.groupby("device_id")[["busy_s", "bytes_sent"]].sum()
    pd.testing.assert_frame_equal(totals, served.loc[totals.index, ["busy_s",
                                                                    "bytes_sent"]])
    selected = devices[["rounds_completed", "rounds_dropped", "rounds_straggled",
                        "rounds_cancelled"]].sum(axis=1)
    assert (devices["rounds_selected"] == selected).all()  # no late under drop
    # rounds start on the clock: every 60 s, each closing at the deadline
    starts = part.groupby("round")["round_start_s"].first()
    assert starts.tolist() == [0.0, 60.0, 120.0]
    assert (part["round_seconds"] == DEADLINE_S).all()


class _Hardware:
    def __init__(self, row: pd.Series) -> None:
        self.compute_gflops, self.uplink_mbps = row["compute_gflops"], row["uplink_mbps"]


def test_default_timing_samples_what_the_plain_sampling_did(smoke_raw):
    """Same selection as before the clock: reachable by availability, then the tier's
    permutation; every selected device completes."""
    smoke_raw["training"]["fraction"] = 0.5
    smoke_raw["tiers"][0]["profile"] = {"availability": 0.5}
    ws = build_workspace(validate_scenario(smoke_raw))
    costs = ModelKit(ws).costs
    for rnd in range(6):
        expected: dict[int, list[int]] = {}
        for tier, devices in ws.population.by_tier().items():
            avail = [d for d in devices if rng(ws.scenario.seed, "availability", rnd,
                                               d.device_id).random()
                     < d.profile.availability]
            want = min(len(avail), int(np.ceil(0.5 * len(devices))))
            for i in sorted(rng(ws.scenario.seed, "sample", rnd, tier)
                            .permutation(len(avail))[:want]):
                expected.setdefault(avail[i].node, []).append(avail[i].device_id)
        plans = plan_rounds(ws, costs, rnd)
        assert sample_round(ws, rnd, plans) == sample_round(ws, rnd) == expected
        assert all(p.accepted == p.selected for p in plans.values())


def test_a_resumed_run_continues_the_same_plans(ladder_raw):
    ladder_raw["fleet"]["profile"]["availability"] = {"dist": "uniform", "low": 0.3,
                                                      "high": 1.0}
    ladder_raw["training"].update(rounds=4, fraction=0.5)
    ladder_raw["training"]["timing"].update(
        over_selection=1.5, dropout_probability=0.2, interval_s=3600,
        time_of_day={"amplitude": 0.6, "peak_hour": 2})
    ws = build_workspace(validate_scenario(ladder_raw))
    kit = ModelKit(ws)

    def fresh() -> tuple[TrainState, LocalTransport]:
        edges, cloud = kit.initial_states()
        return TrainState.initial(ws, edges, cloud), LocalTransport(ws, Cloud(ws, cloud))

    state, transport = fresh()
    full = run_split_training(ws, kit, transport, state, lambda *a: None)
    saved = io.BytesIO()

    def kill_after_two(st: TrainState, _observed: dict) -> None:
        if st.next_round == 2:
            torch.save(asdict(st), saved)
            raise KeyboardInterrupt

    state, transport = fresh()
    with pytest.raises(KeyboardInterrupt):
        run_split_training(ws, kit, transport, state, lambda *a: None, kill_after_two)
    saved.seek(0)
    resumed = TrainState(**torch.load(saved, weights_only=True))
    assert resumed.clock_s == 2 * 3600.0
    resumed = run_split_training(ws, kit, LocalTransport(ws, Cloud(ws, resumed.cloud_state)),
                                 resumed, lambda *a: None)
    assert resumed.plans == full.plans and resumed.clock_s == full.clock_s == 4 * 3600.0
    assert resumed.participation == full.participation
    plans = [p for _, p in round_plans(full)]
    assert all(isinstance(p, RoundPlan) for p in plans)
    statuses = {d.status for p in plans for d in p.devices}
    assert {"completed", "straggled", "dropped"} <= statuses
    assert len({len(p.available) for p in plans}) > 1   # the hour changes who is online


def test_validate_says_tiers_are_assigned_by_budget(ladder_raw, tmp_path, capsys):
    path = tmp_path / "ladder.yaml"
    path.write_text(yaml.safe_dump(ladder_raw))
    assert main(["validate", str(path)]) == 0
    assert "valid (24 devices; assigned by budget; training split" in \
        capsys.readouterr().out


def test_tier_table_follows_the_ladder_not_the_device_order():
    from simulator.stages.infer import tier_table
    devices = pd.DataFrame({
        "device_id": [0, 1, 2], "tier": ["large", "small", "large"],
        "served": True, "accuracy": [0.9, 0.5, 0.7], "correct": [9, 5, 7],
        "n_test": 10, "encoder": ["plain", "funnel", "plain"], "defense": "none",
        "params": [100, 10, 100], "macs": [1000, 50, 1000], "elements_per_sample": 4,
        "bytes_per_sample": 16, "latency_ms": [1.0, 2.0, 3.0]})
    table = tier_table(devices, ["small", "large"])
    assert table["tier"].tolist() == ["small", "large"]
    assert table.set_index("tier").loc["large", "accuracy_pooled"] == pytest.approx(0.8)
    assert tier_table(devices)["tier"].tolist() == ["large", "small"]
    assert tier_table(devices, ["tiny", "small", "large"])["tier"].tolist() == \
        ["small", "large"]
