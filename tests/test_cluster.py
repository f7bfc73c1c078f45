"""The same scenario on an existing Ray cluster (a head node started here)."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

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
    """A Ray head node of this test's own, stopped without touching other Ray instances.

    ``ray stop`` would kill every Ray process on the machine (a user's jobs included);
    ``ray start --block`` keeps the node tied to one process, and SIGTERM to it stops
    exactly that node's processes.
    """
    exe = shutil.which("ray")
    if exe is None:
        pytest.skip("the ray command line is not installed")
    port = _free_port()
    temp = Path(tempfile.mkdtemp(prefix="siftsim-ray-", dir="/tmp"))  # short socket paths
    log = temp / "start.log"
    with log.open("w") as out:
        head = subprocess.Popen([exe, "start", "--head", "--block", f"--port={port}",
                                 "--num-cpus=2", "--include-dashboard=false",
                                 "--disable-usage-stats", f"--temp-dir={temp}"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_start(log, head)
        yield f"127.0.0.1:{port}"
    finally:
        head.terminate()
        try:
            head.wait(timeout=120)
        except subprocess.TimeoutExpired:
            head.kill()
        shutil.rmtree(temp, ignore_errors=True)


def _wait_for_start(log: Path, head: subprocess.Popen, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise RuntimeError(f"ray start exited with {head.returncode}:\n"
                               f"{log.read_text()[-2000:]}")
        if "Ray runtime started" in log.read_text():
            return
        time.sleep(0.5)
    raise TimeoutError(f"ray start did not finish in {timeout} s:\n{log.read_text()[-2000:]}")


@pytest.mark.slow
def test_scenario_runs_on_an_existing_cluster(smoke_raw, tmp_path, ray_head):
    smoke_raw["training"]["rounds"] = 1
    local = run_scenario(validate_scenario(smoke_raw), tmp_path / "local",
                         transport_factory=run_locally)
    smoke_raw["ray"] = {"address": ray_head}
    remote = run_scenario(validate_scenario(smoke_raw), tmp_path / "cluster")
    pd.testing.assert_frame_equal(pd.read_parquet(local / "devices.parquet"),
                                  pd.read_parquet(remote / "devices.parquet"))
