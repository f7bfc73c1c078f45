"""Population expansion: a pure function of the scenario, small specs, same-tier nodes."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SMOKE
from simulator.fleet import RungCost
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


# --- devices' own hardware and the encoder ladder --------------------------------

def test_scalar_profiles_give_every_device_its_tiers_numbers(smoke_raw):
    from simulator.fleet import DEFAULTS, Hardware
    smoke_raw["tiers"][0]["profile"] = {"compute_gflops": 0.5, "uplink_mbps": 2,
                                        "memory_mb": 4, "availability": 0.9}
    pop = expand_population(validate_scenario(smoke_raw), _labels())
    assert {d.profile for d in pop.devices[:4]} == {Hardware(0.5, 2.0, 4.0, 0.9)}
    assert {d.profile for d in pop.devices[4:]} == {Hardware(**DEFAULTS)}
    assert {d.assignment for d in pop.devices} == {"tier set by the scenario"}


FLEET = {"profile": {"compute_gflops": {"dist": "lognormal", "median": 5, "spread": 3},
                     "availability": {"dist": "uniform", "low": 0.5, "high": 1.0}}}


def test_drawn_profiles_same_seed_same_fleet(smoke_raw):
    smoke_raw["fleet"] = FLEET
    smoke_raw["tiers"][1]["profile"] = {"availability": 0.95,
                                        "memory_mb": {"dist": "categorical",
                                                      "values": [64, 256]}}
    a = expand_population(validate_scenario(smoke_raw), _labels())
    b = expand_population(validate_scenario(smoke_raw), _labels())
    assert [d.profile for d in a.devices] == [d.profile for d in b.devices]
    assert len({d.profile.compute_gflops for d in a.devices}) == 7
    assert all(0.5 <= d.profile.availability <= 1 for d in a.devices[:4])
    assert {d.profile.availability for d in a.devices[4:]} == {0.95}  # tier overrides
    assert {d.profile.memory_mb for d in a.devices[4:]} <= {64.0, 256.0}
    smoke_raw["seed"] = 4
    c = expand_population(validate_scenario(smoke_raw), _labels())
    assert [d.profile for d in a.devices] != [d.profile for d in c.devices]


def test_fleet_trace_under_tier_profiles(smoke_raw, tmp_path):
    import pandas as pd
    path = tmp_path / "phones.csv"
    pd.DataFrame({"compute_gflops": [1.0, 50.0], "memory_mb": [32.0, 1024.0],
                  "share": [3, 1], "device_type": ["old", "new"]}
                 ).to_csv(path, index=False)
    smoke_raw["fleet"] = {"trace": str(path), "profile": {"uplink_mbps": 7}}
    smoke_raw["tiers"][1]["profile"] = {"memory_mb": 8}
    pop = expand_population(validate_scenario(smoke_raw), _labels())
    for d in pop.devices:
        assert d.profile.compute_gflops in (1.0, 50.0) and d.profile.uplink_mbps == 7
        assert d.profile.origin.startswith(f"trace {path} row")
    assert {d.profile.memory_mb for d in pop.devices[4:]} == {8.0}


def _ladder_raw(smoke_raw: dict, unfit: str = "drop") -> dict:
    for t in smoke_raw["tiers"]:
        t.pop("count")
    smoke_raw["devices"] = 12
    smoke_raw["fleet"] = {"profile": {"compute_gflops": {"dist": "categorical",
                                                         "values": [0.1, 1, 10]},
                                      "uplink_mbps": 100}}
    smoke_raw["assignment"] = {"deadline_ms": 5, "memory": False, "unfit": unfit}
    return smoke_raw


# per sample at 5 ms: small (1 MMAC) needs 0.4 GFLOP/s, large (10 MMAC) 4 GFLOP/s
LADDER_COSTS = {"small": RungCost(1000, 1_000_000, 100, 100),
                "large": RungCost(1000, 10_000_000, 100, 100)}
EXPECTED_RUNG = {0.1: None, 1.0: "small", 10.0: "large"}


def test_ladder_assigns_tiers_from_budgets(smoke_raw):
    pop = expand_population(validate_scenario(_ladder_raw(smoke_raw)), _labels(),
                            LADDER_COSTS)
    assert len(pop.devices) == 12
    for d in pop.devices:
        assert d.tier == EXPECTED_RUNG[d.profile.compute_gflops], d.assignment
        assert d.assignment.startswith("unable" if d.tier is None else
                                       f"{d.tier!r} fits deadline 5 ms")
        assert (d.node is None) == (d.tier is None)
    assert {d.tier for d in pop.devices} == {"small", "large", None}
    unable = {d.device_id for d in pop.unable()}
    assert not unable & {i for ids in pop.nodes for i in ids}
    assert sum(len(v) for v in pop.by_tier().values()) == 12 - len(unable)
    for node, ids in enumerate(pop.nodes):
        assert {pop.devices[i].tier for i in ids} == {pop.node_tier(node)}
    again = expand_population(validate_scenario(smoke_raw), _labels(), LADDER_COSTS)
    assert [(d.tier, d.profile) for d in again.devices] == \
        [(d.tier, d.profile) for d in pop.devices]


def test_ladder_unfit_smallest_and_missing_costs(smoke_raw):
    sc = validate_scenario(_ladder_raw(smoke_raw, unfit="smallest"))
    pop = expand_population(sc, _labels(), LADDER_COSTS)
    assert not pop.unable() and any("unfit: smallest" in d.assignment
                                    for d in pop.devices)
    with pytest.raises(ValueError, match=r"rung_costs for \['large'\]"):
        expand_population(sc, _labels(), {"small": LADDER_COSTS["small"]})
