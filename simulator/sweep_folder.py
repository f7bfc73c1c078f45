"""The sweep directory on disk: its record of points, their status and the table.

A sweep directory holds ``sweep.json`` (the expanded points), one run directory per
point, ``history/`` (earlier attempts, never deleted) and ``sweep.{parquet,csv}`` (one
row per point and tier). :mod:`simulator.sweep` decides what runs; this module keeps
the directory consistent so a sweep can be interrupted and resumed.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from simulator.loading import ScenarioError

if TYPE_CHECKING:
    from simulator.sweep import SweepPoint

__all__ = ["annotate", "archive", "claim", "point_status", "points_difference",
           "sweep_table", "write_table"]

ENGINE = "local"  # points run with the in-process engine (see simulator.sweep)


def sweep_table(folder: str | Path) -> pd.DataFrame:
    """One row per (point, tier) of a sweep directory, read from disk.

    Points that are not complete keep their axis values, status and error, with NaN
    metrics. A ``tiers`` column that clashes with an axis path is prefixed ``tier_``.
    """
    folder = Path(folder)
    record = json.loads((folder / "sweep.json").read_text())
    axes = list(record["axes"])
    points = record["points"]
    encoded = {a: _axis_column([p["values"][a] for p in points]) for a in axes}
    frames = []
    for k, p in enumerate(points):
        run_dir = folder / p["label"]
        manifest = _manifest(run_dir)
        status = manifest.get("status", "pending")
        if status == "complete" and (run_dir / "tiers.parquet").is_file():
            tiers = pd.read_parquet(run_dir / "tiers.parquet")
        else:
            tiers = pd.DataFrame({"tier": [t["name"] for t in p["scenario"]["tiers"]]})
        tiers = tiers.rename(columns={c: f"tier_{c}" for c in tiers if c in axes})
        head = {"point": p["index"], **{a: encoded[a][k] for a in axes},
                "status": status, "error": manifest.get("error"),
                "engine": manifest.get("engine"), "run_dir": str(run_dir)}
        frames.append(pd.concat([pd.DataFrame([head] * len(tiers)), tiers], axis=1))
    return pd.concat(frames, ignore_index=True)


def claim(folder: Path, raw: dict[str, Any], points: list[SweepPoint], source: str,
          resume: bool) -> int:
    """Write ``sweep.json``, or check that the one there describes the same points.

    A sweep may grow: when the recorded points are the first of ``points`` (values
    appended to a grid's first axis, the one that varies slowest, or to every axis of
    a zip; say a stronger defense setting) the record is rewritten and the finished
    points keep their labels and results. Returns the number of points added to an
    existing sweep."""
    def dump(exclude_defaults: bool) -> list[dict[str, Any]]:
        return json.loads(json.dumps(
            [{"index": p.index, "label": p.label, "values": p.values,
              "scenario": p.scenario.model_dump(mode="json",
                                                exclude_defaults=exclude_defaults)}
             for p in points], default=str))

    record = {"name": raw.get("name"), "source": source,
              "mode": raw["sweep"].get("mode", "grid"),
              "axes": json.loads(json.dumps(raw["sweep"]["axes"], default=str)),
              "points": dump(False)}
    path, where = folder / "sweep.json", str(folder)
    if path.is_file() and not resume:
        raise ScenarioError(where, ["already holds a sweep; rerun without --no-resume "
                                    "to continue it, or give a new --out directory"])
    if path.is_file():
        recorded = json.loads(path.read_text()).get("points")
        diff = points_difference(recorded, record["points"], grown=True,
                                 explicit=dump(True))
        if diff:
            raise ScenarioError(where, [f"holds a different sweep ({diff}); give a new "
                                        "--out directory, or delete this one to start "
                                        "over (a sweep grows only at its end: "
                                        "append values to a grid's first axis, or "
                                        "to every axis of a zip)"])
        if len(recorded) < len(points):
            # finished points keep their record: it says what ran
            record["points"] = recorded + record["points"][len(recorded):]
            _write_json(path, record)
        return len(points) - len(recorded)
    if folder.exists() and any(folder.iterdir()):
        raise ScenarioError(where, ["not empty and holds no sweep.json, so it is not a "
                                    "sweep directory; give a new --out directory"])
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(path, record)
    return 0


# Where the data and the runs live changes no result: a sweep (or its export) continues
# on a machine that keeps the dataset elsewhere.
_PLACES = (("dataset", "root"), ("dataset", "download"), ("output_dir",))


_AT_DEFAULT = object()  # explicit has nothing below here: every setting at its default
_UNKNOWN = object()     # no explicit dump: every setting counts


def points_difference(old: Any, new: Any, grown: bool = False,
                      explicit: Any = _UNKNOWN) -> str | None:
    """Where two sweeps' recorded points differ in what runs, in words; None: the same
    sweep (wherever its data and runs live). With ``grown``, ``new`` may also be ``old``
    with points appended (the sweep grew).

    ``explicit``: ``new`` dumped without its defaults. Given it, a setting ``new`` has
    and ``old`` lacks is no difference when it is at its default: a parameter the code
    gained after those points ran, whose default keeps what they ran (a changed default
    of an existing setting still differs)."""
    if grown and isinstance(old, list) and isinstance(new, list) \
            and 0 < len(old) < len(new):
        new = new[:len(old)]
        explicit = explicit[:len(old)] if isinstance(explicit, list) else explicit
    return _difference(_what_runs(old), _what_runs(new), explicit=explicit)


def _what_runs(points: Any) -> Any:
    """The points without the places of :data:`_PLACES`."""
    if not isinstance(points, list):
        return points
    out = json.loads(json.dumps(points))
    for point in out:
        scenario = point.get("scenario") if isinstance(point, dict) else None
        for *parents, key in _PLACES:
            node = scenario
            for part in parents:
                node = node.get(part) if isinstance(node, dict) else None
            if isinstance(node, dict):
                node.pop(key, None)
    return out


def _difference(old: Any, new: Any, where: str = "points",
                explicit: Any = _UNKNOWN) -> str | None:
    """The first place where two JSON values differ, in words; None when equal.

    ``explicit`` walks beside ``new`` (see :func:`points_difference`)."""
    if isinstance(old, dict) and isinstance(new, dict) and old.keys() <= new.keys() \
            and not any(_explicit(explicit, k) is not _AT_DEFAULT
                        for k in new.keys() - old.keys()):
        pairs = [(f"{where}.{k}", old[k], new[k], _explicit(explicit, k)) for k in old]
    elif isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        pairs = [(f"{where}[{i}]", a, b, _explicit(explicit, i))
                 for i, (a, b) in enumerate(zip(old, new))]
    elif old == new:
        return None
    elif isinstance(old, list) and isinstance(new, list):
        return f"{where}: {len(old)} before, {len(new)} now"
    elif isinstance(old, dict) and isinstance(new, dict):
        added, gone = sorted(new.keys() - old.keys()), sorted(old.keys() - new.keys())
        return f"{where}: " + "; ".join(
            [f"{', '.join(added)} set now, not before"] * bool(added)
            + [f"{', '.join(gone)} set before, not now"] * bool(gone))
    else:
        short = [t if len(t) <= 60 else t[:57] + "..."
                 for t in (json.dumps(old, default=str), json.dumps(new, default=str))]
        return f"{where}: {short[0]} before, {short[1]} now"
    return next((d for d in (_difference(a, b, w, e) for w, a, b, e in pairs) if d),
                None)


def _explicit(explicit: Any, key: str | int) -> Any:
    """The explicit dump below ``key``: :data:`_AT_DEFAULT` where it has nothing there."""
    if explicit is _UNKNOWN or explicit is _AT_DEFAULT:
        return explicit
    if isinstance(explicit, dict):
        return explicit.get(key, _AT_DEFAULT)
    if isinstance(explicit, list) and isinstance(key, int) and key < len(explicit):
        return explicit[key]
    return _UNKNOWN


def _manifest(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        return {}


def point_status(run_dir: Path) -> str:
    return _manifest(run_dir).get("status", "pending")


def archive(folder: Path, label: str, stamp: str) -> None:
    """Move an earlier attempt aside so a rerun never mixes with (or loses) it."""
    src = folder / label
    if src.is_dir() and any(src.iterdir()):
        dest = folder / "history" / stamp / label
        dest.parent.mkdir(parents=True, exist_ok=True)
        src.rename(dest)


def annotate(run_dir: Path, point: SweepPoint, status: str, error: str | None) -> None:
    """Mark the point's manifest with the engine and sweep point (and a failure)."""
    manifest = _manifest(run_dir) or {"name": point.scenario.name, "status": status}
    manifest.update(engine=ENGINE, sweep_point={"index": point.index,
                                                "label": point.label,
                                                "axes": point.values})
    if status == "failed":
        manifest.update(status="failed", error=error)
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_json(run_dir / "manifest.json", manifest)


def _axis_column(values: list[Any]) -> list[Any]:
    """Values as they are when they share one scalar kind, else JSON strings."""
    kinds = {float if isinstance(v, int | float) and not isinstance(v, bool)
             else type(v) for v in values if v is not None}
    if len(kinds) == 1 and kinds <= {bool, float, str}:
        return [math.nan if v is None and kinds == {float} else v for v in values]
    return [json.dumps(v, default=str) for v in values]


def write_table(folder: Path) -> None:
    table = sweep_table(folder)
    for suffix in ("parquet", "csv"):
        tmp = folder / f"sweep.{suffix}.tmp"
        if suffix == "parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_csv(tmp, index=False)
        tmp.replace(folder / f"sweep.{suffix}")


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    tmp.replace(path)
