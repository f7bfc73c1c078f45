"""The round loop of split training and the inference pass, written once.

The coordinator speaks to devices through a :class:`Transport`: the Flower transport
(ServerApp -> ClientApps on Ray) in real runs, an in-process one in the benchmark's bare
loop. Both run exactly the same arithmetic, so their wall-time ratio is the framework's
overhead.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

import numpy as np
import torch

from simulator.engine.cloud import CloudService
from simulator.engine.collapse import STAT_COLUMNS, TrainingCollapsed, police
from simulator.engine.device import InferJob, InferResult, TrainJob, TrainResult
from simulator.engine.observations import TierObservations
from simulator.engine.workspace import ModelKit, Workspace
from simulator.faults import FaultPlan
from simulator.fleet.clock import RoundPlan, next_round_start, plan_round
from simulator.latency import training_bytes, training_seconds
from strategies.federation import weighted_average
from strategies.models import EdgeCost

__all__ = ["Delivery", "Transport", "TrainState", "plan_rounds", "planned_cohorts",
           "round_plans", "run_inference", "run_split_training", "sample_round"]

Progress = Callable[[str, int, int, str], None]
R = TypeVar("R")
RoundEnd = Callable[["TrainState", dict[str, TierObservations]], None]
_CLOUD_RESTARTS = 2      # per round: a cloud that keeps dying is a bug, not a fault
_INFER_ATTEMPTS = 3


@dataclass
class Delivery(Generic[R]):
    """What came back from a batch of node jobs: results, and the nodes that died."""

    results: list[R]
    failed: dict[int, str] = field(default_factory=dict)   # node -> reason


class Transport(Protocol):
    """How the coordinator reaches device cohorts and the cloud."""

    cloud: CloudService

    def train(self, jobs: list[TrainJob]) -> Delivery[TrainResult]: ...
    def infer(self, jobs: list[InferJob]) -> Delivery[InferResult]: ...
    def cloud_alive(self) -> bool: ...
    def restart_cloud(self, state: dict[str, torch.Tensor]) -> None: ...


@dataclass
class TrainState:
    """Everything split training has produced after ``next_round`` rounds: what a round
    checkpoint holds. Device optimisers and the cloud's per-node copies live for one
    round only, and every random draw derives from (seed, round, device, step), so this
    is all a resumed run needs to continue bit for bit."""

    next_round: int
    edge_states: dict[str, dict[str, torch.Tensor]]
    cloud_state: dict[str, torch.Tensor]
    rounds: list[dict[str, Any]] = field(default_factory=list)   # one row per round and tier
    participation: dict[int, int] = field(default_factory=dict)  # device -> rounds trained
    rounds_failed: dict[int, int] = field(default_factory=dict)  # device -> rounds lost
    device_loss: dict[int, float] = field(default_factory=dict)  # device -> last loss
    failures: list[dict[str, Any]] = field(default_factory=list)
    # the collapse policy, per tier (simulator.engine.collapse)
    healthy_edges: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)
    edge_loss_scale: dict[str, float] = field(default_factory=dict)  # rollbacks' factor
    unhealthy_streak: dict[str, int] = field(default_factory=dict)
    rollbacks: dict[str, int] = field(default_factory=dict)
    collapses: list[dict[str, Any]] = field(default_factory=list)
    clock_s: float = 0.0     # virtual time at which round ``next_round`` starts
    plans: list[dict[str, Any]] = field(default_factory=list)  # RoundPlan.record + tier

    @classmethod
    def initial(cls, ws: Workspace, edge_states: dict, cloud_state: dict) -> TrainState:
        ids = [d.device_id for d in ws.population.devices]
        return cls(0, edge_states, cloud_state, participation=dict.fromkeys(ids, 0),
                   rounds_failed=dict.fromkeys(ids, 0), healthy_edges=dict(edge_states))


def plan_rounds(ws: Workspace, costs: Mapping[str, EdgeCost] | None, rnd: int,
                start_s: float = 0.0) -> dict[str, RoundPlan]:
    """Round ``rnd`` of every tier on the virtual clock (:func:`plan_round`).

    Per tier: its devices' availabilities, their training seconds and bytes on their
    own hardware, ``target = ceil(fraction x tier size)`` and ``training.timing``;
    the selection stream is keyed by the tier. ``costs`` None counts no work (the
    selection alone: with the default timing it does not depend on the work).
    """
    sc, training = ws.scenario, ws.scenario.training
    by_tier = ws.population.by_tier()
    plans = {}
    for tier in (t.name for t in sc.tiers if t.name in by_tier):
        devices = by_tier[tier]
        cost = None if costs is None else costs[tier]
        plans[tier] = plan_round(
            rnd, sc.seed, [d.device_id for d in devices],
            [d.profile.availability for d in devices],
            [0.0 if cost is None else training_seconds(cost, d.profile, training)
             for d in devices],
            [0 if cost is None else training_bytes(cost, training)] * len(devices),
            math.ceil(training.fraction * len(devices)), training.timing,
            start_s=start_s, group=tier)
    return plans


def sample_round(ws: Workspace, rnd: int,
                 plans: Mapping[str, RoundPlan] | None = None) -> dict[int, list[int]]:
    """Devices training in round ``rnd``, grouped by node: those ``plans`` accept.

    Without ``plans``, the selection of :func:`plan_rounds` (a device is reachable
    with its availability; of a tier's reachable devices ``ceil(fraction x tier
    size)`` are sampled, all if fewer).
    """
    plans = plan_rounds(ws, None, rnd) if plans is None else plans
    devices = ws.population.devices
    chosen: dict[int, list[int]] = {}
    for plan in plans.values():
        for d in plan.accepted:
            chosen.setdefault(devices[d].node, []).append(d)  # type: ignore[arg-type]
    return {n: sorted(ids) for n, ids in sorted(chosen.items())}


def _plan_round(ws: Workspace, kit: ModelKit, state: TrainState,
                rnd: int) -> dict[int, list[int]]:
    """Plan round ``rnd`` at the state's virtual time, keep the plans in ``state``
    (checkpointed with it) and move its clock to the next round's start."""
    plans = plan_rounds(ws, kit.costs, rnd, state.clock_s)
    state.plans.extend({"tier": tier, **plan.record()} for tier, plan in plans.items())
    duration = max((p.duration_s for p in plans.values()), default=0.0)
    state.clock_s = next_round_start(state.clock_s, duration,
                                     ws.scenario.training.timing)
    return sample_round(ws, rnd, plans)


def planned_cohorts(ws: Workspace, kit: ModelKit) -> list[dict[int, list[int]]]:
    """Per round, the devices each node trains, as split training plans them (the
    virtual clock included), without training anything."""
    state = TrainState.initial(ws, {}, {})
    return [_plan_round(ws, kit, state, rnd) for rnd in range(ws.scenario.training.rounds)]


def round_plans(state: TrainState) -> list[tuple[str, RoundPlan]]:
    """The state's participation plans, ``(tier, plan)`` in round order."""
    return [(str(r["tier"]), RoundPlan.from_record(r)) for r in state.plans]


def run_split_training(ws: Workspace, kit: ModelKit, transport: Transport,
                       state: TrainState, progress: Progress,
                       on_round_end: RoundEnd | None = None) -> TrainState:
    """SplitFed rounds from ``state.next_round`` on; tiers are averaged at round end.

    A node that dies loses its cohort's round (recorded per device); a dead cloud is
    restarted from the state of the last round end and the round is repeated.
    ``on_round_end(state, observations)`` receives the round's drained observation log
    (the run checkpoints both). A collapsed tier is handled by ``training.collapse``
    (:func:`~simulator.engine.collapse.police`); its ``stop`` raises
    :class:`~simulator.engine.collapse.TrainingCollapsed` after the round's checkpoint.
    Returns the final state (edges not yet deployed).
    """
    pop, rounds = ws.population, ws.scenario.training.rounds
    faults = FaultPlan(ws.scenario.faults, ws.scenario.seed)
    for tier, edge in state.edge_states.items():   # checkpoints from before the policy
        state.healthy_edges.setdefault(tier, edge)
    for rnd in range(state.next_round, rounds):
        chosen = _plan_round(ws, kit, state, rnd)
        started = dict(state.edge_states)
        for attempt in range(_CLOUD_RESTARTS + 1):
            transport.cloud.arm_crash(rnd, faults.cloud_exchange(rnd, attempt))
            jobs = [TrainJob(rnd, node, pop.node_tier(node), tuple(ids),
                             state.edge_states[pop.node_tier(node)],
                             faults.node_step(rnd, node, attempt),
                             state.edge_loss_scale.get(pop.node_tier(node), 1.0))
                    for node, ids in chosen.items()]
            delivery = transport.train(jobs)
            if not delivery.failed or transport.cloud_alive():
                break
            reason = "the cloud's process died"
            state.failures.append({"stage": "train", "round": rnd, "kind": "cloud",
                                   "reason": reason, "action": "restarted from the "
                                   "last round's state; round repeated"})
            progress("fault", rnd + 1, rounds, f"{reason} in round {rnd}: restarted from "
                     "the last round's state, repeating the round")
            transport.restart_cloud(state.cloud_state)
        else:
            raise RuntimeError(f"the cloud died {_CLOUD_RESTARTS + 1} times in round {rnd}")
        _absorb_round(ws, kit, transport, state, rnd, jobs, delivery, progress)
        stop = police(ws.scenario.training.collapse, state, rnd, started, progress,
                      rounds)
        state.next_round = rnd + 1
        state.cloud_state = transport.cloud.state()
        observed = transport.cloud.drain()
        if on_round_end is not None:
            on_round_end(state, observed)
        if stop:
            raise TrainingCollapsed(stop)
    return state


def _absorb_round(ws: Workspace, kit: ModelKit, transport: Transport, state: TrainState,
                  rnd: int, jobs: list[TrainJob], delivery: Delivery[TrainResult],
                  progress: Progress) -> None:
    """Average what finished, count who trained and who was lost."""
    pop, rounds = ws.population, ws.scenario.training.rounds
    results = sorted((r for r in delivery.results if r.weight > 0), key=lambda r: r.node)
    for tier in state.edge_states:
        mine = [(r.edge_state, r.weight) for r in results if pop.node_tier(r.node) == tier]
        if mine:
            state.edge_states[tier] = weighted_average(mine)
    stats = transport.cloud.aggregate({r.node: r.weight for r in results})
    crashed = []
    for r in delivery.results:
        for d, m in r.per_device.items():
            if m.get("failed"):
                state.rounds_failed[d] += 1
                crashed.append(d)
            else:
                state.participation[d] += 1
                state.device_loss[d] = m["loss"]
    if crashed:
        state.failures.append({"stage": "train", "round": rnd, "kind": "device_crash",
                               "devices": sorted(crashed), "reason": "injected crash"})
    for job in jobs:
        if job.node in delivery.failed:
            for d in job.device_ids:
                state.rounds_failed[d] += 1
            state.failures.append({"stage": "train", "round": rnd, "kind": "node",
                                   "node": job.node, "devices": list(job.device_ids),
                                   "reason": delivery.failed[job.node]})
            progress("fault", rnd + 1, rounds,
                     f"node {job.node} (tier {job.tier}, devices {_span(job.device_ids)}) "
                     f"died in round {rnd}: its devices' round is lost")
    state.rounds.extend(_round_rows(ws, kit, rnd, delivery.results, stats,
                                    state.edge_loss_scale))
    losses = [m["loss"] for r in results for m in r.per_device.values() if not m["failed"]]
    progress("train", rnd + 1, rounds,
             f"loss {np.mean(losses):.3f}" if losses else "no device finished")


def _span(ids: tuple[int, ...]) -> str:
    return f"{ids[0]}-{ids[-1]}" if len(ids) > 1 else str(ids[0])


def _round_rows(ws: Workspace, kit: ModelKit, rnd: int, results: list[TrainResult],
                stats: dict[str, dict[str, float]],
                scale: dict[str, float]) -> list[dict[str, Any]]:
    """Per tier: devices, mean loss, the edge-loss weight used (warm-up x the tier's
    rollback factor), the round's simulated duration (slowest device) and the
    statistics of the features the cloud received."""
    rows = []
    for tier in kit.tiers:
        mine = [(d, m) for r in results if ws.population.node_tier(r.node) == tier
                for d, m in r.per_device.items()]
        per = [(d, m) for d, m in mine if not m["failed"]]
        if not per:
            continue
        secs = [training_seconds(kit.costs[tier], ws.population.devices[d].profile,
                                 ws.scenario.training) for d, _ in per]
        rows.append({"round": rnd, "tier": tier, "devices": len(per),
                     "devices_crashed": len(mine) - len(per),
                     "loss": float(np.mean([m["loss"] for _, m in per])),
                     "edge_loss_weight": scale.get(tier, 1.0)
                     * ws.scenario.training.edge_loss_warmup.weight(rnd),
                     "virtual_seconds": float(max(secs)),
                     **stats.get(tier, dict.fromkeys(STAT_COLUMNS, float("nan")))})
    return rows


def run_inference(ws: Workspace, transport: Transport,
                  edge_states: dict[str, dict[str, torch.Tensor]],
                  cloud_state: dict[str, torch.Tensor], progress: Progress,
                  failures: list[dict[str, Any]]) -> dict[int, dict[str, float]]:
    """Every device, every private test sample, through its tier's deployed edge.

    Jobs of nodes that die are sent again (a dead cloud is restarted with the deployed
    ``cloud_state`` first); devices still unserved after that get no accuracy and a
    failure record.
    """
    pop = ws.population
    todo = [InferJob(node, pop.node_tier(node), ids, edge_states[pop.node_tier(node)])
            for node, ids in enumerate(pop.nodes)]
    out: dict[int, dict[str, float]] = {}
    for attempt in range(_INFER_ATTEMPTS):
        delivery = transport.infer(todo)
        for result in delivery.results:
            out.update(result.per_device)
        if not delivery.failed:
            break
        if not transport.cloud_alive():
            transport.restart_cloud(cloud_state)
            out.clear()     # the dead cloud's log is lost with it: serve everyone again
            todo = [InferJob(n, pop.node_tier(n), ids, edge_states[pop.node_tier(n)])
                    for n, ids in enumerate(pop.nodes)]
            reason = "the cloud's process died"
        else:
            todo = [j for j in todo if j.node in delivery.failed]
            reason = "; ".join(sorted(set(delivery.failed.values())))
        progress("fault", attempt + 1, _INFER_ATTEMPTS, f"inference: {reason}; retrying")
    else:
        for job in todo:
            failures.append({"stage": "infer", "kind": "node", "node": job.node,
                             "devices": list(job.device_ids),
                             "reason": delivery.failed.get(job.node, "cloud died")})
    progress("inference", len(pop.nodes), len(pop.nodes), f"{len(out)} devices")
    return dict(sorted(out.items()))
