"""The edges of a cohort's devices for one round: one module each, or one stacked module.

Every device trains its own copy of the tier's edge from the round's state with its own
optimiser. :class:`DeviceEdges` does that literally, a module and an optimiser per
device, and works for every defense. :class:`StackedEdges` holds the same per-device
weights stacked along a leading device axis and runs all devices of one batch size in a
single call, so a cohort of devices with 4-image batches trains at the speed of one
larger batch: in the grouped layout (:mod:`simulator.engine.grouped`, devices laid
along channels) where every layer of the edge has a grouped rule, else under
``torch.func.vmap`` over ``functional_call`` (1.2-1.5x slower). The optimisers (SGD,
Adam, AdamW) are element-wise, so one optimiser over the stacked weights is each
device's own. It serves defenses without a device-side loss term (the term's code
takes one device's module), and edges that draw no global randomness in training
(vmap refuses them: :func:`cohort_edges` then falls back to :class:`DeviceEdges`), where
at least ``MIN_STACK`` devices share a batch size on average. Both give the same
arithmetic up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from weakref import WeakKeyDictionary

import torch
from torch.func import functional_call, vmap

from simulator.engine.grouped import GroupedEdge, supports
from simulator.engine.workspace import ModelKit, make_optimizer, state_of, weighted_edge_loss
from simulator.scenario import Optimizer
from simulator.seeding import seeded
from strategies.defenses import Defense

__all__ = ["MIN_STACK", "DeviceEdges", "StackedEdges", "cohort_edges", "stackable"]

Seed = Callable[[int, str, int], int]   # (device, "edge" | "edge-loss", step) -> seed


def stackable(defense: Defense) -> bool:
    """Whether a tier's devices may train stacked: the defense adds no edge loss."""
    return not defense.adds_edge_loss()


class DeviceEdges:
    """One module and one optimiser per device (any defense, any edge)."""

    def __init__(self, kit: ModelKit, tier: str, state: dict[str, torch.Tensor],
                 devices: Sequence[int], optimizer: Optimizer, seed: Seed) -> None:
        self.defense = kit.defenses[tier]
        self.seed = seed
        self.edges = dict(zip(devices, kit.edge_copies(tier, state, len(devices)),
                              strict=True))
        self.opts = {d: make_optimizer(e.parameters(), optimizer)
                     for d, e in self.edges.items()}

    def forward(self, step: int, xs: dict[int, torch.Tensor],
                active: Sequence[int]) -> dict[int, torch.Tensor]:
        """Each active device's edge output on its batch (with its graph)."""
        out = {}
        for d in active:
            with seeded(self.seed(d, "edge", step)):
                out[d] = self.edges[d](xs[d])
        return out

    def backward(self, step: int, xs: dict[int, torch.Tensor], zs: dict[int, torch.Tensor],
                 grads: dict[int, torch.Tensor], weight: float) -> None:
        """Each device back-propagates the cloud's gradient plus the defense's term
        (scaled by the warm-up ``weight``) and steps its optimiser."""
        for d, z in zs.items():
            with seeded(self.seed(d, "edge-loss", step)):
                device_step(self.defense, self.edges[d], self.opts[d], xs[d], z, grads[d],
                            weight)

    def states(self, devices: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        return [state_of(self.edges[d]) for d in devices]


def device_step(defense, edge, opt, x, z, grad_z, weight: float = 1.0) -> None:
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


class StackedEdges:
    """The devices' weights stacked per batch size; one vmapped call per group.

    ``sizes`` gives each device's batch size (equal in every step); devices of equal
    size form a group with weights ``(n, *shape)`` and one optimiser.
    """

    def __init__(self, kit: ModelKit, tier: str, state: dict[str, torch.Tensor],
                 sizes: dict[int, int], optimizer: Optimizer) -> None:
        self.skeleton = kit.edge_copies(tier, state, 1)[0].train()
        by_size: dict[int, list[int]] = {}
        for d, n in sizes.items():
            by_size.setdefault(n, []).append(d)
        self.groups = []
        for members in by_size.values():
            weights, buffers = _stack(self.skeleton, state, len(members))
            weights = {k: v.requires_grad_() for k, v in weights.items()}
            self.groups.append((members, weights, buffers,
                                make_optimizer(list(weights.values()), optimizer)))
        self.keys = list(state)
        self.layout = "grouped" if supports(self.skeleton) else "vmap"
        if self.layout == "grouped":
            grouped = GroupedEdge(self.skeleton)
            self._call = lambda weights, buffers, x: grouped(weights | buffers, x)
        else:
            self._call = vmap(self._one, randomness="error")

    def _one(self, weights, buffers, x):
        return functional_call(self.skeleton, (weights, buffers), (x,))

    def forward(self, step: int, xs: dict[int, torch.Tensor],
                active: Sequence[int]) -> dict[int, torch.Tensor]:
        """Every device's edge output (crashed devices too: their work is dropped)."""
        out = {}
        for members, weights, buffers, _ in self.groups:
            z = self._call(weights, buffers, torch.stack([xs[d] for d in members]))
            out.update(zip(members, z.unbind(0), strict=True))
        return {d: out[d] for d in active}

    def backward(self, step: int, xs: dict[int, torch.Tensor], zs: dict[int, torch.Tensor],
                 grads: dict[int, torch.Tensor], weight: float) -> None:
        """One backward pass for the cohort, one optimiser step per group."""
        for *_, opt in self.groups:
            opt.zero_grad(set_to_none=True)
        torch.autograd.backward(list(zs.values()), [grads[d] for d in zs])
        for *_, opt in self.groups:
            opt.step()

    def states(self, devices: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """Each device's state (views into the stacks), keys in the edge's order."""
        rows = {}
        for members, weights, buffers, _ in self.groups:
            merged = weights | buffers
            for i, d in enumerate(members):
                rows[d] = {k: merged[k][i].detach() for k in self.keys}
        return [rows[d] for d in devices]


# Devices per batch size (mean) from which stacking pays, per layout. Grouped, at 2 x 4
# images: 0.72x / 0.97x / 1.02x the time of a module each on funnel_2 / funnel_12 / the
# plain cut (0.48-0.92x at 4 devices); under vmap it pays from 4.
MIN_STACK = {"grouped": 2, "vmap": 4}


def cohort_edges(kit: ModelKit, tier: str, state: dict[str, torch.Tensor],
                 sizes: dict[int, int], optimizer: Optimizer,
                 seed: Seed) -> DeviceEdges | StackedEdges:
    """The cohort's edges (``sizes``: each device's batch size): stacked where the
    defense and the edge allow it and at least ``MIN_STACK`` devices share a batch size
    on average (fewer: one module each is as fast), else one module per device."""
    if (stackable(kit.defenses[tier]) and (layout := _layout(kit, tier, state))
            and len(sizes) >= MIN_STACK[layout] * len(set(sizes.values()))):
        return StackedEdges(kit, tier, state, sizes, optimizer)
    return DeviceEdges(kit, tier, state, list(sizes), optimizer, seed)


_LAYOUTS: WeakKeyDictionary[ModelKit, dict[str, str | None]] = WeakKeyDictionary()


def _layout(kit: ModelKit, tier: str, state: dict[str, torch.Tensor]) -> str | None:
    """How the tier's edge stacks, once per kit and tier: ``"grouped"`` (every layer
    has a grouped rule, all deterministic), ``"vmap"`` (a trial vmapped call on zero
    images passes: the edge draws no global randomness, which vmap refuses in
    ``randomness="error"``), or None (it does: one module per device)."""
    known = _LAYOUTS.setdefault(kit, {})
    if tier not in known:
        known[tier] = _trial(kit, tier, state)
    return known[tier]


def _trial(kit: ModelKit, tier: str, state: dict[str, torch.Tensor]) -> str | None:
    skeleton = kit.edge_copies(tier, state, 1)[0].train()
    if supports(skeleton):
        return "grouped"
    x = torch.zeros((1, 2, *kit.ws.image_shape))   # two images: BatchNorm needs 2
    try:
        with torch.no_grad():
            vmap(lambda w, b, x: functional_call(skeleton, (w, b), (x,)),
                 randomness="error")(*_stack(skeleton, state, 1), x)
    except RuntimeError as err:
        if "random" not in str(err):
            raise
        return None
    return "vmap"


def _stack(module: torch.nn.Module, state: dict[str, torch.Tensor],
           n: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """``n`` copies of ``state`` along a new leading axis, split into the module's
    parameters and its buffers (what ``functional_call`` takes)."""
    params = {k for k, _ in module.named_parameters()}
    stacked = {k: v.detach().unsqueeze(0).repeat(n, *([1] * v.dim()))
               for k, v in state.items()}
    return ({k: v for k, v in stacked.items() if k in params},
            {k: v for k, v in stacked.items() if k not in params})
