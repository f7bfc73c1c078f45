"""Leakage against the attacker's budget: does a defense look strong only because the
attacker was small?

For each finished run directory given, reruns the curious cloud on a copy (``siftsim
attack``, as a user would; the run itself is untouched) with the inverse network
searched over decoder width x auxiliary images, then draws every run's tiers side by
side (one panel per run and tier, a line per width, SSIM against auxiliary size with
95% intervals over devices) and prints the grid. Usage, from the repository root::

    siftsim sweep scenarios/siftfunnel_ablation.yaml      # or any finished runs
    python bench/attack_budget.py runs/siftfunnel_ablation-sweep/p000 \\
        runs/siftfunnel_ablation-sweep/p008 --out docs/attack_budget.png

``--keep DIR`` keeps the attacked copies (``DIR/<run name>``); a copy that already holds
the same grid's ``attack_budgets.parquet`` is read, not attacked again.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]


def grid_attack(widths: list[int], aux: list[int], epochs: int) -> str:
    """The ``adversary.attacks`` override: one searched black-box inverse network."""
    return ("adversary.attacks=[{name: inverse_network, threat_model: black_box_query, "
            f"epochs: {epochs}, search: {{width: {widths}, aux_size: {aux}}}}}]")


def attacked_copy(run: Path, copy: Path, attack: str) -> pd.DataFrame:
    """The copy's attack budgets, attacking it first unless it holds this grid."""
    table = copy / "attack_budgets.parquet"
    stamp = copy / "attack_budget.json"
    if table.is_file() and stamp.is_file() and json.loads(stamp.read_text()) == attack:
        print(f"[budget] {run}: reusing {table}", flush=True)
        return pd.read_parquet(table)
    if copy.exists():
        shutil.rmtree(copy)
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("history"))
    print(f"[budget] {run}: attacking a copy in {copy}", flush=True)
    subprocess.run([sys.executable, "-m", "simulator", "attack", str(copy), "--set", attack,
                    "--set", "adversary.information.enabled=false"], check=True, cwd=REPO)
    stamp.write_text(json.dumps(attack))
    return pd.read_parquet(table)


def run_label(run: Path) -> str:
    """The run's defense (each run's tiers are told apart by it)."""
    tiers = pd.read_parquet(run / "tiers.parquet")
    return "/".join(dict.fromkeys(tiers["defense"].astype(str)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished run directories")
    parser.add_argument("--widths", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--aux", type=int, nargs="+", default=[250, 500, 1000, 2000])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=Path("attack_budget.png"))
    parser.add_argument("--keep", type=Path, default=None)
    args = parser.parse_args()
    for run in args.runs:
        if not (run / "tiers.parquet").is_file():
            parser.error(f"{run} is not a finished run directory (no tiers.parquet): "
                         "give directories written by `siftsim run` or `siftsim sweep`")
    attack = grid_attack(args.widths, args.aux, args.epochs)
    scratch = args.keep or Path(tempfile.mkdtemp(prefix="siftsim-budget-"))
    parts = []
    for i, run in enumerate(args.runs):
        budgets = attacked_copy(run, scratch / f"{i:02d}-{run.name}", attack)
        label = run_label(run)
        parts.append(budgets.assign(tier=budgets["tier"].astype(str) + f" ({label})"))
    budgets = pd.concat(parts, ignore_index=True)

    from analysis.figures.search import leakage_vs_attack_budget
    from analysis.search import settings
    fig = leakage_vs_attack_budget(budgets, "aux_size")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    grid = pd.concat([budgets[["tier"]], settings(budgets),
                      budgets[["ssim", "ssim_lo", "ssim_hi", "attack_acc", "nn_ident",
                               "cpu_seconds"]]], axis=1)
    print(grid.round(3).to_string(index=False))
    print(f"[budget] figure: {args.out}")
    if args.keep is None:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
