"""Who trained how often: participation and stragglers beside utility and leakage.

Reads the participation tallies the simulator records per device (``rounds_selected``,
``rounds_completed``, ``rounds_dropped``, ``rounds_straggled``, ``busy_s``,
``bytes_sent``, ``unable``) and the long leakage table; recomputes nothing.
"""

from __future__ import annotations

import pandas as pd

from analysis.figures.budget import ladder_order
from analysis.rundir import WORST_CASE, attacks_in

__all__ = ["PARTICIPATION", "UNABLE", "has_participation", "participation_summary",
           "stragglers"]

PARTICIPATION = ("rounds_selected", "rounds_completed", "rounds_dropped",
                 "rounds_straggled", "busy_s", "bytes_sent")
UNABLE = "(unable)"   # the row of devices that fit no rung


def has_participation(devices: pd.DataFrame) -> bool:
    """Whether ``devices`` holds the participation tallies (runs of siftsim >= the
    virtual clock)."""
    return set(PARTICIPATION) <= set(devices.columns)


def _device_leakage(leakage: pd.DataFrame | None) -> tuple[pd.Series | None, str]:
    """Per-device SSIM of the worst case (else the first attack), by device id."""
    attacks = attacks_in(leakage)
    if not attacks:
        return None, ""
    attack = WORST_CASE if WORST_CASE in attacks else attacks[0]
    rows = leakage[(leakage["scope"] == "device") & (leakage["attack"] == attack)
                   & (leakage["metric"] == "ssim")]
    return rows.set_index(rows["device_id"].astype("int64"))["value"], attack


def participation_summary(devices: pd.DataFrame,
                          leakage: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per rung: devices, how often they were selected, completed, straggled or
    dropped out, how many never completed a round, busy time and bytes sent, next to
    accuracy and leakage; devices unable to serve any rung in a last row.

    Parameters
    ----------
    devices : DataFrame
        A device table with the participation tallies.
    leakage : DataFrame, optional
        The long leakage table; adds the mean per-device SSIM (worst case).
    """
    missing = [c for c in PARTICIPATION if c not in devices.columns]
    if missing:
        raise ValueError(f"devices lacks participation columns {missing}: the run was "
                         "recorded before the virtual clock")
    d = devices.reset_index(drop=True)
    tier = d["tier"].astype(object).where(d["tier"].notna(), UNABLE).astype(str)
    ssim, attack = _device_leakage(leakage)
    rows = []
    for name, g in d.groupby(tier, sort=False):
        row = {"tier": name, "devices": len(g),
               "selected / device": g["rounds_selected"].mean(),
               "completed / device": g["rounds_completed"].mean(),
               "straggled / device": g["rounds_straggled"].mean(),
               "dropped / device": g["rounds_dropped"].mean(),
               "never completed": int((g["rounds_completed"] == 0).sum()),
               "straggled at least once": int((g["rounds_straggled"] > 0).sum()),
               "busy s / device": g["busy_s"].mean(),
               "MB sent": g["bytes_sent"].sum() / 1e6}
        if "accuracy" in g:
            row["accuracy"] = g["accuracy"].mean()
        if ssim is not None:
            row[f"SSIM {attack}"] = ssim.reindex(g["device_id"].astype("int64")).mean()
        rows.append(row)
    out = pd.DataFrame(rows)
    served = d[d["tier"].notna()]
    order = ladder_order(served) + [t for t in out["tier"] if t == UNABLE]
    return out.set_index("tier").loc[order].reset_index()


def stragglers(devices: pd.DataFrame, leakage: pd.DataFrame | None = None,
               top: int = 10) -> pd.DataFrame:
    """The devices that straggled most (then: completed least), with their hardware,
    accuracy and leakage; empty when no device straggled."""
    d = devices[devices["rounds_straggled"] > 0].copy()
    d = d.sort_values(["rounds_straggled", "rounds_completed", "device_id"],
                      ascending=[False, True, True]).head(top)
    cols = [c for c in ("device_id", "tier", "compute_gflops", "uplink_mbps",
                        "rounds_selected", "rounds_completed", "rounds_straggled",
                        "busy_s", "accuracy") if c in d.columns]
    out = d[cols].reset_index(drop=True)
    ssim, attack = _device_leakage(leakage)
    if ssim is not None:
        out[f"SSIM {attack}"] = ssim.reindex(out["device_id"].astype("int64")).to_numpy()
    return out

