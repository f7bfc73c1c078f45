"""The independent evaluation classifier that scores reconstructions.

The backbone, whole, trained on the held-out evaluation split that neither the victims
nor the attacker used; one intra-op thread, so a run's actor and ``siftsim attack``
train the same weights.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F

from simulator.engine.workspace import ModelKit, Workspace
from simulator.scenario import Scenario
from simulator.seeding import derive_seed, rng, seeded

__all__ = ["build_evaluator", "evaluator_inputs", "single_thread", "train_evaluator"]


@contextmanager
def single_thread() -> Iterator[None]:
    """One intra-op thread: the same numbers in a run's actor and in `siftsim attack`."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def evaluator_inputs(sc: Scenario) -> dict[str, Any]:
    """What :func:`train_evaluator` depends on (data, splits, backbone, seed, epochs):
    scenarios that agree here train the same classifier, bit for bit, whatever their
    tiers, defenses and attacks, so a sweep's points may share it."""
    keep = sc.model_dump(mode="json", include={"dataset", "splits", "model", "seed"})
    return keep | {"evaluation_epochs": sc.adversary.evaluation_epochs}


def train_evaluator(ws: Workspace) -> dict[str, torch.Tensor]:
    """An independent classifier (the backbone, whole) trained on the evaluation split."""
    with single_thread():
        return _train_evaluator(ws)


def _train_evaluator(ws: Workspace) -> dict[str, torch.Tensor]:
    kit = ModelKit(ws)
    sc = ws.scenario
    with seeded(derive_seed(sc.seed, "evaluator-init")):
        model = build_evaluator(kit)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    # copies: in a Ray worker the workspace's arrays are read-only shared memory
    x, y = torch.from_numpy(ws.eval_x.copy()), torch.from_numpy(ws.eval_y.copy())
    model.train()
    for epoch in range(sc.adversary.evaluation_epochs):
        order = torch.from_numpy(rng(sc.seed, "evaluator-epoch", epoch).permutation(len(y)))
        for i, start in enumerate(range(0, len(y), 64)):
            idx = order[start:start + 64]
            with seeded(derive_seed(sc.seed, "evaluator-step", epoch, i)):
                loss = F.cross_entropy(model(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
            opt.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def build_evaluator(kit: ModelKit) -> torch.nn.Module:
    """The classifier's modules (untrained): input normalisation, then the whole backbone."""
    from strategies.models import Normalize
    return torch.nn.Sequential(Normalize(*kit.ws.normalization), kit.backbone.edge_layers(),
                               kit.backbone.trunk())
