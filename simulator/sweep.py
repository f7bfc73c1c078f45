"""Sweeps: a grid of scenario variants, validated up front, resumable, one tidy table.

A scenario's ``sweep`` section names axes (dotted override paths) and their values.
Every point is expanded and validated before anything runs; a failed point is recorded
and the others go on; finished points are skipped when the sweep is run again. Points run
as Ray tasks (``sweep.parallel``) with the in-process engine, which gives the same
records as Flower + Ray (tests/test_engine.py), since a Flower simulation cannot nest
inside a Ray task.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from simulator.loading import ScenarioError, apply_override, validate_scenario
from simulator.scenario import Scenario

__all__ = ["SweepPoint", "expand_sweep", "run_sweep"]


@dataclass(frozen=True)
class SweepPoint:
    index: int
    values: dict[str, Any]
    scenario: Scenario

    @property
    def name(self) -> str:
        return f"p{self.index:03d}"


def expand_sweep(raw: dict[str, Any], source: str = "<scenario>") -> list[SweepPoint]:
    """Every point of the sweep, each validated; all problems in one ScenarioError."""
    sweep = raw.get("sweep") or {}
    axes: dict[str, list[Any]] = dict(sweep.get("axes") or {})
    if not axes:
        raise ScenarioError(source, ["sweep.axes: give at least one axis to sweep"])
    if sweep.get("mode", "grid") == "zip":
        lengths = {k: len(v) for k, v in axes.items()}
        if len(set(lengths.values())) > 1:
            raise ScenarioError(source, [f"sweep.axes: mode 'zip' needs axes of one "
                                         f"length, got {lengths}"])
        combos = list(zip(*axes.values(), strict=True))
    else:
        combos = list(itertools.product(*axes.values()))
    points, problems = [], []
    for index, combo in enumerate(combos):
        values = dict(zip(axes, combo, strict=True))
        point = copy.deepcopy({k: v for k, v in raw.items() if k != "sweep"})
        label = ", ".join(f"{k}={_short(v)}" for k, v in values.items())
        try:
            for key, value in values.items():
                apply_override(point, f"{key}={json.dumps(value)}")
            point["name"] = f"{raw.get('name', 'sweep')}-p{index:03d}"
            points.append(SweepPoint(index, values, validate_scenario(point, source)))
        except ScenarioError as err:
            problems += [f"point {index} ({label}): {p}" for p in err.problems]
        except ValueError as err:
            problems.append(f"point {index} ({label}): {err}")
    if problems:
        raise ScenarioError(source, problems)
    return points


def _short(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


Runner = Callable[[Scenario, Path], Path]


def _run_local(scenario: Scenario, out: Path) -> Path:
    from simulator.engine.local import run_locally
    from simulator.run import run_scenario
    return run_scenario(scenario, out, transport_factory=run_locally)


def run_sweep(path: str | Path, out: str | Path | None = None, *,
              overrides: list[str] | None = None, resume: bool = True,
              parallel: int | None = None, runner: Runner | None = None,
              progress: Callable[..., None] | None = None) -> Path:
    """Run every unfinished point of a sweep file; returns the sweep directory."""
    path = Path(path)
    raw = yaml.safe_load(path.read_text())
    for item in overrides or []:
        apply_override(raw, item)
    points = expand_sweep(raw, str(path))
    folder = Path(out) if out else Path(raw.get("output_dir", "runs")) / f"{raw['name']}-sweep"
    _claim(folder, points, resume)
    todo = [p for p in points if not _complete(folder / p.name)]
    runner = runner or _run_local
    workers = parallel or (raw.get("sweep") or {}).get("parallel", 1)
    rows = {p.index: _status(folder, p) for p in points}
    if workers > 1 and runner is _run_local and len(todo) > 1:
        results = _run_ray(todo, folder, workers)
    else:
        results = ((p, _guarded(runner, p, folder / p.name)) for p in todo)
    for done, (point, error) in enumerate(results, 1):
        rows[point.index] = _status(folder, point, error)
        _write_table(folder, points, rows)
        if progress:
            progress("sweep", done, len(todo), f"{point.name} {error or 'complete'}")
    _write_table(folder, points, rows)
    return folder


def _guarded(runner: Runner, point: SweepPoint, out: Path) -> str | None:
    try:
        runner(point.scenario, out)
        return None
    except Exception as err:  # a failed point is recorded; the others go on
        return f"{type(err).__name__}: {err}"


def _run_ray(todo: list[SweepPoint], folder: Path, workers: int):
    import ray
    started = not ray.is_initialized()
    if started:
        ray.init(address="local", num_cpus=workers, include_dashboard=False,
                 log_to_driver=False)
    task = ray.remote(num_cpus=1)(_guarded)
    try:
        refs = {task.remote(_run_local, p, folder / p.name): p for p in todo}
        while refs:
            ready, _ = ray.wait(list(refs), num_returns=1)
            yield refs.pop(ready[0]), ray.get(ready[0])
    finally:
        if started:
            ray.shutdown()


def _claim(folder: Path, points: list[SweepPoint], resume: bool) -> None:
    """Own ``folder`` for these points; refuse to mix two different sweeps."""
    folder.mkdir(parents=True, exist_ok=True)
    spec = folder / "sweep.json"
    mine = [{"point": p.name, "values": p.values} for p in points]
    if spec.exists():
        theirs = json.loads(spec.read_text())
        if theirs != json.loads(json.dumps(mine)):
            raise ScenarioError(str(folder), ["this folder holds a different sweep "
                                              "(other axes or values): pass a new --out"])
        if not resume:
            raise ScenarioError(str(folder), ["the sweep folder exists; resume it "
                                              "(the default) or pass a new --out"])
    spec.write_text(json.dumps(mine, indent=2))


def _complete(run_dir: Path) -> bool:
    manifest = run_dir / "manifest.json"
    return manifest.is_file() and json.loads(manifest.read_text()).get("status") == "complete"


def _status(folder: Path, point: SweepPoint, error: str | None = None) -> dict[str, Any]:
    run_dir = folder / point.name
    done = _complete(run_dir)
    return {"point": point.index, "run_dir": str(run_dir),
            "status": "complete" if done else ("failed" if error else "pending"),
            "error": error or ""}


def _write_table(folder: Path, points: list[SweepPoint], rows: dict[int, dict]) -> None:
    frames = []
    for p in points:
        row = rows[p.index]
        axes = {k: v if isinstance(v, int | float | str | bool) else _short(v)
                for k, v in p.values.items()}
        tiers_file = Path(row["run_dir"]) / "tiers.parquet"
        tiers = pd.read_parquet(tiers_file) if row["status"] == "complete" \
            else pd.DataFrame([{}])
        frames.append(tiers.assign(**row, **axes))
    table = pd.concat(frames, ignore_index=True)
    table.to_parquet(folder / "sweep.parquet", index=False)
    table.to_csv(folder / "sweep.csv", index=False)
