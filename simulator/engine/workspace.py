"""What every process of a run shares: read-only data and a model factory.

The driver builds one :class:`Workspace` (arrays, device specs, the resolved scenario)
and puts it into Ray's object store once; device actors and the cloud read it
zero-copy. :class:`ModelKit` builds the tier edges, defenses and the cloud model from
the scenario in whichever process needs them.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import nn

from simulator.fleet import RungCost
from simulator.population import Population
from simulator.scenario import Optimizer, Scenario, plugin_params
from simulator.seeding import derive_seed
from strategies.defenses import DEFENSES, DefendedEdge, Defense
from strategies.models import BACKBONES, CloudModel, EdgeCost, build_cloud, build_edge, \
    debias_batchnorm, edge_cost

__all__ = ["INFER_BATCH", "EncoderChoice", "ModelKit", "Workspace", "long_lived",
           "make_optimizer",
           "peak_activation_bytes", "refill", "state_of", "state_tensors",
           "weighted_edge_loss"]


# Images per model call at inference, edge and cloud alike. Serving the fleet_10k rungs
# (one thread, edge + cloud), 128 was within 10% of the best batch on every rung and
# 1,024 was 30-50% slower than 128: the activations of a large batch leave the caches.
INFER_BATCH = 128


@dataclass(frozen=True)
class EncoderChoice:
    """An encoder registry name and its parameters (what defenses may rewrite)."""

    name: str
    params: dict[str, Any]


@dataclass(frozen=True)
class Workspace:
    """Read-only inputs of a run, shared by every actor.

    ``private_x`` holds the device-private pool in [0, 1] (N, C, H, W) float32;
    ``private_index`` the source-dataset index of each row (for records); ``aux_*`` is
    the auxiliary split (the attacker's), ``eval_*`` the held-out evaluation split.
    """

    scenario: Scenario
    num_classes: int
    normalization: tuple[tuple[float, ...], tuple[float, ...]]
    private_x: np.ndarray
    private_y: np.ndarray
    private_index: np.ndarray
    provider_x: np.ndarray
    provider_y: np.ndarray
    population: Population
    aux_x: np.ndarray
    aux_y: np.ndarray
    eval_x: np.ndarray
    eval_y: np.ndarray

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.private_x.shape[1:])  # type: ignore[return-value]

    def batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Private samples as tensors (fancy indexing copies out of shared memory)."""
        return torch.from_numpy(self.private_x[indices]), \
            torch.from_numpy(self.private_y[indices])


class ModelKit:
    """Builds a scenario's models; one per process, cheap to keep."""

    def __init__(self, workspace: Workspace) -> None:
        self.ws = workspace
        sc = workspace.scenario
        self.tiers = {t.name: t for t in sc.tiers}
        self.backbone = BACKBONES.create(sc.model.backbone.name,
                                         plugin_params(sc.model.backbone),
                                         image_shape=workspace.image_shape,
                                         num_classes=workspace.num_classes)
        self.defenses: dict[str, Defense] = {
            name: DEFENSES.create(t.defense.name, plugin_params(t.defense))
            for name, t in self.tiers.items()}
        self._pools: dict[str, list[tuple[DefendedEdge, list[torch.Tensor]]]] = {}
        self._pool_keys: dict[str, list[str]] = {}

    def edge(self, tier: str) -> DefendedEdge:
        """A freshly built (randomly initialised) defended edge of ``tier``."""
        spec = self.tiers[tier].encoder
        return build_edge(self.backbone, EncoderChoice(spec.name, plugin_params(spec)),
                          self.defenses[tier], self.ws.normalization)

    def edge_copies(self, tier: str, state: dict[str, torch.Tensor],
                    n: int) -> list[DefendedEdge]:
        """``n`` edges of ``tier`` holding ``state``, in training mode, without grads.

        The modules are this kit's, reused by every later call: a cohort's devices own
        them until its next call. Building or deep-copying an edge costs 10-20 ms, which
        at hundreds of devices per cohort outweighed their training; copying a state
        into a kept module costs microseconds.
        """
        pool = self._pools.setdefault(tier, [])
        while len(pool) < n:
            edge = self.edge(tier)
            pool.append((edge, state_tensors(edge)))
        keys = self._pool_keys.setdefault(tier, list(pool[0][0].state_dict()))
        if list(state) != keys:
            raise ValueError(f"edge state of tier {tier!r} does not match its "
                             f"architecture: keys {list(state)[:3]}... vs {keys[:3]}...")
        for edge, tensors in pool[:n]:
            refill(tensors, state.values())
            edge.train().zero_grad(set_to_none=True)
        return [edge for edge, _ in pool[:n]]

    @cached_property
    def costs(self) -> dict[str, EdgeCost]:
        return {t: edge_cost(self.edge(t), self.ws.image_shape) for t in self.tiers}

    def rung_costs(self) -> dict[str, RungCost]:
        """Each tier's cost as a rung of the ``assignment`` ladder: the edge cost with
        its measured peak activation memory (what ``memory_mb`` must hold)."""
        return {t: RungCost.of(self.costs[t], peak_activation_bytes(
            self.edge(t), self.ws.image_shape)) for t in self.tiers}

    def deployed(self, tier: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A trained edge state made ready to ship (BatchNorm statistics de-biased)."""
        edge = self.edge(tier)
        edge.load_state_dict(state)
        debias_batchnorm(edge)
        return state_of(edge)

    def deployed_cloud(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A trained cloud state made ready to serve (BatchNorm statistics de-biased)."""
        cloud = self.cloud()
        cloud.load_state_dict(state)
        debias_batchnorm(cloud)
        return state_of(cloud)

    def cloud(self) -> CloudModel:
        tiers = {t: (self.costs[t].feature_shape, self.defenses[t].adapter())
                 for t in self.tiers}
        return build_cloud(self.backbone, tiers)

    def initial_states(self) -> tuple[dict[str, dict[str, torch.Tensor]], dict]:
        """Seeded initial weights of every tier edge and of the cloud.

        Built once by the driver under a derived seed without touching the global RNG,
        so every process starts from the same weights.
        """
        seed = self.ws.scenario.seed
        edges = {}
        for tier in self.tiers:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(seed, "init-edge", tier))
                edges[tier] = state_of(self.edge(tier))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed(seed, "init-cloud"))
            cloud = state_of(self.cloud())
        return edges, cloud


def peak_activation_bytes(module: nn.Module, image_shape: tuple[int, ...]) -> int:
    """Largest float32 input + output of any leaf layer on one sample, in eval mode.

    What a device holds at once when it runs the layers one after another (weights
    aside); a lower bound for branching models, never below the transmitted feature.
    """
    peak = [0]

    def hook(_m: nn.Module, args: tuple, out: Any) -> None:
        # views and in-place outputs share their input's memory: count storage once
        tensors = {t.untyped_storage().data_ptr(): t.numel() * t.element_size()
                   for t in (*args, out) if isinstance(t, torch.Tensor)}
        peak[0] = max(peak[0], sum(tensors.values()))

    leaves = [m for m in module.modules() if not list(m.children())]
    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = module.training
    try:
        module.eval()
        with torch.no_grad():
            out = module(torch.zeros((1, *image_shape)))
    finally:
        module.train(was_training)
        for h in handles:
            h.remove()
    return max(peak[0], out.numel() * out.element_size())


def state_tensors(module: nn.Module) -> list[torch.Tensor]:
    """The module's own parameter and buffer tensors, in state-dict order (a kept
    module's, to :func:`refill`)."""
    return list(module.state_dict(keep_vars=True).values())


@torch.no_grad()
def refill(tensors: list[torch.Tensor], values: Any) -> None:
    """Copy ``values`` (state-dict order) into a kept module's ``tensors`` in place:
    microseconds, where deep-copying or rebuilding a module costs milliseconds."""
    for target, value in zip(tensors, values, strict=True):
        target.copy_(value)


def state_of(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of a module's state dict."""
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def make_optimizer(params: Any, cfg: Optimizer) -> torch.optim.Optimizer:
    """The scenario's optimiser over ``params``, as torch's fused kernel: one pass over
    each tensor instead of one per operation (the cloud's Adam step took 4.4 ms on
    2.1 M parameters, fused 1.8 ms; a device's cohort takes one step per 4 images)."""
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, fused=True)
    cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
    return cls(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay,
               fused=True)


def weighted_edge_loss(defense: Defense, x: torch.Tensor, z: torch.Tensor,
                       edge: nn.Module, weight: float) -> torch.Tensor | None:
    """The defense's edge loss times the round's warm-up ``weight``; None without a
    term, and not computed at all at weight 0 (stateful terms stay untouched)."""
    if weight <= 0:
        return None
    extra = defense.edge_loss(x, z, edge)
    return None if extra is None else weight * extra


@contextmanager
def long_lived() -> Iterator[None]:
    """Keep every object alive now (workspace, models, device records) out of the
    cyclic garbage collector's scans until the block ends.

    They live for the whole run, and each full collection scanned them all: 0.22 s,
    3.4% of training at 1,000 devices on the in-process engine. Reference counting
    still frees them; at the end they return to the collector, so a process that runs
    many scenarios (a sweep's worker) still frees their cycles.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()
