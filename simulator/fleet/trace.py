"""Device traces: a fleet's hardware read from a table instead of drawn.

A trace is a CSV or parquet file with profile columns (``compute_gflops``,
``uplink_mbps``, ``memory_mb``, ``availability``; at least one of them) and two layouts:

- one row per device (no ``share`` column): the devices that read the trace take its
  rows in order, or a seeded subset of distinct rows when the trace is longer;
- one row per device type, with a positive ``share``: each device draws a row with
  probability proportional to its share, from the device's own derived seed.

An optional text column ``device_type`` names the row (it shows in the device's
origin). Profile columns the trace lacks come from the scenario's profile.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from simulator.seeding import rng

__all__ = ["DeviceTrace", "TraceError", "PROFILE_BOUNDS", "read_trace"]

# Column -> (exclusive lower bound, inclusive upper bound): as the profile fields.
PROFILE_BOUNDS = {"compute_gflops": (0.0, np.inf), "uplink_mbps": (0.0, np.inf),
                  "memory_mb": (0.0, np.inf), "availability": (0.0, 1.0)}
_EXTRA = ("share", "device_type")


class TraceError(ValueError):
    """A trace file that cannot describe a fleet; the message names file and column."""


@dataclass(frozen=True)
class DeviceTrace:
    """A validated trace.

    Attributes
    ----------
    path
        The file, as given.
    table
        Profile columns (float), ``share`` if per device type, ``device_type`` if given.
    """

    path: str
    table: pd.DataFrame

    @property
    def per_type(self) -> bool:
        return "share" in self.table.columns

    @property
    def columns(self) -> tuple[str, ...]:
        """The profile columns this trace sets."""
        return tuple(c for c in PROFILE_BOUNDS if c in self.table.columns)

    def row(self, i: int) -> dict[str, float]:
        """Row ``i``'s profile numbers."""
        return {c: float(self.table[c].iat[i]) for c in self.columns}

    def origin(self, i: int) -> str:
        """Where a device's numbers came from, for its record."""
        name = f" ({self.table['device_type'].iat[i]})" \
            if "device_type" in self.table.columns else ""
        return f"trace {self.path} row {i}{name}"

    def rows_for(self, device_seeds: Sequence[int], seed: int) -> np.ndarray:
        """The row each device reads.

        Parameters
        ----------
        device_seeds
            Derived seeds of the devices reading this trace, in device order.
        seed
            A seed for the subset of rows when one row per device and the trace is
            longer than the fleet.
        """
        n, m = len(device_seeds), len(self.table)
        if self.per_type:
            share = self.table["share"].to_numpy(float)
            p = share / share.sum()
            return np.array([rng(s, "trace").choice(m, p=p) for s in device_seeds],
                            dtype=np.int64)
        if m < n:
            raise TraceError(f"{self.path}: one row per device (no `share` column), "
                             f"but {m} rows for {n} devices; add rows, or a `share` "
                             "column to draw devices from device types")
        if m == n:
            return np.arange(n)
        return np.sort(rng(seed, "trace-rows").choice(m, n, replace=False))


def read_trace(path: str | Path) -> DeviceTrace:
    """Read and check a device trace (CSV or parquet, by suffix).

    Raises
    ------
    TraceError
        Missing file, unknown suffix, unknown or missing columns, non-numeric or
        out-of-range values; each message names the file (and column, and first bad
        row).
    """
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"{path}: trace file not found (paths are relative to the "
                         "working directory)")
    try:
        if path.suffix == ".csv":
            table = pd.read_csv(path)
        elif path.suffix in (".parquet", ".pq"):
            table = pd.read_parquet(path)
        else:
            raise TraceError(f"{path}: a trace is a .csv or .parquet file")
    except (ValueError, OSError) as err:
        if isinstance(err, TraceError):
            raise
        raise TraceError(f"{path}: cannot be read ({err})") from None
    return DeviceTrace(str(path), _checked(table, str(path)))


def _checked(table: pd.DataFrame, path: str) -> pd.DataFrame:
    unknown = [c for c in table.columns if c not in PROFILE_BOUNDS and c not in _EXTRA]
    if unknown:
        raise TraceError(f"{path}: unknown column(s) {unknown}; a trace has "
                         f"{list(PROFILE_BOUNDS)}, optional {list(_EXTRA)}")
    if not any(c in table.columns for c in PROFILE_BOUNDS):
        raise TraceError(f"{path}: no profile column; give at least one of "
                         f"{list(PROFILE_BOUNDS)}")
    if table.empty:
        raise TraceError(f"{path}: no rows")
    bounds = {**PROFILE_BOUNDS, "share": (0.0, np.inf)}
    out = table.copy()
    for col, (low, high) in bounds.items():
        if col not in table.columns:
            continue
        values = pd.to_numeric(table[col], errors="coerce").to_numpy(float)
        bad = ~np.isfinite(values) | (values <= low) | (values > high)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            allowed = f"in ({low:g}, {high:g}]" if np.isfinite(high) else f"> {low:g}"
            raise TraceError(f"{path}: column {col!r} row {i}: must be a number "
                             f"{allowed} (got {table[col].iat[i]!r}; "
                             f"{int(bad.sum())} bad row(s))")
        out[col] = values
    return out.reset_index(drop=True)
