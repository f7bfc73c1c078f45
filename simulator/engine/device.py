"""Device side: what one Flower node does for its cohort of same-tier devices.

Every device keeps its own copy of the tier's edge for the round, its own batches and its
own noise; the cohort only batches the *messages* to the cloud (one exchange per local
step for the whole cohort), so framework overhead stays small at 1,000 devices while
every result stays per device. Plain PyTorch: the Flower seam calls these functions.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from simulator.engine.workspace import (ModelKit, Workspace, make_optimizer, state_of,
                                         weighted_edge_loss)
from simulator.faults import FaultPlan, die
from simulator.seeding import derive_seed, generator, rng, seeded
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


def run_train_job(job: TrainJob, ws: Workspace, kit: ModelKit,
                  exchange: Exchange) -> TrainResult:
    """Run one round of split training for a cohort; ``exchange`` reaches the cloud.

    A device that crashes (the scenario's ``faults.device_crash_probability``) stops
    sending at its crash step, and its edge is left out of the cohort's average.
    """
    template = kit.edge(job.tier)
    template.load_state_dict(job.edge_state)
    defense = kit.defenses[job.tier]
    steps = ws.scenario.training.local_steps
    edges = {d: copy.deepcopy(template).train() for d in job.device_ids}
    opts = {d: make_optimizer(e.parameters(), ws.scenario.training.optimizer)
            for d, e in edges.items()}
    gens = {d: generator(ws.population.devices[d].seed, "transform", job.rnd)
            for d in job.device_ids}
    plans = {d: _batches(ws, d, job.rnd) for d in job.device_ids}
    faults = FaultPlan(ws.scenario.faults, ws.scenario.seed)
    crash = {d: faults.device_crash_step(ws.population.devices[d].seed, job.rnd, steps)
             for d in job.device_ids}
    weight = ws.scenario.training.edge_loss_warmup.weight(job.rnd) * job.edge_loss_scale
    losses = {d: [] for d in job.device_ids}
    for step in range(steps):
        if job.crash_step == step:
            die(f"node {job.node} in round {job.rnd}")
        active = [d for d in job.device_ids if crash[d] is None or step < crash[d]]
        if not active:
            break
        xs, ys, zs, idx = [], [], [], []
        for d in active:
            x, y = ws.batch(plans[d][step])
            with seeded(derive_seed(ws.population.devices[d].seed, "edge", job.rnd, step)):
                z = defense.transform(edges[d](x), training=True, generator=gens[d])
            xs.append(x), ys.append(y), zs.append(z), idx.append(plans[d][step])
        sizes = [len(y) for y in ys]
        grads, dev_losses = exchange(
            job.rnd, job.node, job.tier, torch.cat(zs).detach().numpy(),
            torch.cat(ys).numpy(), np.repeat(np.asarray(active), sizes),
            np.concatenate(idx), sizes)
        grads = torch.from_numpy(grads).split(sizes)
        for i, d in enumerate(active):
            with seeded(derive_seed(ws.population.devices[d].seed, "edge-loss", job.rnd, step)):
                _device_step(defense, edges[d], opts[d], xs[i], zs[i], grads[i],
                             weight)
            losses[d].append(float(dev_losses[i]))
    done = [d for d in job.device_ids if crash[d] is None]
    weights = {d: float(len(ws.population.devices[d].train_idx)) for d in job.device_ids}
    state = weighted_average([(state_of(edges[d]), weights[d]) for d in done]) \
        if done else {k: v.clone() for k, v in job.edge_state.items()}
    per_device = {d: {"loss": float(np.mean(losses[d])) if losses[d] else float("nan"),
                      "samples": weights[d], "failed": float(crash[d] is not None)}
                  for d in job.device_ids}
    return TrainResult(job.node, state, sum(weights[d] for d in done), per_device)


def _device_step(defense, edge, opt, x, z, grad_z, weight: float = 1.0) -> None:
    """Back-propagate the cloud's gradient plus the defense's device-side term, scaled
    by the warm-up ``weight``."""
    opt.zero_grad(set_to_none=True)
    extra = weighted_edge_loss(defense, x, z, edge, weight)
    tensors, grads = [z], [grad_z]
    if extra is not None:
        tensors.append(extra)
        grads.append(torch.ones_like(extra))
    torch.autograd.backward(tensors, grads)
    opt.step()


@torch.no_grad()
def run_infer_job(job: InferJob, ws: Workspace, kit: ModelKit,
                  predict: Predict) -> InferResult:
    """Every device encodes its private test samples; accuracy stays on the device."""
    edge = kit.edge(job.tier)
    edge.load_state_dict(job.edge_state)
    edge.eval()
    defense = kit.defenses[job.tier]
    zs, sizes, samples = [], [], []
    for d in job.device_ids:
        dev = ws.population.devices[d]
        x, _ = ws.batch(dev.test_idx)
        gen = generator(dev.seed, "transform", "inference")
        with seeded(derive_seed(dev.seed, "edge", "inference")):
            zs.append(defense.transform(edge(x), training=False, generator=gen))
        sizes.append(len(dev.test_idx))
        samples.append(dev.test_idx)
    pred = predict(job.tier, torch.cat(zs).numpy(),
                   np.repeat(np.asarray(job.device_ids), sizes), np.concatenate(samples))
    out, start = {}, 0
    for d, n, idx in zip(job.device_ids, sizes, samples, strict=True):
        correct = int((pred[start:start + n] == ws.private_y[idx]).sum())
        out[d] = {"correct": float(correct), "n": float(n), "accuracy": correct / n}
        start += n
    return InferResult(job.node, out)
