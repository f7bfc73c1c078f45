"""Runs that survive: a scenario run clean, with each injected fault, and killed then
resumed; one line per case.

Every case runs ``python -m simulator run`` in its own process, as a user would, with
the same scenario and seed. Columns: whether the run survived (finished, status
``complete``), what it recorded as lost (device-rounds of dead nodes or crashed
devices, attack units that failed twice, cloud restarts), and whether its records
(devices, tiers, rounds, leakage, observation log) are identical to the clean run's.
A dead cloud and a retried adversary must leave the records identical, and so must
every kill/resume; a dead node or crashed devices change training, so they must not.
Usage, from the repository root::

    python bench/faults.py                                   # the quickstart
    python bench/faults.py scenarios/quickstart.yaml --set training.rounds=6
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]


def _cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "simulator", *args]


def _run(args: list[str], kill: tuple[str, int] | None = None, out: Path | None = None,
         sig: int = signal.SIGKILL) -> int:
    """Run ``siftsim ...``; with ``kill=(stage, k)`` send ``sig`` once it is reached."""
    proc = subprocess.Popen(_cmd(*args), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    if kill:
        while proc.poll() is None and not _reached(out, *kill):
            time.sleep(0.2)
        if proc.poll() is None:
            proc.send_signal(sig)
    return proc.wait()


def _reached(run: Path, stage: str, k: int) -> bool:
    """Training has finished ``k`` rounds, or the attack stage ``k`` units."""
    if stage == "train":
        path = run / "stages" / "train" / "checkpoint.pt"
        if not path.is_file():
            return False
        import torch
        try:
            return torch.load(path, weights_only=True)["state"]["next_round"] >= k
        except Exception:  # being replaced
            return False
    return len(list((run / "stages" / "attack").glob("*/*.npz"))) >= k


def _lost(run: Path) -> str:
    failures = json.loads((run / "manifest.json").read_text()).get("failures", [])
    rounds = sum(len(f.get("devices", [])) for f in failures if f["stage"] == "train"
                 and f["kind"] in ("node", "device_crash"))
    units = sum(f["kind"] == "adversary" for f in failures)
    clouds = sum(f["kind"] == "cloud" for f in failures)
    parts = [f"{rounds} device-rounds"] if rounds else []
    parts += [f"{units} attack units"] if units else []
    parts += [f"{clouds} cloud restarts (nothing lost)"] if clouds else []
    return ", ".join(parts) or "nothing"


def _identical(a: Path, b: Path) -> bool:
    try:
        for name in ("devices", "tiers", "rounds", "leakage"):
            pd.testing.assert_frame_equal(pd.read_parquet(a / f"{name}.parquet"),
                                          pd.read_parquet(b / f"{name}.parquet"))
        for npy in sorted((a / "observations").glob("*.npy")):
            np.testing.assert_array_equal(np.load(npy),
                                          np.load(b / "observations" / npy.name))
    except (AssertionError, FileNotFoundError, ValueError):
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", nargs="?", default="scenarios/quickstart.yaml")
    parser.add_argument("--set", action="append", default=[])
    args = parser.parse_args()
    raw = yaml.safe_load((REPO / args.scenario).read_text())
    sets = [x for s in args.set for x in ("--set", s)]
    from simulator.loading import load_scenario
    sc = load_scenario(REPO / args.scenario, args.set)
    rounds, tier = sc.training.rounds, sc.tiers[0].name
    attack = sc.adversary.attacks[0].label or sc.adversary.attacks[0].name
    mid = max(1, rounds // 2)
    cases = [
        ("clean", [], None, None),
        ("node killed", [f"faults.kill_node=[{{round: {mid}, node: 0, step: 1}}]"], None,
         False),
        ("cloud killed", [f"faults.kill_cloud=[{{round: {mid}, exchange: 2}}]"], None,
         True),
        ("adversary killed once", [f"faults.kill_adversary=[{{tier: {tier}, attack: "
                                   f"{attack}, times: 1}}]"], None, True),
        ("adversary killed twice", [f"faults.kill_adversary=[{{tier: {tier}, attack: "
                                    f"{attack}, times: 2}}]"], None, False),
        ("devices crash (p 0.05)", ["faults.device_crash_probability=0.05"], None, False),
        ("kill -9 in training", [], ("train", mid), True),
        ("kill -9 in attacks", [], ("attack", 1), True),
        ("SIGTERM in training", [], ("train", mid), True),
    ]
    print(f"{args.scenario} ({raw.get('name')}), {rounds} rounds: one line per case")
    print(f"{'case':<26}{'survived':>9}  {'lost':<34}{'identical to clean':>20}"
          f"{'seconds':>9}")
    with tempfile.TemporaryDirectory() as tmp:
        clean = Path(tmp) / "clean"
        for name, extra, kill, expect_same in cases:
            out = Path(tmp) / name.replace(" ", "_")
            t0 = time.perf_counter()
            more = [x for s in extra for x in ("--set", s)]
            base = ["run", str(REPO / args.scenario), "--out", str(out), *sets, *more]
            if kill:
                sig = signal.SIGTERM if name.startswith("SIGTERM") else signal.SIGKILL
                _run(base, kill, out, sig)
                code = _run(["run", "--resume", str(out)])
            else:
                code = _run(base)
            status = json.loads((out / "manifest.json").read_text()).get("status")
            survived = code in (0, 3) and status == "complete"
            same = _identical(out, clean) if name != "clean" else True
            note = "" if expect_same is None or same == expect_same else \
                "  <- unexpected"
            print(f"{name:<26}{'yes' if survived else 'NO':>9}  {_lost(out):<34}"
                  f"{'yes' if same else 'no':>20}{time.perf_counter() - t0:>9.0f}{note}",
                  flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONPATH", str(REPO))
    main()
