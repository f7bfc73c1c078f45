"""Shared fixtures: small scenarios that run in seconds, and the shared data folder."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

SMOKE = {
    "name": "smoke",
    "seed": 3,
    "dataset": {"name": "synthetic", "num_samples": 600, "num_classes": 4, "size": 16},
    "splits": {"auxiliary": 0.1, "evaluation": 0.1},
    "partition": {"scheme": "iid", "min_samples": 8},
    "tiers": [
        {"name": "small", "count": 4, "encoder": {"name": "funnel", "width": 8,
                                                  "channels": 4}},
        {"name": "large", "count": 3, "encoder": {"name": "plain"}},
    ],
    "training": {"rounds": 4, "local_steps": 5, "batch_size": 16,
                 "optimizer": {"name": "adam", "lr": 0.003}},
    "flower": {"devices_per_node": 2},
    "ray": {"num_cpus": 2},
}


@pytest.fixture
def smoke_raw() -> dict:
    """A raw scenario mapping (edit freely: it is a deep copy)."""
    return copy.deepcopy(SMOKE)


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "MNIST").is_dir():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op thread for every test: on 2 shared cores, two OpenMP threads spin-wait
    on each other and tiny ops take milliseconds (measured 2 s -> 42 s of CPU)."""
    import torch
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# CI runs the same hypothesis examples every time (a failure there is reproducible);
# local runs keep exploring new ones.
if os.environ.get("CI"):
    from hypothesis import settings
    settings.register_profile("ci", derandomize=True, deadline=None)
    settings.load_profile("ci")


@pytest.fixture
def stop_at():
    """``stop_at(phase, at)``: a progress callback that interrupts the run (as SIGINT
    would) when ``phase`` reports step ``at``."""
    from simulator.interrupt import RunInterrupted

    def make(phase: str, at: int):
        def progress(step: str, done: int, total: int, note: str = "") -> None:
            if step == phase and done == at:
                raise RunInterrupted(f"test stop at {phase} {done}")
        return progress
    return make
