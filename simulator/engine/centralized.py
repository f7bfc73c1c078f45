"""Centralized training: the provider trains every tier's edge with the cloud, then deploys.

This is the paper's setting: the service provider trains edge + cloud jointly on its own
data (the scenario's ``splits.provider``), with each tier's defense in the loop, and
ships each tier's edge to its devices. One optimiser steps all tiers' edges and the
shared cloud on the mean of the tiers' losses.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import torch

from simulator.engine.workspace import (ModelKit, Workspace, make_optimizer, state_of,
                                         weighted_edge_loss)
from simulator.seeding import derive_seed, generator, rng, seeded

__all__ = ["train_centralized"]


def train_centralized(ws: Workspace, kit: ModelKit,
                      edge_states: dict[str, dict[str, torch.Tensor]],
                      cloud_state: dict[str, torch.Tensor],
                      progress: Callable[[str, int, int, str], None],
                      start_epoch: int = 0, optimizer_state: dict | None = None,
                      rows: list[dict] | None = None,
                      on_epoch_end: Callable[..., None] | None = None):
    """Train all tiers on the provider split; returns (edge states, cloud state, rows).

    Continues from ``start_epoch`` with the optimiser's saved state (a resumed run);
    ``on_epoch_end(epoch, edge_states, cloud_state, optimizer_state, rows)`` lets the
    run checkpoint every epoch. The returned weights are trained, not yet deployed.
    """
    sc = ws.scenario
    n = len(ws.provider_y)
    if n == 0:
        raise ValueError("training.mode is 'centralized' but splits.provider is 0: give the "
                         "provider a share of the data (e.g. splits.provider: 0.2)")
    edges = {t: kit.edge(t) for t in kit.tiers}
    for t, e in edges.items():
        e.load_state_dict(edge_states[t])
        e.train()
    cloud = kit.cloud()
    cloud.load_state_dict(cloud_state)
    cloud.train()
    params = itertools.chain(cloud.parameters(), *(e.parameters() for e in edges.values()))
    opt = make_optimizer(params, sc.training.optimizer)
    if optimizer_state is not None:
        opt.load_state_dict(optimizer_state)
    rows, size = list(rows or []), min(sc.training.batch_size, n)
    for epoch in range(start_epoch, sc.training.epochs):
        # A generator per epoch (not one for the whole run): a resumed run draws the
        # same noise as one that was never stopped.
        gens = {t: generator(sc.seed, "provider-transform", t, epoch) for t in edges}
        order = rng(sc.seed, "provider-epoch", epoch).permutation(n)
        weight = sc.training.edge_loss_warmup.weight(epoch)
        losses = []
        for start in range(0, n - size + 1, size):
            idx = order[start:start + size]
            x = torch.from_numpy(ws.provider_x[idx])
            y = torch.from_numpy(ws.provider_y[idx])
            with seeded(derive_seed(sc.seed, "provider-step", epoch, start)):
                loss = torch.stack([_tier_loss(kit, cloud, t, e, x, y, gens[t], weight)
                                    for t, e in edges.items()]).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        rows.append({"round": epoch, "tier": "all", "devices": 0,
                     "loss": float(np.mean(losses)), "edge_loss_weight": weight,
                     "virtual_seconds": 0.0})
        progress("provider training", epoch + 1, sc.training.epochs,
                 f"loss {np.mean(losses):.3f}")
        if on_epoch_end is not None:
            on_epoch_end(epoch, {t: state_of(e) for t, e in edges.items()},
                         state_of(cloud), opt.state_dict(), rows)
    return {t: state_of(e) for t, e in edges.items()}, state_of(cloud), rows


def _tier_loss(kit: ModelKit, cloud: torch.nn.Module, tier: str, edge: torch.nn.Module,
               x: torch.Tensor,
               y: torch.Tensor, gen: torch.Generator, weight: float) -> torch.Tensor:
    defense = kit.defenses[tier]
    z = defense.transform(edge(x), training=True, generator=gen)
    loss = defense.task_loss(cloud(z, tier), y)
    extra = weighted_edge_loss(defense, x, z, edge, weight)
    return loss if extra is None else loss + extra
