"""Heterogeneity is data: a scenario expands into small, immutable device specs.

:func:`expand_population` is a pure function of the scenario, the private labels (and,
with ``assignment``, the rungs' costs): the same seed gives the same fleet. A thousand
devices are a thousand :class:`DeviceSpec` rows (ids, tier, sample indices, seed, own
hardware) and a node map, never a thousand models.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from simulator.data.partition import partition
from simulator.fleet import DeviceTrace, Fit, Hardware, RungCost, assign_rungs, \
    draw_hardware, read_trace
from simulator.scenario import Scenario
from simulator.seeding import derive_seed, rng

__all__ = ["DeviceSpec", "Population", "expand_population", "fleet_hardware"]


@dataclass(frozen=True)
class DeviceSpec:
    """One simulated device.

    Attributes
    ----------
    device_id
        Global id, dense from 0 (tiers in scenario order, unless ``assignment`` decides
        the tiers: then fleet order).
    tier
        Tier name; ``None`` for a device unable to serve (fits no rung).
    node
        Index of the Flower node (same-tier cohort) that carries the device; ``None``
        when it cannot serve.
    train_idx, test_idx
        Indices into the private pool: local training data and private test samples.
    seed
        The device's derived seed (batches, feature noise, its hardware draws).
    profile
        The device's own hardware (plain numbers, drawn or read from a trace).
    assignment
        Why the device has its tier (the ladder's reason, or set by the scenario).
    """

    device_id: int
    tier: str | None
    node: int | None
    train_idx: np.ndarray
    test_idx: np.ndarray
    seed: int
    profile: Hardware
    assignment: str = "tier set by the scenario"


@dataclass(frozen=True)
class Population:
    devices: tuple[DeviceSpec, ...]
    nodes: tuple[tuple[int, ...], ...]  # node index -> device ids (one tier per node)

    def node_tier(self, node: int) -> str:
        return self.devices[self.nodes[node][0]].tier  # type: ignore[return-value]

    def by_tier(self) -> dict[str, list[DeviceSpec]]:
        """Serving devices per tier (devices unable to serve are left out)."""
        out: dict[str, list[DeviceSpec]] = {}
        for d in self.devices:
            if d.tier is not None:
                out.setdefault(d.tier, []).append(d)
        return out

    def unable(self) -> list[DeviceSpec]:
        """Devices that fit no rung (``assignment`` with ``unfit: drop``)."""
        return [d for d in self.devices if d.tier is None]


def expand_population(scenario: Scenario, private_labels: np.ndarray,
                      rung_costs: Mapping[str, object] | None = None) -> Population:
    """Expand tiers into device specs and same-tier Flower nodes.

    Parameters
    ----------
    scenario
        A validated scenario.
    private_labels
        Labels of the device-private pool (what is partitioned).
    rung_costs
        Tier name -> ``EdgeCost`` or :class:`simulator.fleet.RungCost`; needed only
        when the scenario has ``assignment`` (budgets pick each device's tier).
    """
    # Data first: too many devices for the samples fails here, before any per-device
    # work (a fleet of a billion devices is refused in milliseconds).
    p = scenario.partition
    parts = partition(private_labels, scenario.num_devices, p.scheme, alpha=p.alpha,
                      shards_per_device=p.shards_per_device,
                      samples_per_device=p.samples_per_device, min_samples=p.min_samples,
                      seed=derive_seed(scenario.seed, "partition"))
    hardware = fleet_hardware(scenario)
    fits = _tiers(scenario, hardware, rung_costs)
    node_of, nodes = _nodes(scenario, [f.rung for f in fits])
    devices = []
    for device_id, (hw, fit) in enumerate(zip(hardware, fits, strict=True)):
        train_idx, test_idx = _split_device(parts[device_id], scenario, device_id)
        seed = derive_seed(scenario.seed, "device", device_id)
        devices.append(DeviceSpec(device_id, fit.rung, node_of.get(device_id),
                                  train_idx, test_idx, seed, hw, fit.reason))
    return Population(tuple(devices), nodes)


def fleet_hardware(scenario: Scenario) -> list[Hardware]:
    """Every device's own hardware, in device order, from its derived seed.

    Layers, general to specific: built-in defaults, ``fleet.trace``, ``fleet.profile``,
    the tier's ``trace``, the tier's ``profile`` (tiers are not layers under
    ``assignment``: their devices are not known before the hardware is).
    """
    tiers = [None] * scenario.num_devices if scenario.assignment is not None else \
        [t for t in scenario.tiers for _ in range(scenario.tier_counts()[t.name])]
    seeds = [derive_seed(scenario.seed, "device", i) for i in range(len(tiers))]
    fleet = scenario.fleet
    layers: list[list[dict]] = [[] for _ in tiers]
    origins = ["profile"] * len(tiers)
    _trace_layer(fleet.trace, list(range(len(tiers))), seeds,
                 derive_seed(scenario.seed, "trace", "fleet"), layers, origins)
    for lay in layers:
        lay.append(fleet.profile.layer())
    for tier in scenario.tiers:
        mine = [i for i, t in enumerate(tiers) if t is tier]
        _trace_layer(tier.trace, mine, seeds,
                     derive_seed(scenario.seed, "trace", tier.name), layers, origins)
        for i in mine:
            layers[i].append(tier.profile.layer())
    return [draw_hardware(lay, s, o) for lay, s, o in zip(layers, seeds, origins)]


def _trace_layer(path: str | None, devices: list[int], seeds: list[int], seed: int,
                 layers: list[list[dict]], origins: list[str]) -> None:
    """Add each device's trace row (if ``path``) to its layers."""
    if path is None or not devices:
        return
    trace: DeviceTrace = read_trace(path)
    rows = trace.rows_for([seeds[i] for i in devices], seed)
    for i, row in zip(devices, rows):
        layers[i].append(trace.row(int(row)))
        origins[i] = trace.origin(int(row))


def _tiers(scenario: Scenario, hardware: list[Hardware],
           rung_costs: Mapping[str, object] | None) -> list[Fit]:
    """Each device's tier and why: set by the scenario, or by the ladder rule."""
    rule = scenario.assignment
    if rule is None:
        return [Fit(t.name, "tier set by the scenario")
                for t in scenario.tiers for _ in range(scenario.tier_counts()[t.name])]
    names = [t.name for t in scenario.tiers]
    missing = [n for n in names if n not in (rung_costs or {})]
    if missing:
        raise ValueError(f"the scenario's `assignment` needs each rung's cost: pass "
                         f"rung_costs for {missing} (e.g. the ModelKit's edge costs)")
    rungs = {n: _rung(rung_costs[n]) for n in names}  # type: ignore[index]
    return assign_rungs(hardware, rungs, deadline_ms=rule.deadline_ms,
                        memory=rule.memory, unfit=rule.unfit)


def _rung(cost: object) -> RungCost:
    return cost if isinstance(cost, RungCost) else RungCost.of(cost)


def _nodes(scenario: Scenario, tiers: list[str | None]
           ) -> tuple[dict[int, int], tuple[tuple[int, ...], ...]]:
    """Same-tier cohorts of ``devices_per_node``, tiers in scenario order."""
    per_node = scenario.flower.devices_per_node
    nodes: list[tuple[int, ...]] = []
    for tier in scenario.tiers:
        ids = [i for i, t in enumerate(tiers) if t == tier.name]
        nodes.extend(tuple(ids[k:k + per_node]) for k in range(0, len(ids), per_node))
    return {d: n for n, ids in enumerate(nodes) for d in ids}, tuple(nodes)


def _split_device(indices: np.ndarray, scenario: Scenario,
                  device_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold back a device's private test samples; at least one sample on each side."""
    shuffled = rng(scenario.seed, "device-split", device_id).permutation(np.sort(indices))
    n_test = min(len(shuffled) - 1,
                 max(1, round(scenario.partition.test_fraction * len(shuffled))))
    test = shuffled[:n_test]
    if scenario.inference.samples_per_device is not None:
        test = test[:scenario.inference.samples_per_device]
    return np.sort(shuffled[n_test:]), np.sort(test)
