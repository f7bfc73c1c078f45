"""The round loop of split training and the inference pass, written once.

The coordinator speaks to devices through a :class:`Transport`: the Flower transport
(ServerApp -> ClientApps on Ray) in real runs, an in-process one in the benchmark's bare
loop. Both run exactly the same arithmetic, so their wall-time ratio is the framework's
overhead.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from simulator.latency import training_seconds
from simulator.engine.device import InferJob, InferResult, TrainJob, TrainResult
from simulator.engine.workspace import ModelKit, Workspace
from simulator.seeding import rng
from strategies.federation import weighted_average

__all__ = ["Transport", "TrainingOutcome", "run_inference", "run_split_training",
           "sample_round"]

Progress = Callable[[str, int, int, str], None]


class Transport(Protocol):
    """How the coordinator reaches device cohorts and the cloud."""

    def train(self, jobs: list[TrainJob]) -> list[TrainResult]: ...
    def infer(self, jobs: list[InferJob]) -> list[InferResult]: ...
    def cloud(self, method: str, *args: Any) -> Any: ...
    def attack(self, edge_states: dict, cloud_state: dict, observations: dict) -> list: ...


@dataclass
class TrainingOutcome:
    edge_states: dict[str, dict[str, torch.Tensor]]
    rounds: list[dict[str, Any]]              # one row per round (and tier)
    participation: dict[int, int]              # device -> rounds trained
    device_loss: dict[int, float]              # device -> last training loss


def sample_round(ws: Workspace, rnd: int) -> dict[int, list[int]]:
    """Devices training in round ``rnd``, grouped by node.

    A device is reachable with its tier's availability probability; of the reachable
    devices of a tier, ``ceil(fraction * tier size)`` are sampled (all if fewer).
    """
    sc, pop = ws.scenario, ws.population
    chosen: dict[int, list[int]] = {}
    for tier, devices in pop.by_tier().items():
        avail = [d for d in devices
                 if rng(sc.seed, "availability", rnd, d.device_id).random()
                 < d.profile.availability]
        want = min(len(avail), math.ceil(sc.training.fraction * len(devices)))
        picked = rng(sc.seed, "sample", rnd, tier).permutation(len(avail))[:want]
        for i in sorted(picked):
            chosen.setdefault(avail[i].node, []).append(avail[i].device_id)
    return {n: sorted(ids) for n, ids in sorted(chosen.items())}


def run_split_training(ws: Workspace, kit: ModelKit, transport: Transport,
                       edge_states: dict[str, dict[str, torch.Tensor]],
                       progress: Progress) -> TrainingOutcome:
    """SplitFed rounds: cohorts train against the cloud; tiers are averaged at round end."""
    pop, rounds = ws.population, ws.scenario.training.rounds
    history, taken, last_loss = [], {d.device_id: 0 for d in pop.devices}, {}
    for rnd in range(rounds):
        chosen = sample_round(ws, rnd)
        jobs = [TrainJob(rnd, node, pop.node_tier(node), tuple(ids),
                         edge_states[pop.node_tier(node)]) for node, ids in chosen.items()]
        results = sorted(transport.train(jobs), key=lambda r: r.node)
        for tier in edge_states:
            mine = [(r.edge_state, r.weight) for r in results if pop.node_tier(r.node) == tier]
            if mine:
                edge_states[tier] = weighted_average(mine)
        transport.cloud("aggregate", {r.node: r.weight for r in results})
        for r in results:
            for d, m in r.per_device.items():
                taken[d] += 1
                last_loss[d] = m["loss"]
        history.extend(_round_rows(ws, kit, rnd, results))
        loss = np.mean([m["loss"] for r in results for m in r.per_device.values()])
        progress("train", rnd + 1, rounds, f"loss {loss:.3f}")
    deployed = {t: kit.deployed(t, s) for t, s in edge_states.items()}
    transport.cloud("deploy")
    return TrainingOutcome(deployed, history, taken, last_loss)


def _round_rows(ws: Workspace, kit: ModelKit, rnd: int,
                results: list[TrainResult]) -> list[dict[str, Any]]:
    """Per tier: devices, mean loss and the round's simulated duration (slowest device)."""
    rows = []
    for tier in kit.tiers:
        per = [(d, m) for r in results if ws.population.node_tier(r.node) == tier
               for d, m in r.per_device.items()]
        if not per:
            continue
        secs = [training_seconds(kit.costs[tier], ws.population.devices[d].profile,
                                 ws.scenario.training) for d, _ in per]
        rows.append({"round": rnd, "tier": tier, "devices": len(per),
                     "loss": float(np.mean([m["loss"] for _, m in per])),
                     "edge_loss_weight": ws.scenario.training.edge_loss_warmup.weight(rnd),
                     "virtual_seconds": float(max(secs))})
    return rows


def run_inference(ws: Workspace, transport: Transport,
                  edge_states: dict[str, dict[str, torch.Tensor]],
                  progress: Progress) -> dict[int, dict[str, float]]:
    """Every device, every private test sample, through its tier's deployed edge."""
    pop = ws.population
    jobs = [InferJob(node, pop.node_tier(node), ids, edge_states[pop.node_tier(node)])
            for node, ids in enumerate(pop.nodes)]
    out: dict[int, dict[str, float]] = {}
    for result in transport.infer(jobs):
        out.update(result.per_device)
    progress("inference", len(jobs), len(jobs), f"{len(out)} devices")
    return dict(sorted(out.items()))
