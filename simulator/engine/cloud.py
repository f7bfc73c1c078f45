"""The shared cloud: finishes inference for every tier and logs what it sees.

Split training follows SplitFed V1 (Thapa et al. 2022, arXiv 2004.12088): within a round
each Flower node (a same-tier cohort) trains its own copy of the cloud model on its
devices' features; at round end the copies are averaged in node order. The result does not
depend on the order in which nodes reach the cloud, so runs are reproducible even with
concurrent actors. Plain Python: the Flower/Ray seam wraps it in an actor.
"""

from __future__ import annotations

import copy
from typing import Protocol

import numpy as np
import torch

from simulator.engine.collapse import FeatureStats
from simulator.engine.observations import ObservationLog, TierObservations
from simulator.engine.workspace import (INFER_BATCH, ModelKit, Workspace, make_optimizer,
                                        refill, state_of)
from simulator.faults import die
from simulator.seeding import derive_seed, seeded
from strategies.federation import weighted_average

__all__ = ["Cloud", "CloudService"]


class CloudService(Protocol):
    """What the coordinator calls on the cloud, wherever it runs (in-process or an actor).

    Devices call :meth:`exchange` and :meth:`infer` directly; the coordinator the rest.
    """

    def exchange(self, rnd: int, node: int, tier: str, z: np.ndarray, y: np.ndarray,
                 device_ids: np.ndarray, samples: np.ndarray,
                 sizes: list[int]) -> tuple[np.ndarray, np.ndarray]: ...
    def infer(self, tier: str, z: np.ndarray, device_ids: np.ndarray,
              samples: np.ndarray) -> np.ndarray: ...
    def aggregate(self, weights: dict[int, float]) -> dict[str, dict[str, float]]: ...
    def discard_round(self) -> None: ...
    def arm_crash(self, rnd: int, exchange: int | None) -> None: ...
    def drain(self) -> dict[str, TierObservations]: ...
    def load(self, state: dict[str, torch.Tensor]) -> None: ...
    def state(self) -> dict[str, torch.Tensor]: ...


def _group(key: str) -> str | None:
    """Which tier a cloud state entry belongs to (None: shared by all tiers)."""
    if key.startswith("adapters."):
        return key.split(".")[1]
    if ".tier_stats." in key:
        return key.split(".tier_stats.")[1].split(".")[0]
    return None


class Cloud:
    """Cloud model, per-node training copies and the observation log.

    Parameters
    ----------
    workspace
        The run's shared inputs.
    state
        Initial cloud weights (from :meth:`ModelKit.initial_states`).
    """

    def __init__(self, workspace: Workspace, state: dict[str, torch.Tensor]) -> None:
        self.ws = workspace
        self.kit = ModelKit(workspace)
        self.model = self.kit.cloud()
        self.model.load_state_dict(state)
        self._copies: dict[int, tuple[torch.nn.Module, torch.optim.Optimizer]] = {}
        self._kept: dict[int, tuple[torch.nn.Module, list[str], list[torch.Tensor]]] = {}
        self._steps: dict[int, int] = {}
        self._stats: dict[int, FeatureStats] = {}   # per node, this round
        self._crash: tuple[int, int] | None = None  # (round, exchange) of a fault
        self._exchanges = 0
        self.log = ObservationLog(workspace.scenario.observation.phases)

    def exchange(self, rnd: int, node: int, tier: str, z: np.ndarray, y: np.ndarray,
                 device_ids: np.ndarray, samples: np.ndarray,
                 sizes: list[int]) -> tuple[np.ndarray, np.ndarray]:
        """One split-learning step of a cohort: features in, feature gradients out.

        The loss is the mean over devices of each device's task loss; each device gets
        the gradient of its own mean loss (hence the factor ``len(sizes)``). Returns the
        feature gradients and each device's task loss.
        """
        if self._crash and self._crash == (rnd, self._exchanges):
            die(f"cloud in round {rnd}")
        self._exchanges += 1
        if node not in self._copies:
            model = self._copy_for(node)
            opt = make_optimizer(model.parameters(), self.ws.scenario.training.optimizer)
            self._copies[node] = (model, opt)
        model, opt = self._copies[node]
        step = self._steps[node] = self._steps.get(node, -1) + 1
        self.log.add("training", rnd, tier, device_ids, samples, z)
        zt = torch.from_numpy(z).requires_grad_(True)
        yt = torch.from_numpy(y)
        counts = torch.as_tensor(sizes)
        owner = torch.repeat_interleave(torch.arange(len(sizes)), counts)
        with seeded(derive_seed(self.ws.scenario.seed, "cloud", rnd, node, step)):
            logits = model(zt, tier)
            per_sample = self.kit.defenses[tier].sample_losses(logits, yt)
            # Each device's mean loss by segment sums: one loss call for the cohort
            # (a call per device slice made a cloud step ~7% slower).
            losses = per_sample.new_zeros(len(sizes)).index_add_(0, owner, per_sample) / counts
            loss = losses.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
        opt.step()
        self._stats.setdefault(node, FeatureStats()).add(
            z, y, logits.detach().argmax(dim=1).numpy())
        return (zt.grad * len(sizes)).numpy(), losses.detach().numpy()

    def _copy_for(self, node: int) -> torch.nn.Module:
        """The node's training copy of the cloud model, holding the round's weights.

        Copies are kept between rounds and refilled: deep-copying the model cost 46 ms
        a node and round, 8% of training at 1,000 devices; copying its tensors, <1 ms.
        Only what the node trains and :meth:`aggregate` reads of it is refilled: the
        shared trunk and the node's own tier (other tiers' adapters stay unused).
        """
        if node not in self._kept:
            model = copy.deepcopy(self.model)
            tier = self.ws.population.node_tier(node)
            keys = [k for k in model.state_dict() if _group(k) in (None, tier)]
            live = model.state_dict(keep_vars=True)
            self._kept[node] = (model, keys, [live[k] for k in keys])
        model, keys, tensors = self._kept[node]
        current = self.model.state_dict()
        refill(tensors, (current[k] for k in keys))
        model.train().zero_grad(set_to_none=True)
        return model

    def aggregate(self, weights: dict[int, float]) -> dict[str, dict[str, float]]:
        """End of round: average the nodes' copies (sample-weighted, node order).

        The shared trunk averages over every node; a tier's adapter and its trunk
        BatchNorm statistics only over the nodes of that tier, so tiers that did not
        train leave them untouched. Returns, per tier that trained, the statistics of
        the features it sent (:meth:`FeatureStats.summary`, over these nodes).
        """
        nodes = sorted(n for n in weights if n in self._copies)
        per_tier: dict[str, FeatureStats] = {}
        for n in (n for n in nodes if n in self._stats):
            per_tier.setdefault(self.ws.population.node_tier(n), FeatureStats()).merge(
                self._stats[n])
        if nodes:
            # the copies' live tensors: averaging reads them into new ones
            states = {n: self._copies[n][0].state_dict() for n in nodes}
            merged = self.model.state_dict()
            groups = {None: nodes} | {
                t: [n for n in nodes if self.ws.population.node_tier(n) == t]
                for t in self.kit.tiers}
            for tier, members in groups.items():
                if members:
                    keys = [k for k in merged if _group(k) == tier]
                    merged.update(weighted_average([({k: states[n][k] for k in keys},
                                                     weights[n]) for n in members]))
            self.model.load_state_dict(merged)
        self.discard_round()
        return {tier: stats.summary() for tier, stats in per_tier.items()}

    def discard_round(self) -> None:
        """Drop the round's per-node copies (a round that is being repeated)."""
        self._copies.clear()
        self._steps.clear()
        self._stats.clear()
        self._exchanges = 0

    def arm_crash(self, rnd: int, exchange: int | None) -> None:
        """An injected fault: die at the ``exchange``-th exchange of round ``rnd``."""
        self._crash = None if exchange is None else (rnd, exchange)

    @torch.no_grad()
    def infer(self, tier: str, z: np.ndarray, device_ids: np.ndarray,
              samples: np.ndarray) -> np.ndarray:
        """Predicted classes for inference features (in batches of ``INFER_BATCH``);
        the features are logged."""
        self.log.add("inference", -1, tier, device_ids, samples, z)
        self.model.eval()
        return torch.cat([self.model(part, tier).argmax(dim=1)
                          for part in torch.from_numpy(z).split(INFER_BATCH)]).numpy()

    def load(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)

    def state(self) -> dict[str, torch.Tensor]:
        return state_of(self.model)

    def drain(self) -> dict[str, TierObservations]:
        """Features received since the last drain (the run keeps them on disk)."""
        return self.log.drain()
