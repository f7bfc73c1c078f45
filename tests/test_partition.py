"""Property tests of the device partitions (IID, Dirichlet, shards)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simulator.data import partition

SCHEMES = ("iid", "dirichlet", "shards")


@st.composite
def cases(draw: st.DrawFn) -> dict:
    n = draw(st.integers(1, 300))
    k = draw(st.integers(1, 8))
    labels = np.asarray(draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n)))
    min_samples = draw(st.integers(1, min(3, n)))  # a case the data can satisfy
    num_devices = draw(st.integers(1, max(1, min(25, n // min_samples))))
    return {
        "labels": labels,
        "num_devices": num_devices,
        "scheme": draw(st.sampled_from(SCHEMES)),
        "alpha": draw(st.floats(0.05, 10.0)),
        "shards_per_device": draw(st.integers(1, 3)),
        "samples_per_device": draw(st.none() | st.integers(min_samples, 40)),
        "min_samples": min_samples,
        "seed": draw(st.integers(0, 2**32 - 1)),
    }


def _partition_or_refused(case: dict) -> list[np.ndarray] | None:
    """The partition, or None when shards are refused for too little data."""
    try:
        return partition(**case)
    except ValueError as err:
        # Only shards may refuse a case that passes the generic size check.
        assert case["scheme"] == "shards" and "fewer devices" in str(err)
        return None


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases())
def test_partition_properties(case: dict) -> None:
    parts = _partition_or_refused(case)
    if parts is None:
        return
    labels, n = case["labels"], len(case["labels"])
    assert len(parts) == case["num_devices"]
    everything = np.concatenate(parts)
    assert everything.dtype == np.int64
    assert len(np.unique(everything)) == len(everything)  # disjoint
    assert everything.size == 0 or (everything.min() >= 0 and everything.max() < n)
    sizes = np.array([len(p) for p in parts])
    assert sizes.min() >= case["min_samples"]
    if case["samples_per_device"] is not None:
        assert sizes.max() <= case["samples_per_device"]
    elif case["scheme"] != "shards":
        assert len(everything) == n  # no cap: everything is used
    if case["scheme"] == "iid" and case["samples_per_device"] is None:
        assert sizes.max() - sizes.min() <= 1
    if case["scheme"] == "shards":
        most = max(len(np.unique(labels[p])) for p in parts)
        assert most <= case["shards_per_device"]
    again = partition(**case)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))


def _mean_top_label_share(labels: np.ndarray, parts: list[np.ndarray]) -> float:
    return float(np.mean([np.bincount(labels[p]).max() / len(p) for p in parts]))


def test_small_alpha_dirichlet_is_more_skewed_than_iid() -> None:
    labels = np.random.default_rng(0).integers(0, 10, 5000)
    iid = _mean_top_label_share(labels, partition(labels, 50, "iid", seed=0))
    skewed = _mean_top_label_share(
        labels, partition(labels, 50, "dirichlet", alpha=0.1, seed=0))
    mild = _mean_top_label_share(
        labels, partition(labels, 50, "dirichlet", alpha=100.0, seed=0))
    assert iid < 0.25 and mild < 0.3
    assert skewed > iid + 0.3


def test_different_seeds_give_different_partitions() -> None:
    labels = np.arange(1000) % 10
    for scheme in SCHEMES:
        a = partition(labels, 10, scheme, seed=0)
        b = partition(labels, 10, scheme, seed=1)
        assert not all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_thousand_devices_over_sixty_thousand_labels(scheme: str) -> None:
    labels = np.random.default_rng(1).integers(0, 10, 60000)
    parts = partition(labels, 1000, scheme, alpha=0.1, min_samples=5, seed=0)
    sizes = np.array([len(p) for p in parts])
    assert len(parts) == 1000 and sizes.min() >= 5
    assert len(np.unique(np.concatenate(parts))) == sizes.sum() == 60000


def test_dirichlet_meets_min_samples_where_retrying_would_fail() -> None:
    # flwr's DirichletPartitioner gives up here after 10 re-samplings.
    labels = np.arange(6000) % 10
    parts = partition(labels, 500, "dirichlet", alpha=0.01, min_samples=10, seed=0)
    assert min(len(p) for p in parts) >= 10
    assert _mean_top_label_share(labels, parts) > 0.8


@pytest.mark.parametrize("kwargs, words", [
    ({"num_devices": 101}, ["101 devices", "100 samples", "fewer devices",
                            "smaller min_samples"]),
    ({"num_devices": 30, "min_samples": 4}, ["30 devices", "120 needed",
                                             "smaller min_samples"]),
    ({"num_devices": 40, "scheme": "shards", "shards_per_device": 3},
     ["120 shards", "100 samples", "fewer devices"]),
    ({"num_devices": 10, "samples_per_device": 0}, ["samples_per_device"]),
    ({"num_devices": 10, "alpha": 0.0}, ["alpha"]),
    ({"num_devices": 0}, ["num_devices"]),
    ({"num_devices": 3, "scheme": "quantity"}, ["scheme"]),
])
def test_errors_name_the_numbers_and_the_fix(kwargs: dict, words: list[str]) -> None:
    args = {"labels": np.arange(100) % 5, "scheme": "iid", "seed": 0} | kwargs
    with pytest.raises(ValueError) as info:
        partition(**args)
    for word in words:
        assert word in str(info.value)


@pytest.mark.parametrize(("n", "devices"), [(100, 7), (60, 60), (1000, 3), (37, 5)])
def test_iid_follows_flowers_iid_partitioner(n: int, devices: int) -> None:
    datasets = pytest.importorskip("datasets")
    from flwr_datasets.partitioner import IidPartitioner

    from simulator.data.partition import _iid
    perm = np.random.default_rng(3).permutation(n)
    flower = IidPartitioner(num_partitions=devices)
    flower.dataset = datasets.Dataset.from_dict({"idx": perm})
    ours = _iid(n, devices, np.random.default_rng(3))
    assert [p.tolist() for p in ours] == \
        [flower.load_partition(d)["idx"] for d in range(devices)]
