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

``--scaling`` runs one fleet scenario (``assignment``: ``devices`` counts the fleet) at
several sizes with the same per-device work (data, steps and sampled fraction per
device), on the bare loop (``--engine flower`` for the real engine), and prints per
size: seconds per trained device-round, peak memory of the process tree and per device,
and each phase's efficiency against a reference: the scenario's own edge + cloud models
trained (forward, backward, optimiser step) and served (forward) at a saturating batch
in one process, per rung, weighted by the samples each rung processed. A shared
machine's speed drifts by 10-25% between minutes and processes, so the limit is
measured two ways, printed side by side: *paired*, in the run's own process between
its rounds (the windows' time is taken out of the run's), and *bracketed*, in
processes of its own before the first run and after every run, each run held against
the faster of the two beside it. ``--repeats N`` runs each size N times; the table
shows the means::

    python bench/fleet.py --scaling scenarios/fleet_10k.yaml --devices 1000 3000 10000

``--cohort N`` prints, per rung, what a cohort of N devices' step (stacked edges and the
cloud at their concatenated batch) reaches against that limit, models only: the
efficiency the engine could reach with nothing outside the models::

    python bench/fleet.py --cohort 10 scenarios/fleet_10k.yaml

``--ceiling`` does that for the cohorts a fleet run's rounds actually plan at each
``--devices`` size (every rung at its planned cohort sizes, weighted by the samples
each trains): the training efficiency a run could reach with nothing outside the
models, so a run's shortfall below it is the engine's::

    python bench/fleet.py --ceiling scenarios/fleet_10k.yaml --devices 1000 10000

``--full`` runs one scenario as ``siftsim run`` does (Flower + Ray, attack stage
included) and checks it against a time and a memory target::

    python bench/fleet.py --full scenarios/fleet_10k.yaml --minutes 20 --gigabytes 8
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

from _ceiling import cohort_ceiling, planned_ceiling
from _limit import PairedLimit, efficiency, fastest, reference

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


_PEAK_FILE = "bench_peak_bytes.txt"   # a bare child's own peak memory, for _measure
_PAIRED_FILE = "bench_paired_limit.json"   # a bare child's PairedLimit.summary()


def _measure(scenario: str, mode: str, overrides: list[str], out: Path,
             threads: int | None = None, paired: dict | None = None) -> dict:
    """Run one mode in a child process and measure its peak memory.

    The bare engine is one process: its own peak resident set (``ru_maxrss``), read
    when it ends. Flower + Ray is a tree of processes sharing Ray's object store: its
    summed PSS, polled every 2 s. Reading a process's PSS walks its page tables under
    its memory-map lock (80-120 ms on a 10,000-device run), which stalls its page
    faults: polled every 0.5 s it slowed the runs it measured by 10-20%.

    ``paired`` (the limit's batch per rung and phase) makes a bare run measure the
    limit between its rounds (:class:`_limit.PairedLimit`): the row gets it as
    ``paired``, and the windows' seconds are taken out of its stage seconds.
    """
    cmd = [sys.executable, __file__, "--child", mode, scenario, "--out", str(out)]
    cmd += [] if threads is None else ["--threads", str(threads)]
    cmd += [] if paired is None else ["--paired", json.dumps(paired)]
    for item in overrides:
        cmd += ["--set", item]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    peak, done = [0], threading.Event()

    def poll() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _tree_pss_bytes(proc.pid))
            done.wait(2.0)

    watcher = threading.Thread(target=poll, daemon=True)
    if mode != "bare":
        watcher.start()
    _, err = proc.communicate()
    done.set()
    if watcher.is_alive():
        watcher.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} run of {scenario} failed:\n{err[-3000:]}")
    if mode == "bare":
        peak[0] = int((out / _PEAK_FILE).read_text())
    manifest = json.loads((out / "manifest.json").read_text())
    stages = manifest["stages"]
    devices = pd.read_parquet(out / "devices.parquet")
    training = manifest["scenario"]["training"]
    per_round = training["local_steps"] * devices["n_train"].clip(
        upper=training["batch_size"])
    # the samples each rung processed: trained device-rounds, served test images
    tier = devices["tier"].fillna("")
    limit = json.loads((out / _PAIRED_FILE).read_text()) if paired is not None else None
    paused = limit["paused"] if limit else {"train": 0.0, "infer": 0.0}
    train_s = stages["train"]["seconds"] - paused["train"]
    infer_s = stages["infer"]["seconds"] - paused["infer"]
    return {"seconds": train_s + stages["deploy"]["seconds"] + infer_s,
            "setup": stages["setup"]["seconds"], "peak_gb": peak[0] / 1e9,
            "accuracy": float(devices["accuracy"].mean()), "devices": len(devices),
            "nodes": stages["setup"]["nodes"], "train_s": train_s, "infer_s": infer_s,
            "paired": limit,
            "device_rounds": int(devices["rounds_trained"].sum()),
            "train_samples": (per_round * devices["rounds_trained"]).groupby(tier).sum(),
            "infer_samples": devices["n_test"].where(devices["served"], 0)
            .groupby(tier).sum()}


def _child(mode: str, scenario: str, out: str, overrides: list[str],
           threads: int | None, paired: str | None = None) -> None:
    sys.path.insert(0, str(REPO))
    if threads is not None:
        import torch
        torch.set_num_threads(threads)
    from simulator.engine.local import run_locally
    from simulator.loading import load_scenario
    from simulator.run import run_scenario
    sc = load_scenario(scenario, overrides if mode == "full"
                       else [*overrides, "adversary.enabled=false"])
    if mode == "reference":
        Path(out).write_text(json.dumps(reference(sc)))
        return
    limit = PairedLimit(json.loads(paired)) if paired else None
    factory = None if mode != "bare" else limit.transport() if limit else run_locally
    run_scenario(sc, out, transport_factory=factory)
    if limit is not None:
        (Path(out) / _PAIRED_FILE).write_text(json.dumps(limit.summary()))
    if mode == "bare":   # one process: its own peak (kilobytes on Linux)
        import resource
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        (Path(out) / _PEAK_FILE).write_text(str(peak))


def full(scenario: str, overrides: list[str], minutes: float, gigabytes: float) -> None:
    """The scenario as ``siftsim run`` runs it (Flower + Ray, the adversary's attack
    stage included): seconds per stage, peak memory of the process tree, the targets."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        row = _measure(scenario, "full", overrides, out)
        stages = json.loads((out / "manifest.json").read_text())["stages"]
    seconds = {s: stages[s]["seconds"] for s in ("train", "deploy", "infer", "attack")
               if s in stages}
    total = sum(seconds.values())
    print(f"{Path(scenario).stem}: {row['devices']} devices on {row['nodes']} Flower "
          "nodes; " + ", ".join(f"{s} {v:.0f} s" for s, v in seconds.items())
          + f" (setup {row['setup']:.0f} s)")
    print(f"train + infer + attack {total / 60:.1f} min (target <= {minutes:g}: "
          f"{'met' if total <= 60 * minutes else 'NOT met'}); peak memory of the "
          f"process tree {row['peak_gb']:.2f} GB (target <= {gigabytes:g}: "
          f"{'met' if row['peak_gb'] <= gigabytes else 'NOT met'}); mean device "
          f"accuracy {row['accuracy']:.3f}", flush=True)


def scaling(scenario: str, sizes: list[int], engine: str, overrides: list[str],
            threads: int, repeats: int = 1) -> None:
    """The scaling table (see the module docstring); the reference and the bare runs
    use ``threads`` torch threads each (two spin-waiting OpenMP threads on a busy
    machine make tiny operations take milliseconds).

    This shared machine's speed drifts by 10-25% within minutes and between
    processes, so each run's efficiency is measured two ways, side by side. Bracketed:
    the reference runs in its own process before the first run and after every run,
    and a run is held against the faster of the two beside it. Paired (bare engine):
    the run measures the limit in its own process between its rounds
    (:class:`_limit.PairedLimit`, at the batches the first reference found best).
    Each size runs ``repeats`` times; the table shows the mean of its runs and the
    range of the paired efficiency.
    """
    with tempfile.TemporaryDirectory() as tmp:
        def measure_limit() -> dict:
            ref_file = Path(tmp) / "reference.json"
            subprocess.run([sys.executable, __file__, "--child", "reference", scenario,
                            "--out", str(ref_file), "--threads", str(threads),
                            *sum((["--set", o] for o in overrides), [])],
                           cwd=REPO, check=True)
            return json.loads(ref_file.read_text())

        before, rows = measure_limit(), []
        batches = {t: {p: r[p][1] for p in r} for t, r in before["rates"].items()}
        for n in sizes:
            runs = []
            for k in range(repeats):
                row = _measure(scenario, engine, [*overrides, f"devices={n}"],
                               Path(tmp) / f"n{n}-{k}",
                               threads if engine == "bare" else None,
                               batches if engine == "bare" else None)
                after = measure_limit()
                row["limit"], before = fastest([before, after]), after
                for phase in ("train", "infer"):
                    row[f"{phase}_eff"] = efficiency(row, row["limit"], phase)
                    row[f"{phase}_paired"] = efficiency(row, row["paired"], phase) \
                        if row["paired"] else float("nan")
                print(f"  {n} devices, run {k + 1} of {repeats}: training "
                      f"{row['train_s']:.1f} s, {row['train_paired']:.1%} of the limit "
                      f"paired in its process, {row['train_eff']:.1%} of the limit on "
                      f"either side; inference {row['infer_paired']:.1%} / "
                      f"{row['infer_eff']:.1%}", flush=True)
                runs.append(row)
            mean = {key: sum(r[key] for r in runs) / len(runs)
                    for key in ("train_s", "infer_s", "train_eff", "infer_eff",
                                "train_paired", "infer_paired")}
            rows.append({**runs[0], **mean, "n": n, "runs": runs,
                         "peak_gb": max(r["peak_gb"] for r in runs),
                         "per": mean["train_s"] / max(1, runs[0]["device_rounds"])})
    _print_scaling(rows, threads, repeats)


def _print_scaling(rows: list[dict], threads: int, repeats: int) -> None:
    """The scaling table, the limits behind each row and the per-device cost ratio."""
    print(f"{'devices':>8}{'nodes':>6}{'dev-rounds':>11}{'train s':>9}"
          f"{'ms/dev-rnd':>11}{'infer s':>9}{'train paired':>20}{'bracketed':>10}"
          f"{'infer paired':>13}{'bracketed':>10}{'peak GB':>9}{'MB/dev':>8}{'+MB/dev':>8}")
    for prev, row in zip([None, *rows], rows):
        extra = float("nan") if prev is None else \
            (row["peak_gb"] - prev["peak_gb"]) * 1e3 / (row["n"] - prev["n"])
        paired = [r["train_paired"] for r in row["runs"]]
        spread = f"{row['train_paired']:.1%} ({min(paired):.0%}-{max(paired):.0%})"
        print(f"{row['n']:>8}{row['nodes']:>6}{row['device_rounds']:>11}"
              f"{row['train_s']:>9.1f}{1e3 * row['per']:>11.2f}{row['infer_s']:>9.1f}"
              f"{spread:>20}{row['train_eff']:>10.1%}{row['infer_paired']:>13.1%}"
              f"{row['infer_eff']:>10.1%}{row['peak_gb']:>9.2f}"
              f"{row['peak_gb'] * 1e3 / row['n']:>8.2f}{extra:>8.3f}")
    print(f"means over {repeats} run(s) per size; paired: the limit measured between "
          "the run's rounds in its own process; bracketed: in processes of its own "
          "before and after the run, the faster of the two")
    for row in rows:
        print(f"limit of the {row['n']}-device row ({threads} torch thread(s), samples/s "
              "at the best batch, bracketed): " + "; ".join(
                  f"{t} train {r['train'][0]:.0f} (b{r['train'][1]}) infer "
                  f"{r['infer'][0]:.0f} (b{r['infer'][1]})"
                  for t, r in row["limit"]["rates"].items()))
        if row["paired"]:
            print(f"  paired ({row['paired']['windows']['train']} training windows, "
                  "harmonic mean): " + "; ".join(
                      f"{t} train {r['train'][0]:.0f} infer {r['infer'][0]:.0f}"
                      for t, r in row["paired"]["rates"].items()))
    if len(rows) > 1:
        print(f"per-device cost at {rows[-1]['n']} vs {rows[0]['n']} devices: "
              f"{rows[-1]['per'] / rows[0]['per']:.2f}x seconds per device-round")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=DEFAULT)
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--scaling", action="store_true",
                        help="one fleet scenario at --devices sizes (see above)")
    parser.add_argument("--devices", type=int, nargs="+", default=[1000, 3000, 10000])
    parser.add_argument("--engine", choices=["bare", "flower"], default="bare")
    parser.add_argument("--full", action="store_true",
                        help="one scenario as `siftsim run` runs it, attacks included, "
                             "against --minutes and --gigabytes")
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--gigabytes", type=float, default=8.0)
    parser.add_argument("--cohort", type=int, default=None,
                        help="the models alone at a cohort of this many devices "
                             "against the limit, per rung (see cohort_ceiling)")
    parser.add_argument("--ceiling", action="store_true",
                        help="the models-only ceiling at --devices sizes, from the "
                             "cohorts the rounds plan (see planned_ceiling)")
    parser.add_argument("--repeats", type=int, default=1,
                        help="--scaling: runs per size, the table shows their mean")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads per process (--scaling: default 1)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--paired", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child, args.scenarios[0], args.out, args.set, args.threads,
               args.paired)
        return
    # the single-scenario modes default to the fleet scenario
    fleet = args.scenarios[0] if args.scenarios != DEFAULT else "scenarios/fleet_10k.yaml"
    if args.full:
        full(fleet, args.set, args.minutes, args.gigabytes)
        return
    if args.cohort:
        cohort_ceiling(fleet, args.cohort, args.set)
        return
    if args.ceiling:
        planned_ceiling(fleet, args.devices, args.set)
        return
    if args.scaling:
        scaling(fleet, args.devices, args.engine, args.set, args.threads or 1,
                args.repeats)
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
