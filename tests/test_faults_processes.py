"""Real processes die: Flower node actors, the cloud actor, adversary workers, and
`siftsim run` itself (SIGKILL, SIGTERM). Slow: each test runs Flower + Ray."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]


def _scenario(tmp: Path, **faults) -> Path:
    from conftest import SMOKE
    raw = copy.deepcopy(SMOKE)
    raw["training"].update(rounds=5, fraction=1.0)
    raw["adversary"] = {"enabled": True,
                        "attacks": [{"name": "inverse_network", "epochs": 3}],
                        "information": {"mi_epochs": 2, "paper_variant": False}}
    raw["faults"] = faults
    raw["output_dir"] = str(tmp / "runs")
    path = tmp / "scenario.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "simulator", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _finish(proc: subprocess.Popen, timeout: float = 900) -> str:
    out, _ = proc.communicate(timeout=timeout)
    return out


def _wait_for(check, proc: subprocess.Popen, timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert proc.poll() is None, f"the run ended early:\n{proc.stdout.read()}"
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.2)


def _rounds_done(run: Path) -> int:
    path = run / "stages" / "train" / "checkpoint.pt"
    if not path.is_file():
        return 0
    import torch
    try:
        return torch.load(path, weights_only=True)["state"]["next_round"]
    except Exception:  # being replaced right now
        return 0


def _same_records(a: Path, b: Path) -> None:
    for name in ("devices", "tiers", "rounds", "leakage"):
        pd.testing.assert_frame_equal(pd.read_parquet(a / f"{name}.parquet"),
                                      pd.read_parquet(b / f"{name}.parquet"),
                                      check_exact=False, rtol=1e-4, atol=1e-6)
    for tier in ("small", "large"):
        np.testing.assert_array_equal(np.load(a / "observations" / f"{tier}.npy"),
                                      np.load(b / "observations" / f"{tier}.npy"))


def _manifest(run: Path) -> dict:
    return json.loads((run / "manifest.json").read_text())


def test_a_flower_run_survives_every_kind_of_fault(tmp_path):
    scenario = _scenario(tmp_path, kill_node=[{"round": 1, "node": 0, "step": 2}],
                         kill_cloud=[{"round": 2, "exchange": 3}],
                         kill_adversary=[{"tier": "small", "attack": "inverse_network",
                                          "times": 2},
                                         {"tier": "large", "attack": "information"}],
                         device_crash_probability=0.1)
    proc = _start("run", str(scenario), "--out", str(tmp_path / "run"))
    out = _finish(proc)
    assert proc.returncode == 3, out          # finished, with failures
    m = _manifest(tmp_path / "run")
    assert m["status"] == "complete"
    kinds = {f["kind"] for f in m["failures"]}
    assert {"node", "cloud", "adversary"} <= kinds, m["failures"]
    # only the killed node lost its round (no bystander of the restart)
    nodes = [f for f in m["failures"] if f["kind"] == "node"]
    assert [(f["round"], f["node"]) for f in nodes] == [(1, 0)]
    devices = pd.read_parquet(tmp_path / "run" / "devices.parquet")
    assert devices["served"].all() and devices["accuracy"].notna().all()
    leakage = pd.read_parquet(tmp_path / "run" / "leakage.parquet")
    assert ("large", "inverse_network") in set(zip(leakage["tier"], leakage["attack"]))
    # our one line per failure, no traceback and no Ray notices
    assert "Traceback" not in out and "(raylet)" not in out, out
    assert out.count("failure: ") == len(m["failures"]), out


def test_kill_9_in_training_and_in_the_attack_stage_then_resume(tmp_path):
    scenario = _scenario(tmp_path)
    clean = _start("run", str(scenario), "--out", str(tmp_path / "clean"))
    assert clean.wait(timeout=900) == 0, clean.stdout.read()

    run = tmp_path / "run"
    proc = _start("run", str(scenario), "--out", str(run))
    _wait_for(lambda: _rounds_done(run) >= 2, proc)
    proc.kill()                      # kill -9 of `siftsim run`, in training
    proc.wait()
    assert _manifest(run)["status"] == "running"     # it had no chance to say more

    proc = _start("run", "--resume", str(run))
    units = run / "stages" / "attack"
    _wait_for(lambda: len(list(units.glob("*/*.npz"))) >= 1, proc)
    proc.kill()                      # ... and in the attack stage
    proc.wait()

    proc = _start("run", "--resume", str(run))
    out = _finish(proc)
    assert proc.returncode == 0, out
    m = _manifest(run)
    assert m["status"] == "complete" and m["resumed"] == 2
    _same_records(run, tmp_path / "clean")

    proc = _start("run", "--resume", str(run))      # a finished run: nothing to do
    assert "nothing to do" in _finish(proc) and proc.returncode == 0


@pytest.mark.parametrize("stage", ["train", "attack"])
def test_sigterm_stops_cleanly_and_leaves_no_process_behind(tmp_path, stage):
    scenario = _scenario(tmp_path)
    run = tmp_path / "run"
    proc = _start("run", str(scenario), "--out", str(run))
    if stage == "train":
        _wait_for(lambda: _rounds_done(run) >= 1, proc)
    else:
        _wait_for(lambda: len(list((run / "stages" / "attack").glob("*/*.npz"))) >= 1,
                  proc)
    family = psutil.Process(proc.pid).children(recursive=True)
    assert family                    # Ray's processes and Flower's actors
    proc.send_signal(signal.SIGTERM)
    out = _finish(proc, timeout=120)
    assert proc.returncode == 130, out
    assert "--resume" in out and "Traceback" not in out
    _, alive = psutil.wait_procs(family, timeout=60)
    assert not alive, [p.cmdline() for p in alive]
    m = _manifest(run)
    assert m["status"] == "interrupted" and stage not in m["stages"]
