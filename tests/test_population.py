"""Population expansion: a pure function of the scenario, small specs, same-tier nodes."""

from __future__ import annotations

import copy

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SMOKE
from simulator.loading import validate_scenario
from simulator.population import expand_population


def _labels(n: int = 600, k: int = 4) -> np.ndarray:
    return np.random.default_rng(0).integers(0, k, n)


def test_devices_tiers_and_nodes(smoke_raw):
    pop = expand_population(validate_scenario(smoke_raw), _labels())
    assert [d.device_id for d in pop.devices] == list(range(7))
    assert [d.tier for d in pop.devices] == ["small"] * 4 + ["large"] * 3
    # devices_per_node 2: small -> 2 nodes, large -> 2 nodes; never mixing tiers
    assert pop.nodes == ((0, 1), (2, 3), (4, 5), (6,))
    for node, ids in enumerate(pop.nodes):
        assert {pop.devices[i].tier for i in ids} == {pop.node_tier(node)}
        assert all(pop.devices[i].node == node for i in ids)


def test_device_data_is_disjoint_and_split(smoke_raw):
    pop = expand_population(validate_scenario(smoke_raw), _labels())
    seen = np.concatenate([np.concatenate([d.train_idx, d.test_idx]) for d in pop.devices])
    assert len(seen) == len(np.unique(seen))
    for d in pop.devices:
        assert len(d.test_idx) >= 1 and len(d.train_idx) >= 1
        assert not set(d.train_idx) & set(d.test_idx)


def test_same_scenario_gives_same_population(smoke_raw):
    a = expand_population(validate_scenario(smoke_raw), _labels())
    b = expand_population(validate_scenario(smoke_raw), _labels())
    for x, y in zip(a.devices, b.devices, strict=True):
        assert x.seed == y.seed
        np.testing.assert_array_equal(x.train_idx, y.train_idx)
    smoke_raw["seed"] = 4
    c = expand_population(validate_scenario(smoke_raw), _labels())
    assert any(x.seed != z.seed for x, z in zip(a.devices, c.devices, strict=True))


@settings(max_examples=20, deadline=None)
@given(counts=st.lists(st.integers(1, 30), min_size=1, max_size=4),
       per_node=st.integers(1, 12))
def test_nodes_cover_every_device_once(counts, per_node):
    smoke_raw = copy.deepcopy(SMOKE)
    smoke_raw["tiers"] = [{"name": f"t{i}", "count": c} for i, c in enumerate(counts)]
    smoke_raw["flower"] = {"devices_per_node": per_node}
    smoke_raw["partition"] = {"scheme": "iid", "min_samples": 2}
    pop = expand_population(validate_scenario(smoke_raw), _labels(2000))
    flat = [i for ids in pop.nodes for i in ids]
    assert sorted(flat) == list(range(sum(counts)))
    assert all(1 <= len(ids) <= per_node for ids in pop.nodes)
