"""Stage ``infer``: every device runs its private test samples through the deployed
models; the cloud's observation log (training rounds + inference) is written.

Outputs: ``devices`` (one row per device: identity, data, participation, failures,
accuracy, edge cost, simulated latency, profile), ``tiers`` and ``observations/``.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import pandas as pd

from analysis.metrics import mean_ci
from simulator.engine.collapse import tier_verdicts
from simulator.engine.coordinator import (Transport, TrainState, round_plans,
                                          run_inference)
from simulator.engine.observations import merge_observations
from simulator.engine.workspace import ModelKit
from simulator.fleet import tally
from simulator.latency import inference_latency
from simulator.population import DeviceSpec
from simulator.stages.context import RunContext
from simulator.stages.train import training_observations

__all__ = ["device_table", "infer", "tier_table"]


def infer(ctx: RunContext, transport: Transport, state: TrainState,
          edges: dict, cloud: dict) -> None:
    """Serve every device with the deployed ``edges`` and ``cloud``; mark the stage."""
    t0 = time.perf_counter()
    transport.cloud.load(cloud)
    transport.cloud.drain()          # nothing of training belongs to this stage's log
    failures: list[dict] = []
    accuracy = run_inference(ctx.ws, transport, edges, cloud, ctx.progress, failures)
    ctx.recorder.record_failures(failures)
    devices = device_table(ctx, accuracy, state)
    ctx.recorder.table("devices", devices)
    order = [t.name for t in ctx.ws.scenario.tiers]
    ctx.recorder.table("tiers", _with_collapse(tier_table(devices, order), state))
    chunks = training_observations(ctx, state.next_round) \
        if ctx.ws.scenario.training.mode == "split" else []
    log = merge_observations([*chunks, transport.cloud.drain()],
                             ctx.ws.scenario.observation.training_per_device)
    ctx.recorder.observations(log, ctx.ws.private_index)
    ctx.recorder.mark_stage("infer", time.perf_counter() - t0,
                            devices_served=len(accuracy))


def _with_collapse(tiers: pd.DataFrame, state: TrainState) -> pd.DataFrame:
    """``collapsed``, ``rounds_collapsed``, ``rollbacks`` per tier (split training;
    :func:`~simulator.engine.collapse.tier_verdicts`)."""
    verdicts = tier_verdicts(state.rounds)
    if not verdicts:
        return tiers
    cols = pd.DataFrame([{"tier": t, **v} for t, v in verdicts.items()])
    out = tiers.merge(cols, on="tier", how="left")
    out["collapsed"] = out["collapsed"].astype("boolean")
    return out


def device_table(ctx: RunContext, accuracy: dict[int, dict[str, float]],
                 state: TrainState) -> pd.DataFrame:
    """One row per device: identity, data, utility, edge cost, simulated latency and
    participation on the virtual clock (rounds selected, completed, dropped,
    straggled, cancelled; busy seconds and bytes sent).

    A device that fits no rung (``assignment`` with ``unfit: drop``) has no tier, is
    ``unable`` and gets no cost, latency or accuracy; ``assignment`` says why.
    """
    ws, kit = ctx.ws, ctx.kit
    taken = {r.pop("device_id"): r for r in tally(
        [plan for _, plan in round_plans(state)],
        [d.device_id for d in ws.population.devices]).to_dict("records")}
    rows = []
    for d in ws.population.devices:
        acc = accuracy.get(d.device_id, {"accuracy": np.nan, "correct": 0})
        rows.append({
            "device_id": d.device_id, "tier": d.tier, "node": d.node,
            **_tier_columns(kit, d),
            "n_train": len(d.train_idx), "n_test": len(d.test_idx),
            "rounds_trained": state.participation.get(d.device_id, 0),
            "rounds_failed": state.rounds_failed.get(d.device_id, 0),
            **taken[d.device_id],
            "train_loss": state.device_loss.get(d.device_id, np.nan),
            "served": d.device_id in accuracy,
            "accuracy": acc["accuracy"], "correct": int(acc["correct"]),
            **_cost_columns(kit, d),
            "compute_gflops": d.profile.compute_gflops,
            "uplink_mbps": d.profile.uplink_mbps, "memory_mb": d.profile.memory_mb,
            "availability": d.profile.availability, "profile_origin": d.profile.origin,
            "unable": d.tier is None, "assignment": d.assignment})
    return pd.DataFrame(rows)


def _tier_columns(kit: ModelKit, d: DeviceSpec) -> dict[str, Any]:
    if d.tier is None:
        return {"encoder": None, "defense": None}
    tier = kit.tiers[d.tier]
    return {"encoder": tier.encoder.name, "defense": tier.defense.name}


_COSTS = ("params", "macs", "elements_per_sample", "bytes_per_sample", "compute_ms",
          "uplink_ms", "latency_ms")


def _cost_columns(kit: ModelKit, d: DeviceSpec) -> dict[str, Any]:
    """Edge cost and simulated latency on the device's hardware (NaN without a tier)."""
    if d.tier is None:
        return {**dict.fromkeys(_COSTS, np.nan), "weights_mb": np.nan,
                "fits_memory": False}
    cost = kit.costs[d.tier]
    weights_mb = cost.params * 4 / 1e6
    return {"params": cost.params, "macs": cost.macs, "elements_per_sample": cost.elements,
            "bytes_per_sample": cost.bytes, **inference_latency(cost, d.profile),
            "weights_mb": weights_mb, "fits_memory": weights_mb <= d.profile.memory_mb}


def tier_table(devices: pd.DataFrame, order: list[str] | None = None) -> pd.DataFrame:
    """One row per tier: device-accuracy mean with a 95% interval, costs, latency.

    Rows follow ``order`` (the scenario's tiers: an ``assignment`` ladder's rungs
    smallest first), else the devices' order; tiers without devices are left out.
    """
    groups = dict(list(devices.groupby("tier", sort=False)))
    names = [t for t in order if t in groups] if order else list(groups)
    rows = []
    for tier in names:
        g = groups[tier]
        served = g[g["served"]]
        mean, lo, hi = mean_ci(served["accuracy"].to_numpy())
        rows.append({"tier": tier, "devices": len(g), "encoder": g["encoder"].iloc[0],
                     "defense": g["defense"].iloc[0], "accuracy_mean": mean,
                     "accuracy_lo": lo, "accuracy_hi": hi,
                     "accuracy_pooled": served["correct"].sum() / max(1, served["n_test"].sum()),
                     "devices_unserved": int((~g["served"]).sum()),
                     "params": int(g["params"].iloc[0]), "macs": int(g["macs"].iloc[0]),
                     "elements_per_sample": int(g["elements_per_sample"].iloc[0]),
                     "bytes_per_sample": int(g["bytes_per_sample"].iloc[0]),
                     "latency_ms_mean": float(g["latency_ms"].mean())})
    return pd.DataFrame(rows)
