"""Framework overhead at fleet scale: Flower + Ray next to a bare single-process loop.

For each scenario, runs the same scenario twice, each in its own process:

* ``bare``   - the in-process transport: one Python process, plain PyTorch calls, the
  same models, batches, steps and seeds (``simulator.engine.local.run_locally``);
* ``flower`` - the real engine: Flower ServerApp/ClientApps on Ray, cloud in an actor.

It prints wall time of training + inference (setup excluded, it is the same code), the
overhead ratio flower / bare, the peak memory (PSS) of the whole process tree (Ray
workers included), and the mean device accuracy of each (which must agree: the
arithmetic is the same). Usage, from the repository root::

    python bench/fleet.py                       # mnist_300 and scale_1000
    python bench/fleet.py scenarios/quickstart.yaml --set training.rounds=2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT = ["scenarios/mnist_300.yaml", "scenarios/scale_1000.yaml"]


def _tree_pss_bytes(root: int) -> int:
    """Proportional set size of ``root`` and all its descendants, from /proc.

    PSS splits shared pages (Ray's object store, shared libraries) among the processes
    that map them, so the sum is the memory the tree really holds; summing RSS would
    count the object store once per worker.
    """
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    parents[int(entry)] = int(fh.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        kids = [c for c, p in parents.items() if p == pid and c not in tree]
        tree.update(kids)
        frontier.extend(kids)
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as fh:
                for line in fh:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def _measure(scenario: str, mode: str, overrides: list[str], out: Path) -> dict:
    """Run one mode in a child process; poll its process tree's memory meanwhile."""
    cmd = [sys.executable, __file__, "--child", mode, scenario, "--out", str(out)]
    for item in overrides:
        cmd += ["--set", item]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    peak, done = [0], threading.Event()

    def poll() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_pss_bytes(proc.pid))
            done.wait(0.5)

    watcher = threading.Thread(target=poll, daemon=True)
    watcher.start()
    _, err = proc.communicate()
    done.set()
    watcher.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} run of {scenario} failed:\n{err[-3000:]}")
    manifest = json.loads((out / "manifest.json").read_text())
    stages = manifest["stages"]
    devices = pd.read_parquet(out / "devices.parquet")
    return {"seconds": sum(stages[s]["seconds"] for s in ("train", "deploy", "infer")),
            "setup": stages["setup"]["seconds"], "peak_gb": peak[0] / 1e9,
            "accuracy": float(devices["accuracy"].mean()), "devices": len(devices),
            "nodes": stages["setup"]["nodes"]}


def _child(mode: str, scenario: str, out: str, overrides: list[str]) -> None:
    sys.path.insert(0, str(REPO))
    from simulator.engine.local import run_locally
    from simulator.loading import load_scenario
    from simulator.run import run_scenario
    sc = load_scenario(scenario, [*overrides, "adversary.enabled=false"])
    run_scenario(sc, out, transport_factory=run_locally if mode == "bare" else None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=DEFAULT)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.scenarios[0], args.out, args.set)
        return
    print(f"{'scenario':<14}{'devices':>8}{'nodes':>6}{'bare s':>9}{'flower s':>10}"
          f"{'ratio':>7}{'bare GB':>9}{'flower GB':>10}{'bare acc':>9}{'flower acc':>11}")
    with tempfile.TemporaryDirectory() as tmp:
        for scenario in args.scenarios:
            name = Path(scenario).stem
            t0 = time.perf_counter()
            bare = _measure(scenario, "bare", args.set, Path(tmp) / f"{name}-bare")
            flower = _measure(scenario, "flower", args.set, Path(tmp) / f"{name}-flower")
            print(f"{name:<14}{bare['devices']:>8}{bare['nodes']:>6}{bare['seconds']:>9.1f}"
                  f"{flower['seconds']:>10.1f}{flower['seconds'] / bare['seconds']:>7.2f}"
                  f"{bare['peak_gb']:>9.2f}{flower['peak_gb']:>10.2f}"
                  f"{bare['accuracy']:>9.3f}{flower['accuracy']:>11.3f}"
                  f"   ({time.perf_counter() - t0:.0f} s in all)", flush=True)


if __name__ == "__main__":
    main()
