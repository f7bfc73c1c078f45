"""Sweeps: one scenario file, many variants (points), one results table.

A scenario's ``sweep`` section names axes ``{dotted.override.path: [values]}``; ``grid``
runs their cartesian product, ``zip`` their element-wise pairs. Every point is built and
validated before anything runs; :mod:`simulator.sweep_folder` keeps the sweep
directory (``sweep.json``, a run directory per point, ``history/``, ``sweep.parquet``).

Points run with the in-process engine (:func:`simulator.engine.local.run_locally`, the
same per-device records as Flower + Ray), one at a time or as Ray tasks
(:mod:`simulator.sweep_points`).
"""

from __future__ import annotations

import copy
import functools
import itertools
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from simulator.loading import ScenarioError, apply_override, load_raw, validate_scenario
from simulator.scenario import Scenario, Sweep
from simulator.sweep_folder import (annotate, archive, claim, point_status, sweep_table,
                                    write_table)
from simulator.sweep_points import (RESUMABLE, Progress, Runner, attempt, labelled,
                                    run_on_ray, run_point)

__all__ = ["RESUMABLE", "SweepPoint", "expand_sweep", "run_point", "run_sweep", "sweep_table"]


@dataclass(frozen=True)
class SweepPoint:
    """One variant of a swept scenario.

    ``index`` is its position (grid: the first axis varies slowest), ``label`` its run
    directory's name (``p003``), ``values`` axis path -> value, ``raw`` the raw mapping
    with the overrides applied and ``sweep`` removed, ``scenario`` that validated, named
    ``<name>-<label>``.
    """

    index: int
    label: str
    values: dict[str, Any]
    raw: dict[str, Any]
    scenario: Scenario

    def describe(self) -> str:
        """``path=value, ...`` as it would be written with ``--set``."""
        return _describe(self.values)


def expand_sweep(raw: dict[str, Any], source: str = "<scenario>") -> list[SweepPoint]:
    """Every point of ``raw``'s sweep, all validated.

    Raises
    ------
    ScenarioError
        The sweep section is missing or malformed, zip axes differ in length, or any
        point is invalid; the problems of all points are listed together, each line
        naming the point and its axis values.
    """
    sweep = _sweep_section(raw, source)
    axes = {k: list(v) for k, v in sweep.axes.items()}
    if sweep.mode == "zip" and len({len(v) for v in axes.values()}) > 1:
        lengths = ", ".join(f"{k}: {len(v)}" for k, v in axes.items())
        raise ScenarioError(source, ["sweep.axes: mode 'zip' needs all axes of one "
                                     f"length; got {lengths} values"])
    combine = itertools.product if sweep.mode == "grid" else zip
    combos = [dict(zip(axes, c)) for c in combine(*axes.values())]
    width = max(3, len(str(len(combos) - 1)))
    points, problems = [], []
    for i, values in enumerate(combos):
        label = f"p{i:0{width}d}"
        point_raw, errors = _point_raw(raw, values, label)
        try:
            if errors:
                raise ScenarioError(source, errors)
            scenario = validate_scenario(point_raw, source)
        except ScenarioError as err:
            problems += [f"point {i} ({_describe(values)}): {p}" for p in err.problems]
            continue
        points.append(SweepPoint(i, label, values, point_raw, scenario))
    if problems:
        raise ScenarioError(source, problems)
    return points


def run_sweep(path_or_raw: str | Path | dict[str, Any],
              out_dir: str | Path | None = None, *, resume: bool = True,
              parallel: int | None = None, progress: Progress | None = None,
              runner: Runner | None = None, overrides: list[str] | None = None) -> Path:
    """Run every point of a sweep that is not complete yet; return the sweep directory.

    Parameters
    ----------
    path_or_raw
        A scenario YAML file or a raw mapping, with a ``sweep`` section.
    out_dir
        The sweep directory; default ``<output_dir>/<name>-sweep``. A directory holding
        a different sweep (or anything but a sweep) is refused, never overwritten.
    resume
        Continue an existing sweep directory: points whose manifest says ``complete``
        are skipped; with the default runner a point stopped on the way
        (:data:`RESUMABLE`) continues from its checkpoints, others rerun (an earlier
        attempt moves to ``history/``). With ``False`` an existing sweep directory is
        refused.
    parallel
        Points run at once, as Ray tasks; default the scenario's ``sweep.parallel``.
    runner
        ``runner(scenario, run_dir)`` runs one point; default :func:`run_point`. An
        exception marks the point failed and the others still run. With Ray it runs
        inside a task, so it must pickle (a module-level function).
    overrides
        ``"dotted.path=value"`` items (``--set``) applied before expansion.
    """
    raw, source = _read_raw(path_or_raw, overrides)
    points = expand_sweep(raw, source)
    workers = _sweep_section(raw, source).parallel if parallel is None else parallel
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"parallel must be an integer >= 1, got {parallel!r}")
    folder = Path(out_dir) if out_dir else _default_folder(raw, points)
    added = claim(folder, raw, points, source, resume)
    todo = _unfinished(folder, points, resumable=runner is None)
    write_table(folder)
    say, finished = progress or (lambda *a: None), len(points) - len(todo)
    if added:
        say("sweep", finished, len(points),
            f"{added} new points appended to the sweep in {folder}")
    say("sweep", finished, len(points), f"{len(todo)} points to run")

    def done(point: SweepPoint, status: str, error: str | None) -> None:
        nonlocal finished
        finished += 1
        annotate(folder / point.label, point, status, error)
        write_table(folder)  # after every point: an interruption keeps what finished
        note = f"{point.label} {status} ({point.describe()})"
        say("sweep", finished, len(points), note + (f": {error}" if error else ""))

    prepare = functools.partial(_share_evaluator, folder, points)
    if workers > 1 and len(todo) > 1:
        run_on_ray(todo, folder, workers, runner, done, prepare, say)
    else:
        for p in todo:
            prepare(p)
            run = runner or functools.partial(run_point, progress=labelled(say, p.label))
            done(p, *attempt(run, p.scenario, folder / p.label))
    return folder


def _default_folder(raw: dict[str, Any], points: list[SweepPoint]) -> Path:
    """``<output_dir>/<name>-sweep``."""
    return Path(points[0].scenario.output_dir) / f"{raw.get('name', 'sweep')}-sweep"


def _unfinished(folder: Path, points: list[SweepPoint],
                resumable: bool) -> list[SweepPoint]:
    """The points to run; earlier attempts move to ``history/`` unless the point can
    continue from them (``resumable``: the default runner, a point stopped on the way)."""
    todo = [p for p in points if point_status(folder / p.label) != "complete"]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for p in todo:
        if not (resumable and point_status(folder / p.label) in RESUMABLE):
            archive(folder, p.label, stamp)
    return todo


def _share_evaluator(folder: Path, points: list[SweepPoint], point: SweepPoint) -> None:
    """Give ``point`` the evaluation classifier another point already trained, when it
    would train the same one (:func:`simulator.evaluator.evaluator_inputs`): 90 CPU
    seconds a point on MNIST, the attack stage then loads it as a resumed run does."""
    from simulator.evaluator import evaluator_inputs
    from simulator.stages.attack import evaluator_path
    if not point.scenario.adversary.enabled:
        return
    mine = evaluator_inputs(point.scenario)
    if evaluator_path(folder / point.label).is_file():   # a resumed point has its own
        return
    for other in points:
        source = evaluator_path(folder / other.label)
        if other is not point and source.is_file() \
                and evaluator_inputs(other.scenario) == mine:
            target = evaluator_path(folder / point.label)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            return


def _sweep_section(raw: dict[str, Any], source: str) -> Sweep:
    if raw.get("sweep") is None:
        raise ScenarioError(source, ["sweep: no `sweep` section (add sweep.axes, or "
                                     "run a single scenario with `siftsim run`)"])
    try:
        sweep = Sweep.model_validate(raw["sweep"])
    except ValidationError as err:
        try:  # the full validator words the problems with their YAML paths
            validate_scenario(raw, source)
            problems = []
        except ScenarioError as full:
            problems = [p for p in full.problems if p.startswith("sweep")]
        raise ScenarioError(source, problems or [f"sweep: {err}"]) from None
    if not sweep.axes:
        raise ScenarioError(source, ["sweep.axes: give at least one axis, e.g. "
                                     "{training.rounds: [5, 10]}"])
    return sweep


def _point_raw(raw: dict[str, Any], values: dict[str, Any],
               label: str) -> tuple[dict[str, Any], list[str]]:
    point = copy.deepcopy(raw)
    point.pop("sweep", None)
    problems = []
    for path, value in values.items():
        try:
            apply_override(point, f"{path}={_yaml_text(value)}")
        except ValueError as err:
            problems.append(str(err))
    if isinstance(point.get("name"), str):
        point["name"] = f"{point['name']}-{label}"
    return point, problems


def _yaml_text(value: Any) -> str:
    """``value`` as one line of YAML that parses back to the same value."""
    text = yaml.safe_dump(value, default_flow_style=True, width=sys.maxsize,
                          sort_keys=False)
    return text.strip().removesuffix("...").strip()


def _describe(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_yaml_text(v)}" for k, v in values.items())


def _read_raw(path_or_raw: str | Path | dict[str, Any],
              overrides: list[str] | None) -> tuple[dict[str, Any], str]:
    """The raw mapping with overrides applied, and where it came from."""
    if not isinstance(path_or_raw, dict):
        return load_raw(path_or_raw, overrides), str(path_or_raw)
    raw = copy.deepcopy(path_or_raw)
    for item in overrides or []:
        apply_override(raw, item)
    return raw, "<scenario>"
