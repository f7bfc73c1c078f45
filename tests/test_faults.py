"""Runs that survive: injected faults, interrupted runs resumed, clean stops.

The local engine absorbs the same faults as Flower + Ray (a simulated crash instead of
a killed process), so the logic runs here in seconds; the slow tests kill real
processes: Flower node actors, the cloud actor, adversary workers and `siftsim run`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from simulator.engine.local import run_locally
from simulator.engine.observations import ObservationLog, merge_observations
from simulator.interrupt import RunInterrupted
from simulator.loading import ScenarioError, validate_scenario
from simulator.run import attack_run, run_scenario

REPO = Path(__file__).resolve().parents[1]


def _small(raw: dict, **faults) -> dict:
    raw["training"].update(rounds=4, fraction=1.0)
    raw["adversary"] = {"enabled": True,
                        "attacks": [{"name": "inverse_network", "epochs": 2}],
                        "information": {"mi_epochs": 2, "paper_variant": False}}
    raw["faults"] = faults
    return raw


def _run(raw: dict, path: Path, **kw) -> Path:
    return run_scenario(validate_scenario(raw), path, transport_factory=run_locally, **kw)


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def _same_records(a: Path, b: Path) -> None:
    for name in ("devices", "tiers", "rounds", "leakage"):
        if (a / f"{name}.parquet").is_file() or (b / f"{name}.parquet").is_file():
            pd.testing.assert_frame_equal(pd.read_parquet(a / f"{name}.parquet"),
                                          pd.read_parquet(b / f"{name}.parquet"))
    for tier in ("small", "large"):
        np.testing.assert_array_equal(np.load(a / "observations" / f"{tier}.npy"),
                                      np.load(b / "observations" / f"{tier}.npy"))


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """An uninterrupted, fault-free run of the small scenario (local engine)."""
    import copy

    from conftest import SMOKE
    return _run(_small(copy.deepcopy(SMOKE)), tmp_path_factory.mktemp("clean") / "run")


def test_observation_log_keeps_the_latest_training_rows_and_each_inference_once():
    log = ObservationLog(("training", "inference"))
    z = np.arange(8, dtype=np.float32).reshape(8, 1, 1, 1)
    log.add("training", 0, "t", np.array([1, 1, 2, 1]), np.array([10, 11, 12, 13]), z[:4])
    first = log.drain()
    log.add("training", 1, "t", np.array([1, 2]), np.array([20, 21]), z[4:6])
    log.add("inference", -1, "t", np.array([1, 2]), np.array([5, 7]), z[6:8])
    log.add("inference", -1, "t", np.array([1]), np.array([5]), z[6:7])  # served twice
    merged = merge_observations([first, log.drain()], training_per_device=2)["t"]
    rows = list(zip(merged.phase.tolist(), merged.device_id.tolist(),
                    merged.sample.tolist()))
    assert rows == [(0, 1, 13), (0, 1, 20), (0, 2, 12), (0, 2, 21), (1, 1, 5), (1, 2, 7)]
    assert log.drain() == {}


def test_features_past_float16_are_logged_in_float32_not_as_infinities():
    log = ObservationLog(("training",))
    small = np.full((2, 1, 1, 1), 3.0, np.float32)
    big = np.array([1e3, 7e4], np.float32).reshape(2, 1, 1, 1)   # 7e4 > 65,504
    log.add("training", 0, "t", np.array([1, 2]), np.array([0, 1]), small)
    log.add("training", 0, "u", np.array([1, 2]), np.array([0, 1]), small)
    log.add("training", 1, "t", np.array([1, 2]), np.array([2, 3]), big)
    drained = log.drain()
    assert drained["u"].z.dtype == np.float16
    assert drained["t"].z.dtype == np.float32
    np.testing.assert_array_equal(drained["t"].z.ravel(), [3.0, 3.0, 1e3, 7e4])


def test_a_diverged_tier_fails_its_information_unit_and_the_rest_completes(tmp_path,
                                                                          clean):
    """Non-finite features (a tier whose training diverged) make the information
    metrics undefined: that unit is recorded as failed with the reason, the others and
    the run complete (before, the PCA's SVD error failed the whole run)."""
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(clean, copy)
    z = np.load(copy / "observations" / "small.npy")
    z[::7] = np.inf
    np.save(copy / "observations" / "small.npy", z)
    attack_run(copy, executor="local")
    manifest = _manifest(copy)
    assert manifest["status"] == "complete"
    [failure] = manifest["failures"]
    assert (failure["tier"], failure["attack"]) == ("small", "information")
    assert "NaN or infinities" in failure["reason"]
    assert "training diverged" in failure["reason"]
    leakage = pd.read_parquet(copy / "leakage.parquet")
    assert {"small", "large"} <= set(leakage.loc[leakage["attack"] == "inverse_network",
                                                 "tier"])


def test_faults_are_validated(smoke_raw):
    smoke_raw["faults"] = {"kill_node": [{"round": 9, "node": 7}],
                           "kill_adversary": [{"tier": "tiny", "attack": "rmle"}],
                           "device_crash_probability": 1.5}
    with pytest.raises(ScenarioError) as err:
        validate_scenario(smoke_raw)
    text = str(err.value)
    assert "faults.device_crash_probability" in text
    smoke_raw["faults"]["device_crash_probability"] = 0.1
    with pytest.raises(ScenarioError) as err:
        validate_scenario(smoke_raw)
    text = str(err.value)
    for part in ("kill_node[0].round is 9", "kill_node[0].node is 7", "'tiny'", "'rmle'"):
        assert part in text


def test_a_dead_node_loses_its_cohorts_round_and_the_run_completes(smoke_raw, tmp_path,
                                                                   clean):
    path = _run(_small(smoke_raw, kill_node=[{"round": 1, "node": 0, "step": 2}]),
                tmp_path / "run")
    m = _manifest(path)
    assert m["status"] == "complete"
    [failure] = m["failures"]
    assert failure["kind"] == "node" and failure["round"] == 1 and failure["node"] == 0
    devices = pd.read_parquet(path / "devices.parquet").set_index("device_id")
    lost = failure["devices"]
    assert (devices.loc[lost, "rounds_failed"] == 1).all()
    assert (devices.loc[lost, "rounds_trained"] == 3).all()
    others = devices.drop(index=lost)
    assert (others["rounds_failed"] == 0).all() and (others["rounds_trained"] == 4).all()
    assert devices["served"].all() and devices["accuracy"].notna().all()
    assert pd.read_parquet(path / "leakage.parquet")["value"].notna().any()
    # the round went on without the cohort: the result is not the clean run's
    assert not devices["accuracy"].equals(
        pd.read_parquet(clean / "devices.parquet").set_index("device_id")["accuracy"])


def test_a_dead_cloud_is_restarted_and_the_round_repeated(smoke_raw, tmp_path, clean):
    path = _run(_small(smoke_raw, kill_cloud=[{"round": 2, "exchange": 3}]),
                tmp_path / "run")
    [failure] = _manifest(path)["failures"]
    assert failure["kind"] == "cloud" and failure["round"] == 2
    # the repeated round draws the same batches and noise: nothing differs from a run
    # in which the cloud never died
    _same_records(path, clean)


def test_devices_that_crash_are_counted_and_left_out(smoke_raw, tmp_path):
    path = _run(_small(smoke_raw, device_crash_probability=0.3), tmp_path / "run")
    devices = pd.read_parquet(path / "devices.parquet")
    assert devices["rounds_failed"].sum() > 0
    assert (devices["rounds_trained"] + devices["rounds_failed"] == 4).all()
    crashes = [f for f in _manifest(path)["failures"] if f["kind"] == "device_crash"]
    assert sum(len(f["devices"]) for f in crashes) == devices["rounds_failed"].sum()
    rounds = pd.read_parquet(path / "rounds.parquet")
    assert rounds["devices_crashed"].sum() == devices["rounds_failed"].sum()


def test_a_dead_adversary_is_retried_once_then_recorded(smoke_raw, tmp_path, clean):
    retried = _run(_small(smoke_raw, kill_adversary=[
        {"tier": "small", "attack": "inverse_network", "times": 1}]), tmp_path / "once")
    assert _manifest(retried)["failures"] == []
    _same_records(retried, clean)

    failed = _run(_small(smoke_raw, kill_adversary=[
        {"tier": "small", "attack": "inverse_network", "times": 2}]), tmp_path / "twice")
    [failure] = _manifest(failed)["failures"]
    assert (failure["kind"], failure["tier"], failure["attack"]) == \
        ("adversary", "small", "inverse_network")
    leakage = pd.read_parquet(failed / "leakage.parquet")
    have = set(zip(leakage["tier"], leakage["attack"]))
    assert ("small", "inverse_network") not in have
    assert ("large", "inverse_network") in have     # the other tier completed
    assert (failed / "stages" / "attack" / "small" / "inverse_network.failed.json").is_file()


@pytest.mark.parametrize("phase,at", [("train", 2), ("attack", 1)])
def test_an_interrupted_run_resumes_to_the_same_records(smoke_raw, tmp_path, clean,
                                                        phase, at, stop_at):
    raw = _small(smoke_raw)
    path = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        _run(raw, path, progress=stop_at(phase, at))
    m = _manifest(path)
    assert m["status"] == "interrupted"
    assert ("train" in m["stages"]) == (phase == "attack")
    if phase == "train":   # the last finished round's checkpoint is on disk, whole
        saved = torch.load(path / "stages" / "train" / "checkpoint.pt", weights_only=True)
        assert saved["state"]["next_round"] == at - 1
    resumed = _run(raw, path, resume=True)
    assert _manifest(resumed)["status"] == "complete"
    _same_records(resumed, clean)


def test_a_run_interrupted_after_merging_its_observation_files_resumes_whole(
        smoke_raw, tmp_path, stop_at):
    """Every 8 round files of the training log are merged into one; the merge waits for
    its round's checkpoint (written in the background), so a run stopped after it still
    finds every round's features and resumes to the uninterrupted run's records."""
    smoke_raw["training"].update(rounds=10, local_steps=2, fraction=1.0)
    whole = _run(smoke_raw, tmp_path / "whole")
    path = tmp_path / "run"
    with pytest.raises(RunInterrupted):
        _run(smoke_raw, path, progress=stop_at("train", 10))   # round 9, before its end
    folder = path / "stages" / "train"
    assert sorted(p.name for p in (folder / "observations").glob("*.npz")) == \
        ["m00007.npz", "r00008.npz"]
    saved = torch.load(folder / "checkpoint.pt", weights_only=True)
    assert saved["state"]["next_round"] == 9
    _same_records(_run(smoke_raw, path, resume=True), whole)


def test_resuming_a_finished_run_does_nothing(tmp_path, clean):
    before = {p: p.stat().st_mtime_ns for p in clean.rglob("*") if p.is_file()}
    raw = yaml.safe_load((clean / "scenario.yaml").read_text())
    _run(raw, clean, resume=True)
    after = {p: p.stat().st_mtime_ns for p in clean.rglob("*") if p.is_file()}
    assert after == before


def test_attack_rerun_gives_the_run_numbers(tmp_path, clean):
    import shutil
    copy = tmp_path / "copy"
    shutil.copytree(clean, copy)
    attack_run(copy, executor="local")
    _same_records(copy, clean)
    assert (copy / "history").is_dir()
