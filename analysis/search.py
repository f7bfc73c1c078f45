"""The attacker's search grid as recorded: searched attacks, their settings, a table.

Reads ``attack_budgets`` (:attr:`analysis.rundir.Run.budgets`): one row per (tier,
attack, grid point) with the point's ``setting`` as JSON (``""`` when the attack
searched nothing), ``worst`` (the point the leakage records keep for that tier), what
the attacker spent and the point's tier leakage. Recomputes nothing.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd

from analysis.tables import with_ci

__all__ = ["BUDGETS", "METRICS", "search_table", "searched_attacks", "setting_label",
           "settings"]

BUDGETS = ("aux_images", "oracle_queries", "optimisation_steps", "cpu_seconds")
METRICS = ("ssim", "psnr", "mse", "attack_acc", "nn_ident", "recognisable")


def searched_attacks(budgets: pd.DataFrame) -> list[str]:
    """Attacks with a search grid (a non-empty ``setting``), in table order."""
    rows = budgets[_setting_text(budgets) != ""]
    return list(dict.fromkeys(rows["attack"].astype(str)))


def settings(budgets: pd.DataFrame) -> pd.DataFrame:
    """One column per searched parameter (JSON key order), aligned with ``budgets``;
    missing where a row's attack does not search that parameter."""
    parsed = [json.loads(text) if text else {} for text in _setting_text(budgets)]
    return pd.DataFrame(parsed, index=budgets.index)


def setting_label(values: dict) -> str:
    """``aux_size=24, width=8``; ``""`` for no searched parameter."""
    return ", ".join(f"{k}={v}" for k, v in values.items())


def search_table(budgets: pd.DataFrame) -> pd.DataFrame:
    """Every grid point of the searched attacks, per tier: its setting, whether the
    records keep it (``worst``), what it spent and its tier leakage."""
    rows = budgets[budgets["attack"].astype(str).isin(searched_attacks(budgets))]
    rows = rows.reset_index(drop=True)
    out = pd.DataFrame({"tier": rows["tier"], "attack": rows["attack"],
                        "setting": [setting_label(json.loads(text)) if text else ""
                                    for text in _setting_text(rows)],
                        "worst": np.where(rows["worst"].astype(bool), "WORST", "")})
    for col in (*BUDGETS, "devices"):
        out[col] = rows[col]
    out["SSIM (95% CI)"] = [with_ci(*v) for v in zip(
        rows["ssim"], rows["ssim_lo"], rows["ssim_hi"], strict=True)]
    for col, label in (("psnr", "PSNR dB"), ("mse", "MSE"),
                       ("recognisable", "SSIM>0.3"), ("nn_ident", "NN ident"),
                       ("attack_acc", "attack acc")):
        out[label] = rows[col]
    return out


def _setting_text(budgets: pd.DataFrame) -> pd.Series:
    return budgets["setting"].fillna("").astype(str)
