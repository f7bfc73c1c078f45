"""Heterogeneity is data: a scenario expands into small, immutable device specs.

:func:`expand_population` is a pure function of the scenario and the private labels.
A thousand devices are a thousand :class:`DeviceSpec` rows (ids, tier, sample indices,
seed, profile) and a node map, never a thousand models.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.data.partition import partition
from simulator.scenario import DeviceProfile, Scenario
from simulator.seeding import derive_seed, rng

__all__ = ["DeviceSpec", "Population", "expand_population"]


@dataclass(frozen=True)
class DeviceSpec:
    """One simulated device.

    Attributes
    ----------
    device_id
        Global id, dense from 0, tiers in scenario order.
    tier
        Tier name.
    node
        Index of the Flower node (same-tier cohort) that carries the device.
    train_idx, test_idx
        Indices into the private pool: local training data and private test samples.
    seed
        The device's derived seed (batches, feature noise).
    profile
        The tier's hardware profile.
    """

    device_id: int
    tier: str
    node: int
    train_idx: np.ndarray
    test_idx: np.ndarray
    seed: int
    profile: DeviceProfile


@dataclass(frozen=True)
class Population:
    devices: tuple[DeviceSpec, ...]
    nodes: tuple[tuple[int, ...], ...]  # node index -> device ids (one tier per node)

    def node_tier(self, node: int) -> str:
        return self.devices[self.nodes[node][0]].tier

    def by_tier(self) -> dict[str, list[DeviceSpec]]:
        out: dict[str, list[DeviceSpec]] = {}
        for d in self.devices:
            out.setdefault(d.tier, []).append(d)
        return out


def expand_population(scenario: Scenario, private_labels: np.ndarray) -> Population:
    """Expand tiers into device specs and same-tier Flower nodes.

    Parameters
    ----------
    scenario
        A validated scenario.
    private_labels
        Labels of the device-private pool (what is partitioned).
    """
    p = scenario.partition
    counts = scenario.tier_counts()
    parts = partition(private_labels, sum(counts.values()), p.scheme, alpha=p.alpha,
                      shards_per_device=p.shards_per_device,
                      samples_per_device=p.samples_per_device, min_samples=p.min_samples,
                      seed=derive_seed(scenario.seed, "partition"))
    devices: list[DeviceSpec] = []
    nodes: list[tuple[int, ...]] = []
    per_node = scenario.flower.devices_per_node
    for tier in scenario.tiers:
        first = len(devices)
        for device_id in range(first, first + counts[tier.name]):
            train_idx, test_idx = _split_device(parts[device_id], scenario, device_id)
            node = len(nodes) + (device_id - first) // per_node
            devices.append(DeviceSpec(device_id, tier.name, node, train_idx, test_idx,
                                      derive_seed(scenario.seed, "device", device_id),
                                      tier.profile))
        ids = list(range(first, len(devices)))
        nodes.extend(tuple(ids[i:i + per_node]) for i in range(0, len(ids), per_node))
    return Population(tuple(devices), tuple(nodes))


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
