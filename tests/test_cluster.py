"""The same scenario on an existing Ray cluster (a head node started here)."""

from __future__ import annotations

import shutil
import socket
import subprocess

import pandas as pd
import pytest

from simulator.engine.local import run_locally
from simulator.loading import validate_scenario
from simulator.run import run_scenario


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def ray_head():
    exe = shutil.which("ray")
    if exe is None:
        pytest.skip("the ray command line is not installed")
    port = _free_port()
    subprocess.run([exe, "start", "--head", f"--port={port}", "--num-cpus=2",
                    "--include-dashboard=false", "--disable-usage-stats"],
                   check=True, capture_output=True, timeout=180)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([exe, "stop", "--force"], capture_output=True, timeout=180)


@pytest.mark.slow
def test_scenario_runs_on_an_existing_cluster(smoke_raw, tmp_path, ray_head):
    smoke_raw["training"]["rounds"] = 1
    local = run_scenario(validate_scenario(smoke_raw), tmp_path / "local",
                         transport_factory=run_locally)
    smoke_raw["ray"] = {"address": ray_head}
    remote = run_scenario(validate_scenario(smoke_raw), tmp_path / "cluster")
    pd.testing.assert_frame_equal(pd.read_parquet(local / "devices.parquet"),
                                  pd.read_parquet(remote / "devices.parquet"))
