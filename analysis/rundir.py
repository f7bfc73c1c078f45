"""Read a run directory (written by ``siftsim run``) into plain pandas / NumPy objects.

The simulator records, analysis reads: nothing here imports the simulator, starts Ray
or recomputes a metric. A notebook can ``load_run(path)`` and redraw any figure.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["ATTACK_BUDGET_COLUMNS", "INFORMATION", "Run", "RunDirectoryError",
           "WORST_CASE", "attacks_in", "is_sweep_dir", "load_run", "load_sweep",
           "load_sweep_leakage", "sweep_axes"]

# ``attack`` values of the long leakage table that are not attacks of the scenario:
# per device and metric the most leaking attack, and tier-level information metrics.
WORST_CASE = "worst_case"
INFORMATION = "information"

# Columns of ``attack_budgets`` (simulator.budgets.COLUMNS; analysis does not import
# the simulator, a test keeps the two equal).
ATTACK_BUDGET_COLUMNS = ("tier", "attack", "threat_model", "setting", "worst",
                         "aux_images", "oracle_queries", "optimisation_steps",
                         "cpu_seconds", "devices", "ssim", "psnr", "mse", "attack_acc",
                         "nn_ident", "recognisable", "ssim_lo", "ssim_hi")


def _no_budgets() -> pd.DataFrame:
    """An empty ``attack_budgets`` table, so readers need no special case."""
    return pd.DataFrame(columns=list(ATTACK_BUDGET_COLUMNS))


class RunDirectoryError(ValueError):
    """A run (or sweep) directory lacks a file, or holds one that cannot be read."""


@dataclass(frozen=True, eq=False)  # DataFrames have no single truth value
class Run:
    """One run directory, read.

    Attributes
    ----------
    path : Path
        The run directory.
    manifest : dict
        ``manifest.json``: name, seed, status, phases, versions, git revision and the
        resolved scenario.
    devices, tiers, rounds : DataFrame
        The per-device, per-tier and per-(round, tier) tables (the leakage columns of
        ``devices``/``tiers`` are wide views of ``leakage``).
    leakage_images : DataFrame or None
        One row per reconstructed image; None when no adversary ran.
    leakage : DataFrame or None
        The leakage record, one row per observation: ``scope`` (device | tier),
        ``device_id``, ``tier``, ``attack`` (``worst_case``, ``information``),
        ``threat_model``, ``metric``, ``value``, ``lo``, ``hi``, ``n``,
        ``chosen_attack``, ``estimator``. None when no adversary ran.
    reconstructions : dict
        ``(attack, tier) -> {"original", "reconstruction", "device_id"}`` arrays.
    participation : DataFrame or None
        One row per (round, selected device) on the virtual clock: ``status``
        (completed, late, dropped, straggled, cancelled), work, busy seconds, bytes;
        None for runs recorded before it existed.
    budgets : DataFrame
        ``attack_budgets``: one row per (tier, attack, grid point) with ``setting``
        (JSON, ``""`` unsearched), ``worst`` (the point ``leakage`` holds), what the
        attacker spent and the point's tier leakage. Empty (same columns) when no
        adversary ran or the run predates the table.
    """

    path: Path
    manifest: dict[str, Any]
    devices: pd.DataFrame
    tiers: pd.DataFrame
    rounds: pd.DataFrame
    leakage_images: pd.DataFrame | None = None
    reconstructions: dict[tuple[str, str], dict[str, np.ndarray]] = field(
        default_factory=dict)
    leakage: pd.DataFrame | None = None
    participation: pd.DataFrame | None = None
    budgets: pd.DataFrame = field(default_factory=_no_budgets)

    @property
    def name(self) -> str:
        return str(self.manifest.get("name") or self.path.name)

    @property
    def scenario(self) -> dict[str, Any]:
        return dict(self.manifest.get("scenario") or {})

    @property
    def attacks(self) -> list[str]:
        """Attacks in the leakage table (``worst_case`` last); [] when none ran."""
        return attacks_in(self.leakage)


def attacks_in(leakage: pd.DataFrame | None) -> list[str]:
    """Attack labels of a long leakage table (or ``leakage_images``), from its
    ``attack`` column: sorted, ``worst_case`` last, ``information`` left out.

    Raises
    ------
    ValueError
        When ``leakage`` has no ``attack`` column (a wide device or tier table: the
        attacks are not read back from column names).
    """
    if leakage is None:
        return []
    if "attack" not in leakage.columns:
        raise ValueError("attacks_in needs a long leakage table with an 'attack' "
                         "column (Run.leakage or Run.leakage_images), got columns "
                         f"{list(leakage.columns)[:8]}...")
    names = {str(a) for a in leakage["attack"].dropna().unique()} - {INFORMATION}
    last = [WORST_CASE] if WORST_CASE in names else []
    return sorted(names - {WORST_CASE}) + last


def load_run(path: str | Path) -> Run:
    """Read the run directory ``path``.

    Raises
    ------
    RunDirectoryError
        When ``path`` is not a run directory or lacks a table, naming the file and
        what produces it.
    """
    path = Path(path)
    if not path.is_dir():
        raise RunDirectoryError(f"run directory {path} does not exist (or is not a "
                                "directory): give a directory written by `siftsim run`")
    if is_sweep_dir(path):
        raise RunDirectoryError(f"{path} is a sweep directory: read it with "
                                "load_sweep(), or give one point's run_dir")
    manifest = _read_manifest(path)
    state = _status_note(manifest)
    devices = _read_table(path, "devices", f"the run did not finish inference{state}; "
                          "rerun `siftsim run SCENARIO`")
    tiers = _read_table(path, "tiers", f"the run did not finish inference{state}; "
                        "rerun `siftsim run SCENARIO`")
    rounds = _read_table(path, "rounds", f"the run did not finish training{state}; "
                         "rerun `siftsim run SCENARIO`")
    images, leakage = _read_leakage(path)
    tier_names = [str(t) for t in tiers["tier"]] if "tier" in tiers else []
    part = path / "participation.parquet"
    budgets = path / "attack_budgets.parquet"
    return Run(path, manifest, devices, tiers, rounds, leakage_images=images,
               reconstructions=_read_reconstructions(path / "reconstructions",
                                                     tier_names),
               leakage=leakage,
               participation=_read_parquet(part) if part.is_file() else None,
               budgets=_read_parquet(budgets) if budgets.is_file() else _no_budgets())


def _read_leakage(path: Path) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """``leakage_images`` and the long ``leakage`` table, or None for both.

    A run attacked by an older siftsim has per-image records but no long table; its
    wide columns are not parsed back, so it is an error rather than "no leakage".
    """
    images_file, long_file = path / "leakage_images.parquet", path / "leakage.parquet"
    if not images_file.is_file():
        return None, None
    if not long_file.is_file():
        raise RunDirectoryError(
            f"{path} has leakage_images.parquet but no leakage.parquet: it was "
            f"attacked by an older siftsim; rerun `siftsim attack {path}` to record "
            "the long leakage table")
    return _read_parquet(images_file), _read_parquet(long_file)


def is_sweep_dir(path: str | Path) -> bool:
    """A sweep directory: ``sweep.json`` or ``sweep.parquet`` and no manifest."""
    path = Path(path)
    return not (path / "manifest.json").is_file() and (
        (path / "sweep.parquet").is_file() or (path / "sweep.json").is_file())


def load_sweep(path: str | Path) -> pd.DataFrame:
    """The ``sweep.parquet`` table of a sweep directory (one row per point and tier).

    The axis paths (from ``sweep.json``) are kept in ``table.attrs["axes"]``; see
    :func:`sweep_axes`; the directory in ``table.attrs["path"]`` (where a moved
    folder's points are found by name).
    """
    path = Path(path)
    if not path.is_dir():
        raise RunDirectoryError(f"sweep directory {path} does not exist")
    table = _read_table(path, "sweep", "the sweep has not finished its first point; "
                        "rerun `siftsim sweep SCENARIO`")
    table.attrs["path"] = str(path)
    try:
        record = json.loads((path / "sweep.json").read_text())
        table.attrs["axes"] = [str(a) for a in record.get("axes", [])]
    except (OSError, json.JSONDecodeError, AttributeError):
        pass  # sweep_axes() falls back to the table's layout
    return table


def load_sweep_leakage(path: str | Path) -> pd.DataFrame | None:
    """The long leakage tables of a sweep's complete points, stacked with ``point``.

    Points without an adversary add nothing; None when no point has leakage.
    """
    path = Path(path)
    table = load_sweep(path)
    if not {"point", "run_dir"} <= set(table.columns):
        return None
    if "status" in table.columns:
        table = table[table["status"].astype(str) == "complete"]
    frames = []
    for point, run_dir in table.drop_duplicates("point")[["point", "run_dir"]].values:
        run = Path(str(run_dir))
        if not run.is_dir():  # a sweep folder moved since: its points sit inside it
            run = path / run.name
        _, leakage = _read_leakage(run)
        if leakage is not None:
            frames.append(leakage.assign(point=point))
    return pd.concat(frames, ignore_index=True) if frames else None


def sweep_axes(table: pd.DataFrame) -> list[str]:
    """Axis columns of a sweep table: recorded axes, else those between point/status."""
    axes = [a for a in table.attrs.get("axes", []) if a in table.columns]
    if axes:
        return axes
    cols = list(table.columns)
    if "point" in cols and "status" in cols:
        return cols[cols.index("point") + 1: cols.index("status")]
    return []


def _read_manifest(path: Path) -> dict[str, Any]:
    file = path / "manifest.json"
    if not file.is_file():
        raise RunDirectoryError(f"no manifest.json in {path}: not a run directory "
                                "written by `siftsim run`")
    try:
        manifest = json.loads(file.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RunDirectoryError(f"cannot read {file}: {err}") from err
    if not isinstance(manifest, dict):
        raise RunDirectoryError(f"{file} holds a {type(manifest).__name__}, "
                                "expected a JSON object")
    return manifest


def _status_note(manifest: dict[str, Any]) -> str:
    status = manifest.get("status", "unknown")
    error = manifest.get("error")
    return f" (status {status!r}{': ' + str(error) if error else ''})"


def _read_table(path: Path, name: str, why: str) -> pd.DataFrame:
    parquet, csv = path / f"{name}.parquet", path / f"{name}.csv"
    if parquet.is_file():
        return _read_parquet(parquet)
    if csv.is_file():  # parquet is the record; CSV is its readable twin
        return pd.read_csv(csv)
    raise RunDirectoryError(f"no {name}.parquet in {path}: {why}")


def _read_parquet(file: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(file)
    except (OSError, ValueError) as err:
        raise RunDirectoryError(f"cannot read {file}: {err}") from err


def _read_reconstructions(folder: Path, tiers: list[str]
                          ) -> dict[tuple[str, str], dict[str, np.ndarray]]:
    out: dict[tuple[str, str], dict[str, np.ndarray]] = {}
    if not folder.is_dir():
        return out
    for file in sorted(folder.glob("*__*.npz")):
        attack, tier = _split_label(file.stem, tiers)
        try:
            with np.load(file, allow_pickle=False) as arrays:
                out[(attack, tier)] = {k: arrays[k] for k in arrays.files}
        except (OSError, ValueError) as err:
            raise RunDirectoryError(f"cannot read {file}: {err}") from err
    return out


def _split_label(stem: str, tiers: list[str]) -> tuple[str, str]:
    """``<attack>__<tier>``; labels may hold ``_``, so match known tiers first."""
    for tier in sorted(tiers, key=len, reverse=True):
        if stem.endswith(f"__{tier}") and len(stem) > len(tier) + 2:
            return stem[: -len(tier) - 2], tier
    attack, _, tier = stem.rpartition("__")
    return attack, tier
