"""``siftsim``: run, validate and inspect scenarios.

User errors (a bad scenario, a missing dataset, a bad run directory) print one clear
message and exit with status 2; no traceback. A run that finished but lost something on
the way (a dead node's round, a failed attack) exits with status 3 and lists it; one
stopped by SIGINT or SIGTERM exits with 130 and can be continued with ``--resume``;
one stopped because a tier's training collapsed (``training.collapse.action: stop``)
exits with status 4 and says which tier and what to change.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

__all__ = ["main"]


class Progress:
    """One line per phase step on stderr: ``[train] 3/10  loss 0.51  (12.3 s)``."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self, phase: str, done: int, total: int, note: str = "") -> None:
        secs = time.perf_counter() - self.t0
        print(f"[{phase}] {done}/{total}  {note}  ({secs:.1f} s)", file=sys.stderr, flush=True)


class _WithoutRayNotices:
    """A text stream that drops Ray's ``(raylet)`` notices (a worker died, ...).

    The run reports each failure it absorbs in one line of its own; Ray's notice of the
    same death is a paragraph of IDs. ``--debug`` keeps them.
    """

    def __init__(self, stream) -> None:
        self.stream, self._partial = stream, ""

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        kept = [line for line in lines if "(raylet)" not in line]
        if kept:
            self.stream.write("\n".join(kept) + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


def _cmd_validate(args: argparse.Namespace) -> int:
    from simulator.loading import load_scenario
    from simulator.preflight import preflight_all
    sc = load_scenario(args.file, args.set)
    scenarios, labels = [sc], None
    if sc.sweep is not None:
        from simulator.loading import load_raw
        from simulator.sweep import expand_sweep
        points = expand_sweep(load_raw(args.file, args.set), args.file)
        scenarios = [p.scenario for p in points]
        labels = [f"point {p.index} ({p.describe()})" for p in points]
        print(f"{args.file}: sweep of {len(points)} points, each valid")
    # The data and the machine: splits, devices against samples, memory (no training).
    reports = preflight_all(scenarios, args.file, labels)
    for warning in dict.fromkeys(w for r in reports for w in r.warnings):
        print(f"warning: {warning}", file=sys.stderr)
    report = max(reports, key=lambda r: r.memory_bytes)
    counts = ", ".join(f"{k}: {v}" for k, v in sc.tier_counts().items()) \
        or "assigned by budget"
    print(f"{args.file}: valid ({sc.num_devices} devices; {counts}; "
          f"training {sc.training.mode}, {sc.training.rounds} rounds; "
          f"{report.summary()})")
    if sc.adversary.enabled and sc.adversary.attacks:
        print(f"{args.file}: attack grids: {_grid_sizes(sc)}")
    return 0


def _grid_sizes(sc) -> str:
    """``inverse_network 4 points (2 width x 2 aux_size), rmle 1 point``."""
    from simulator.search import axes, grid
    parts = []
    for spec in sc.adversary.attacks:
        n, found = len(grid(spec)), axes(spec)
        sizes = " x ".join(f"{len(v)} {k}" for k, v in found.items())
        parts.append(f"{spec.label or spec.name} {n} point{'s' * (n != 1)}"
                     + (f" ({sizes})" if found else ""))
    return ", ".join(parts)


def _cmd_run(args: argparse.Namespace) -> int:
    from simulator.interrupt import stop_on_signals
    from simulator.run import resume_run, run_scenario
    if args.resume:
        if args.file or args.set or args.out:
            print("error: --resume RUN_DIR continues a run with its own scenario: give no "
                  "scenario file, --set or --out with it", file=sys.stderr)
            return 2
        with stop_on_signals():
            path = resume_run(args.resume, progress=Progress(), debug=args.debug)
    else:
        if not args.file:
            print("error: give a scenario file (or --resume RUN_DIR)", file=sys.stderr)
            return 2
        from simulator.loading import load_scenario
        from simulator.preflight import preflight
        sc = load_scenario(args.file, args.set)
        # Data-size and memory problems are reported now, before Ray starts.
        for warning in preflight(sc, args.file).warnings:
            print(f"warning: {warning}", file=sys.stderr)
        with stop_on_signals():
            path = run_scenario(sc, out=args.out, progress=Progress(), debug=args.debug)
    print(f"run directory: {path}")
    _print_tiers(path)
    return _report_failures(path)


def _report_failures(path) -> int:
    """List what the run lost (one line each); 3 if anything, else 0."""
    import json
    failures = json.loads((path / "manifest.json").read_text()).get("failures", [])
    for f in failures:
        where = ", ".join(f"{k} {f[k]}" for k in ("round", "node", "tier", "attack")
                          if k in f)
        lost = f" ({len(f['devices'])} devices)" if "devices" in f else ""
        print(f"failure: {f['stage']} {f['kind']}: {where}{lost}: {f['reason']}",
              file=sys.stderr)
    return 3 if failures else 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    from simulator.loading import load_raw
    from simulator.preflight import preflight_all
    from simulator.sweep import expand_sweep, run_sweep
    points = expand_sweep(load_raw(args.file, args.set), args.file)
    # Every point's data sizes and memory, before any point starts.
    reports = preflight_all([p.scenario for p in points], args.file,
                            [f"point {p.index} ({p.describe()})" for p in points])
    for warning in dict.fromkeys(w for r in reports for w in r.warnings):
        print(f"warning: {warning}", file=sys.stderr)
    folder = run_sweep(args.file, args.out, overrides=args.set, resume=not args.no_resume,
                       parallel=args.parallel, progress=Progress())
    print(f"sweep table: {folder / 'sweep.csv'}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from analysis import write_report
    html, md = write_report(args.run_dir, args.out)
    print(f"report: {html}\nsummary: {md}")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from analysis import write_comparison
    page = write_comparison(args.run_dirs, args.out)
    print(f"comparison: {page}")
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from simulator.export import export_records
    runs = export_records(args.source, args.dest)
    print(f"records of {len(runs)} finished run(s) in {args.dest}")
    return 0


def _cmd_attack(args: argparse.Namespace) -> int:
    from simulator.interrupt import stop_on_signals
    from simulator.run import attack_run
    with stop_on_signals():
        path = attack_run(args.run_dir, args.set, progress=Progress())
    print(f"leakage written to {path} (earlier results moved to {path}/history/)")
    _print_tiers(path)
    return _report_failures(path)


def _print_tiers(path) -> None:
    """The tier table; collapsed tiers are marked, and named on stderr."""
    import pandas as pd

    from analysis.tables import collapse_note, collapsed_tiers
    tiers = pd.read_csv(path / "tiers.csv")
    cols = [c for c in ("tier", "devices", "defense", "accuracy_mean", "accuracy_lo",
                        "accuracy_hi", "macs", "bytes_per_sample", "latency_ms_mean",
                        "ssim_worst_case_mean", "attack_acc_worst_case_mean", "mi_nats")
            if c in tiers]
    shown = tiers[cols].copy()
    collapsed = collapsed_tiers(tiers)
    if collapsed.any():
        shown.insert(1, "collapsed", ["COLLAPSED" if c else "" for c in collapsed])
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    note = collapse_note(tiers)
    if note:
        print(f"warning: {note}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siftsim", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, helptext in (("run", "run a scenario file"),
                           ("validate", "check a scenario file; runs nothing")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("file", help="scenario YAML file", nargs="?" if name == "run" else None)
        p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a value, e.g. --set training.rounds=5 (repeatable)")
        if name == "run":
            p.add_argument("--out", default=None, help="run directory (default "
                           "<output_dir>/<name>, never overwriting an earlier run)")
            p.add_argument("--resume", metavar="RUN_DIR", default=None,
                           help="continue an interrupted run: finished stages are kept, "
                           "training continues from its last round checkpoint")
            p.add_argument("--debug", action="store_true", help="show Flower's and Ray's "
                           "own logs (tracebacks of processes that died)")
    p = sub.add_parser("sweep", help="run every point of a scenario's sweep section")
    p.add_argument("file", help="scenario YAML file with a `sweep` section")
    p.add_argument("--out", default=None, help="sweep folder (default "
                   "<output_dir>/<name>-sweep); rerunning resumes it")
    p.add_argument("--no-resume", action="store_true", help="refuse an existing folder")
    p.add_argument("--parallel", type=int, default=None, help="points at once (Ray tasks)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p = sub.add_parser("report", help="write a self-contained HTML report and a "
                       "Markdown summary of a run directory")
    p.add_argument("run_dir")
    p.add_argument("--out", default=None, help="folder (default: the run directory)")
    p = sub.add_parser("compare", help="put runs side by side (tables, frontier)")
    p.add_argument("run_dirs", nargs="+")
    p.add_argument("--out", default="comparison", help="folder for comparison.html")
    p = sub.add_parser("export", help="copy the records of a run or of a sweep's "
                       "finished points without checkpoints, logs and images (to keep, "
                       "share or continue a sweep elsewhere)")
    p.add_argument("source", help="a run or sweep directory")
    p.add_argument("dest", help="a new folder, or an earlier export of the same")
    p = sub.add_parser("attack", help="rerun the curious cloud on a finished run "
                       "directory (no retraining)")
    p.add_argument("run_dir", help="a directory written by `siftsim run`")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change the adversary, e.g. --set 'adversary.attacks=[{name: "
                   "rmle, threat_model: white_box}]'")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from analysis.rundir import RunDirectoryError
    from simulator.data import DatasetNotFoundError
    from simulator.engine.collapse import TrainingCollapsed
    from simulator.loading import ScenarioError
    if not getattr(args, "debug", False):
        sys.stdout = _WithoutRayNotices(sys.stdout)
    handlers = {"run": _cmd_run, "validate": _cmd_validate, "attack": _cmd_attack,
                "sweep": _cmd_sweep, "report": _cmd_report, "compare": _cmd_compare,
                "export": _cmd_export}
    try:
        return handlers[args.command](args)
    except (ScenarioError, DatasetNotFoundError, FileNotFoundError, FileExistsError,
            RunDirectoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except TrainingCollapsed as err:
        _shutdown_ray()
        print(f"error: training stopped: {err}", file=sys.stderr)
        return 4
    except KeyboardInterrupt as err:
        _shutdown_ray()
        print(f"interrupted ({err or 'SIGINT'}); finished stages are kept: continue with "
              "`siftsim run --resume RUN_DIR`", file=sys.stderr)
        sys.stderr.flush()
        sys.stdout.flush()
        # Flower's runtime threads may still wait on actors that are gone; nothing of
        # ours is left to write, so leave without joining them.
        os._exit(130)


def _shutdown_ray() -> None:
    """Stop the Ray this process started (its actors and workers with it)."""
    if "ray" in sys.modules:
        import ray
        if ray.is_initialized():
            ray.shutdown()


if __name__ == "__main__":
    sys.exit(main())
