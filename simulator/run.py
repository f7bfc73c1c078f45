"""Run a scenario end to end: data -> devices -> training -> inference -> records."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.metrics import mean_ci
from simulator.data import DATASETS, make_splits
from simulator.engine.centralized import train_centralized
from simulator.engine.coordinator import (TrainingOutcome, Transport, run_inference,
                                          run_split_training)
from simulator.engine.workspace import ModelKit, Workspace
from simulator.latency import inference_latency
from simulator.population import expand_population
from simulator.records import RunRecorder, new_run_dir
from simulator.scenario import Scenario, plugin_params
from simulator.seeding import derive_seed, rng

__all__ = ["attack_run", "build_workspace", "device_table", "run_scenario", "tier_table"]

Progress = Callable[[str, int, int, str], None]


def build_workspace(scenario: Scenario) -> Workspace:
    """Load the dataset, make disjoint splits and expand the device population."""
    spec = scenario.dataset
    dataset = DATASETS.create(spec.name, plugin_params(spec))
    train, test = dataset.load("train"), dataset.load("test")
    s = scenario.splits
    splits = make_splits(train, test, auxiliary=s.auxiliary, evaluation=s.evaluation,
                         seed=derive_seed(scenario.seed, "splits"))
    private, provider = _carve_provider(splits.private, s.provider, scenario.seed)
    population = expand_population(scenario, private.y.numpy())
    index = private.index if private.index is not None else np.arange(len(private))
    return Workspace(scenario, private.num_classes, dataset.normalization(),
                     private.x.numpy(), private.y.numpy(), np.asarray(index),
                     provider.x.numpy(), provider.y.numpy(), population,
                     splits.auxiliary.x.numpy(), splits.auxiliary.y.numpy(),
                     splits.evaluation.x.numpy(), splits.evaluation.y.numpy())


def _carve_provider(private, share: float | int, seed: int):
    n = len(private)
    k = int(round(share * n)) if isinstance(share, float) else int(share)
    if k >= n:
        raise ValueError(f"splits.provider takes {k} of the {n} private samples; "
                         "leave some for the devices")
    order = rng(seed, "provider-split").permutation(n)
    return private.subset(np.sort(order[k:])), private.subset(np.sort(order[:k]))


def run_scenario(scenario: Scenario, out: str | Path | None = None,
                 progress: Progress | None = None,
                 transport_factory: Callable[..., Any] | None = None) -> Path:
    """Run ``scenario`` and return its run directory.

    Parameters
    ----------
    out
        The run directory; default ``<output_dir>/<name>`` (never overwriting a run).
    transport_factory
        For benchmarks: ``factory(ws, cloud_state, body)`` replacing Flower + Ray.
    """
    progress = progress or (lambda *a: None)
    path = Path(out) if out else new_run_dir(scenario.output_dir, scenario.name)
    recorder = RunRecorder(path, scenario)
    try:
        _run(scenario, recorder, progress, transport_factory)
    except BaseException as err:
        recorder.finish("failed", error=f"{type(err).__name__}: {err}")
        raise
    recorder.finish()
    return path


def _run(scenario: Scenario, recorder: RunRecorder, progress: Progress,
         transport_factory: Callable[..., Any] | None) -> None:
    t0 = time.perf_counter()
    ws = build_workspace(scenario)
    kit = ModelKit(ws)
    edge_states, cloud_state = kit.initial_states()
    recorder.phase_done("setup", time.perf_counter() - t0, devices=len(ws.population.devices),
                        nodes=len(ws.population.nodes), private_samples=len(ws.private_y))
    rounds: list[dict] = []
    if scenario.training.mode == "centralized":
        t0 = time.perf_counter()
        edge_states, cloud_state, rounds = train_centralized(ws, kit, edge_states,
                                                             cloud_state, progress)
        recorder.phase_done("training", time.perf_counter() - t0)

    def body(transport: Transport) -> None:
        nonlocal edge_states
        outcome = None
        if scenario.training.mode == "split":
            t1 = time.perf_counter()
            outcome = run_split_training(ws, kit, transport, edge_states, progress)
            edge_states = outcome.edge_states
            rounds.extend(outcome.rounds)
            recorder.checkpoints(edge_states, transport.cloud("state"))
            recorder.table("rounds", pd.DataFrame(rounds))
            recorder.phase_done("training", time.perf_counter() - t1)
        else:
            recorder.checkpoints(edge_states, cloud_state)
            recorder.table("rounds", pd.DataFrame(rounds))
        t1 = time.perf_counter()
        accuracy = run_inference(ws, transport, edge_states, progress)
        devices = device_table(ws, kit, accuracy, outcome)
        recorder.table("devices", devices)
        recorder.table("tiers", tier_table(devices))
        observations = transport.cloud("observations")
        recorder.observations(observations, ws.private_index)
        recorder.phase_done("inference", time.perf_counter() - t1)
        if scenario.adversary.enabled and scenario.adversary.attacks:
            t1 = time.perf_counter()
            progress("attack", 0, len(observations), "curious cloud")
            results = transport.attack(edge_states, transport.cloud("state"), observations)
            recorder.leakage(results)
            recorder.phase_done("attack", time.perf_counter() - t1)
            progress("attack", len(observations), len(observations), "done")

    if transport_factory is None:
        from simulator.engine.flower import run_on_flower
        transport_factory = run_on_flower
    transport_factory(ws, cloud_state, body)


def attack_run(path: str | Path, overrides: list[str] | None = None,
               progress: Progress | None = None) -> Path:
    """Rerun the curious cloud on a finished run directory (nothing is retrained).

    ``overrides`` (``adversary.attacks=[...]``, ...) change the resolved scenario; the
    previous leakage outputs move to ``history/``.
    """
    import yaml

    from simulator.adversary import run_adversary
    from simulator.loading import apply_override, validate_scenario
    from simulator.records import read_checkpoints, read_observations
    path = Path(path)
    if not (path / "observations" / "index.parquet").is_file():
        raise FileNotFoundError(f"{path} holds no observation log (observations/"
                                "index.parquet): give a directory written by `siftsim run`")
    raw = yaml.safe_load((path / "scenario.yaml").read_text())
    for item in overrides or []:
        apply_override(raw, item)
    raw.setdefault("adversary", {})["enabled"] = True
    scenario = validate_scenario(raw, source=str(path / "scenario.yaml"))
    recorder = RunRecorder(path, scenario, resume=True)
    t0 = time.perf_counter()
    edges, cloud = read_checkpoints(path)
    results = run_adversary(build_workspace(scenario), edges, cloud, read_observations(path))
    recorder.leakage(results)
    recorder.phase_done("attack", time.perf_counter() - t0)
    return path


def device_table(ws: Workspace, kit: ModelKit, accuracy: dict[int, dict[str, float]],
                 outcome: TrainingOutcome | None) -> pd.DataFrame:
    """One row per device: identity, data, utility, edge cost and simulated latency."""
    rows = []
    for d in ws.population.devices:
        tier = kit.tiers[d.tier]
        cost = kit.costs[d.tier]
        acc = accuracy[d.device_id]
        weights_mb = cost.params * 4 / 1e6
        rows.append({
            "device_id": d.device_id, "tier": d.tier, "node": d.node,
            "encoder": tier.encoder.name, "defense": tier.defense.name,
            "n_train": len(d.train_idx), "n_test": len(d.test_idx),
            "rounds_trained": outcome.participation[d.device_id] if outcome else 0,
            "train_loss": outcome.device_loss.get(d.device_id, np.nan) if outcome else np.nan,
            "accuracy": acc["accuracy"], "correct": int(acc["correct"]),
            "params": cost.params, "macs": cost.macs, "elements_per_sample": cost.elements,
            "bytes_per_sample": cost.bytes, **inference_latency(cost, d.profile),
            "compute_gflops": d.profile.compute_gflops,
            "uplink_mbps": d.profile.uplink_mbps, "memory_mb": d.profile.memory_mb,
            "availability": d.profile.availability, "weights_mb": weights_mb,
            "fits_memory": weights_mb <= d.profile.memory_mb})
    return pd.DataFrame(rows)


def tier_table(devices: pd.DataFrame) -> pd.DataFrame:
    """One row per tier: device-accuracy mean with a 95% interval, costs, latency."""
    rows = []
    for tier, g in devices.groupby("tier", sort=False):
        mean, lo, hi = mean_ci(g["accuracy"].to_numpy())
        rows.append({"tier": tier, "devices": len(g), "encoder": g["encoder"].iloc[0],
                     "defense": g["defense"].iloc[0], "accuracy_mean": mean,
                     "accuracy_lo": lo, "accuracy_hi": hi,
                     "accuracy_pooled": g["correct"].sum() / g["n_test"].sum(),
                     "params": int(g["params"].iloc[0]), "macs": int(g["macs"].iloc[0]),
                     "elements_per_sample": int(g["elements_per_sample"].iloc[0]),
                     "bytes_per_sample": int(g["bytes_per_sample"].iloc[0]),
                     "latency_ms_mean": float(g["latency_ms"].mean())})
    return pd.DataFrame(rows)
