"""Device side: what one Flower node does for its cohort of same-tier devices.

Every device keeps its own copy of the tier's edge for the round, its own batches and its
own noise; the cohort only batches the *messages* to the cloud (one exchange per local
step for the whole cohort), so framework overhead stays small at 1,000 devices while
every result stays per device. Plain PyTorch: the Flower seam calls these functions.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from simulator.engine.cohort_edges import cohort_edges
from simulator.engine.workspace import INFER_BATCH, ModelKit, Workspace
from simulator.faults import FaultPlan, die
from simulator.seeding import derive_seed, generator, rng, seeded
from strategies.defenses import Defense
from strategies.federation import weighted_average

__all__ = ["InferJob", "InferResult", "TrainJob", "TrainResult", "run_infer_job",
           "run_train_job"]


Exchange = Callable[..., tuple[np.ndarray, np.ndarray]]
Predict = Callable[..., np.ndarray]


@dataclass(frozen=True)
class TrainJob:
    rnd: int
    node: int
    tier: str
    device_ids: tuple[int, ...]
    edge_state: dict[str, torch.Tensor]
    crash_step: int | None = None        # an injected fault: the node dies at this step
    edge_loss_scale: float = 1.0         # the tier's factor after collapse rollbacks


@dataclass
class TrainResult:
    """A cohort's round. ``per_device[d]["failed"]`` is 1 for a device that crashed
    mid-round: its work is not in ``edge_state`` and it counts in no ``weight``."""

    node: int
    edge_state: dict[str, torch.Tensor]  # sample-weighted mean of the finished edges
    weight: float                        # training samples behind it (0: none finished)
    per_device: dict[int, dict[str, float]] = field(default_factory=dict)


@dataclass(frozen=True)
class InferJob:
    node: int
    tier: str
    device_ids: tuple[int, ...]
    edge_state: dict[str, torch.Tensor]


@dataclass
class InferResult:
    node: int
    per_device: dict[int, dict[str, float]]


def _batches(ws: Workspace, device_id: int, rnd: int) -> list[np.ndarray]:
    """This round's local batches of a device: a seeded permutation, cycled."""
    cfg, dev = ws.scenario.training, ws.population.devices[device_id]
    order = rng(dev.seed, "batches", rnd).permutation(dev.train_idx)
    size = min(cfg.batch_size, len(order))
    reps = -(-cfg.local_steps * size // len(order))
    order = np.tile(order, reps)
    return [order[s * size:(s + 1) * size] for s in range(cfg.local_steps)]


def _generators(defense: Defense, seeds: dict[int, int],
                phase: int | str) -> dict[int, torch.Generator | None]:
    """Each device's generator for the defense's random transform (None for a defense
    without one: seeding 10,000 generators took a fifth of inference)."""
    if not defense.transforms():
        return dict.fromkeys(seeds)
    return {d: generator(seed, "transform", phase) for d, seed in seeds.items()}


def run_train_job(job: TrainJob, ws: Workspace, kit: ModelKit,
                  exchange: Exchange) -> TrainResult:
    """Run one round of split training for a cohort; ``exchange`` reaches the cloud.

    A device that crashes (the scenario's ``faults.device_crash_probability``) stops
    sending at its crash step, and its edge is left out of the cohort's average.
    """
    defense = kit.defenses[job.tier]
    cfg = ws.scenario.training
    seeds = {d: ws.population.devices[d].seed for d in job.device_ids}
    gens = _generators(defense, seeds, job.rnd)
    plans = {d: _batches(ws, d, job.rnd) for d in job.device_ids}
    faults = FaultPlan(ws.scenario.faults, ws.scenario.seed)
    crash = {d: faults.device_crash_step(seeds[d], job.rnd, cfg.local_steps)
             for d in job.device_ids}
    weight = cfg.edge_loss_warmup.weight(job.rnd) * job.edge_loss_scale
    edges = cohort_edges(kit, job.tier, job.edge_state,
                         {d: len(plans[d][0]) for d in job.device_ids}, cfg.optimizer,
                         lambda d, kind, step: derive_seed(seeds[d], kind, job.rnd, step))
    losses = {d: [] for d in job.device_ids}
    for step in range(cfg.local_steps):
        if job.crash_step == step:
            die(f"node {job.node} in round {job.rnd}")
        active = [d for d in job.device_ids if crash[d] is None or step < crash[d]]
        if not active:
            break
        batches = {d: ws.batch(plans[d][step]) for d in job.device_ids}
        xs = {d: x for d, (x, _) in batches.items()}
        zs = {d: defense.transform(z, training=True, generator=gens[d])
              for d, z in edges.forward(step, xs, active).items()}
        sizes = [len(plans[d][step]) for d in active]
        grads, dev_losses = exchange(
            job.rnd, job.node, job.tier, torch.cat(list(zs.values())).detach().numpy(),
            torch.cat([batches[d][1] for d in active]).numpy(),
            np.repeat(np.asarray(active), sizes),
            np.concatenate([plans[d][step] for d in active]), sizes)
        edges.backward(step, xs, zs, dict(zip(active, torch.from_numpy(grads).split(sizes),
                                              strict=True)), weight)
        for d, loss in zip(active, dev_losses, strict=True):
            losses[d].append(float(loss))
    done = [d for d in job.device_ids if crash[d] is None]
    weights = {d: float(len(ws.population.devices[d].train_idx)) for d in job.device_ids}
    state = weighted_average(list(zip(edges.states(done), [weights[d] for d in done],
                                      strict=True))) \
        if done else {k: v.clone() for k, v in job.edge_state.items()}
    per_device = {d: {"loss": float(np.mean(losses[d])) if losses[d] else float("nan"),
                      "samples": weights[d], "failed": float(crash[d] is not None)}
                  for d in job.device_ids}
    return TrainResult(job.node, state, sum(weights[d] for d in done), per_device)


@torch.no_grad()
def run_infer_job(job: InferJob, ws: Workspace, kit: ModelKit,
                  predict: Predict) -> InferResult:
    """Every device encodes its private test samples; accuracy stays on the device.

    The deployed edge is the same on every device of the cohort and per-sample in eval
    mode (BatchNorm uses its running statistics), so without a random transform the
    cohort's images go through it in batches of up to ``INFER_BATCH``: one call instead
    of one per device, the same features. A defense with a random transform gets one
    edge call per device, each transformed with the device's own generator, as it
    would be alone: the transform may read what the edge head attached to its output
    (Shredder's and VIB's learned noise scales), which a slice of a batch would drop.
    """
    edge = kit.edge_copies(job.tier, job.edge_state, 1)[0].eval()
    defense = kit.defenses[job.tier]
    samples = [ws.population.devices[d].test_idx for d in job.device_ids]
    sizes = [len(idx) for idx in samples]
    flat = np.concatenate(samples)
    with seeded(derive_seed(ws.scenario.seed, "edge", "inference", job.tier, job.node)):
        if defense.transforms():
            gens = _generators(defense, {d: ws.population.devices[d].seed
                                         for d in job.device_ids}, "inference")
            zs = [defense.transform(edge(ws.batch(idx)[0]), training=False,
                                    generator=gens[d])
                  for d, idx in zip(job.device_ids, samples, strict=True)]
        else:
            zs = list(torch.cat([edge(ws.batch(flat[s:s + INFER_BATCH])[0])
                                 for s in range(0, len(flat), INFER_BATCH)]).split(sizes))
    pred = predict(job.tier, torch.cat(zs).numpy(),
                   np.repeat(np.asarray(job.device_ids), sizes), flat)
    out, start = {}, 0
    for d, n, idx in zip(job.device_ids, sizes, samples, strict=True):
        correct = int((pred[start:start + n] == ws.private_y[idx]).sum())
        out[d] = {"correct": float(correct), "n": float(n), "accuracy": correct / n}
        start += n
    return InferResult(job.node, out)
