"""Export a run's or a sweep's records without its bulk, to keep or to share.

A run directory holds its record tables next to checkpoints, the observation log, the
attack stage's units and reconstructions (tens of MB a run). The records alone (the
manifest, the scenario and the parquet tables, ~250 KB) are what ``siftsim report``,
``siftsim compare`` and :mod:`analysis` read; in a sweep, a finished point's manifest is
also what tells a resumed sweep to keep it. So an export can be committed, mailed or
copied to another machine, reported on there, and a long sweep continued there:
``siftsim sweep FILE --out EXPORT`` runs only the points the export does not hold.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from simulator.sweep_folder import point_status, points_difference

__all__ = ["RECORDS", "export_records"]

RECORDS = ("manifest.json", "scenario.yaml", "*.parquet")   # per run directory
_SWEEP = ("sweep.json", "sweep.parquet", "sweep.csv")          # per sweep directory


def export_records(source: str | Path, dest: str | Path) -> list[Path]:
    """Copy the records of a run directory, or of a sweep's finished points, to ``dest``.

    ``dest`` may be new, or an earlier export of the same run or sweep (it is brought up
    to date: points finished since are added, and points the sweep grew by). Returns
    the run directories exported.

    Raises
    ------
    FileNotFoundError
        ``source`` is neither a run directory (manifest.json) nor a sweep (sweep.json).
    FileExistsError
        ``dest`` holds something else.
    """
    source, dest = Path(source), Path(dest)
    if (source / "sweep.json").is_file():
        _check_dest(dest, source / "sweep.json")
        points = json.loads((source / "sweep.json").read_text())["points"]
        runs = [source / p["label"] for p in points
                if point_status(source / p["label"]) == "complete"]
        dest.mkdir(parents=True, exist_ok=True)
        for name in _SWEEP:
            if (source / name).is_file():
                shutil.copyfile(source / name, dest / name)
        for run in runs:
            _copy_run(run, dest / run.name)
        return runs
    if (source / "manifest.json").is_file():
        _check_dest(dest, source / "manifest.json")
        _copy_run(source, dest)
        return [source]
    raise FileNotFoundError(f"{source} is neither a run directory (manifest.json) nor a "
                            "sweep directory (sweep.json): give a folder written by "
                            "`siftsim run` or `siftsim sweep`")


def _copy_run(run: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for pattern in RECORDS:
        for path in sorted(run.glob(pattern)):
            shutil.copyfile(path, dest / path.name)


def _check_dest(dest: Path, marker: Path) -> None:
    """``dest`` is new, empty, or an export of the same run (name) or sweep (points)."""
    if not dest.exists() or not any(dest.iterdir()):
        return
    theirs = dest / marker.name
    if theirs.is_file() and _same(json.loads(theirs.read_text()),
                                  json.loads(marker.read_text()), marker.name):
        return
    raise FileExistsError(f"{dest} holds something other than an export of "
                          f"{marker.parent}: give a new destination")


def _same(theirs: dict, mine: dict, kind: str) -> bool:
    """The same sweep (its points, as a resumed sweep compares them: it may have grown
    since) or run (name)."""
    if kind == "sweep.json":
        return points_difference(theirs.get("points"), mine.get("points"),
                                 grown=True) is None
    return theirs.get("name") == mine.get("name")
