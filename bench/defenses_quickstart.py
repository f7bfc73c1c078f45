"""Every registered defense at its default strength on every tier of the quickstart.

For each defense of the registry and each seed, runs ``scenarios/quickstart.yaml`` with
``tiers.*.defense={name: <defense>}`` (in-process engine, no Flower or Ray; the seed
draws the partition and the initial weights, so defenses are compared on the same
devices), then reads the deployed models back and scores each tier:

* ``acc``: mean device accuracy (``tiers.parquet``; ~100 test images per tier) and the
  accuracy on the held-out evaluation split (~270 images, the same for every tier and
  defense, so the comparison with ``none`` is paired and less noisy); a defense's
  cost is counted in held-out points;
* ``nz``: share of non-zero elements of the edge's output *before* the defense's random
  transform (the noise or mask it adds when sending), i.e. what the encoder computes,
  and in brackets the non-zeros per sample (SiftFunnel's "effective information
  volume");
* ``dCor``: bias-corrected dCor^2(x, z) of that output (U-centred, float64, up to 512
  images; :func:`analysis.metrics.bias_corrected_dcor2`);
* ``failed``: seeds where the tier collapsed (non-zero share < 1%, or the mean
  per-element standard deviation across images < 1% of the mean |z|, the criterion of
  ``bench/collapse_study.py``) or did not learn the task although its features vary
  (held-out accuracy below 1.5 x chance).

With ``--adversary`` the quickstart's curious cloud attacks every run (inverse network;
a few minutes more per run) and the worst-case SSIM per tier is added. Finished run
directories under ``--out`` are reused, so an interrupted sweep continues and the
table can be rebuilt without training again. Usage, from the repository root::

    nice -n 5 python bench/defenses_quickstart.py --adversary --seeds 0 1
    python bench/defenses_quickstart.py --defenses none siftfunnel --out /tmp/smoke \
        --set training.rounds=2 --set 'training.edge_loss_warmup={hold: 0, ramp: 1}'
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from analysis.metrics import bias_corrected_dcor2
from simulator.engine.local import run_locally
from simulator.engine.workspace import ModelKit
from simulator.loading import load_scenario
from simulator.records import read_checkpoints
from simulator.run import attack_run, build_workspace, run_scenario
from strategies.defenses import DEFENSES

SCENARIO = "scenarios/quickstart.yaml"
NONZERO_MIN = 0.01     # below: (almost) all-zero features
SPREAD_MIN = 0.01      # below: features (almost) constant over images
CHANCE_FACTOR = 1.5    # accuracy below this x chance: the tier did not learn


def run_one(defense: str, seed: int, out: Path, sets: list[str], adversary: bool) -> Path:
    """The run directory of ``defense`` on every tier at ``seed`` (trained unless
    complete)."""
    path = out / f"{defense}-seed{seed}"
    manifest = path / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("status") == "complete":
        tiers = pd.read_parquet(path / "tiers.parquet")
        if adversary and "ssim_worst_case_mean" not in tiers:
            print(f"  {defense} seed {seed}: attacking the trained run", flush=True)
            attack_run(path, executor="local")   # the run's own attack stage, in here
        return path
    overrides = [f"tiers.*.defense={{name: {defense}}}", f"seed={seed}",
                 f"adversary.enabled={'true' if adversary else 'false'}", *sets]
    scenario = load_scenario(SCENARIO, overrides)
    resume = manifest.is_file()
    t0 = time.perf_counter()

    def progress(stage: str, done: int, total: int, note: str) -> None:
        print(f"  {defense} seed {seed}: {stage} {done}/{total} {note} "
              f"({time.perf_counter() - t0:.0f} s)", flush=True)

    run_scenario(scenario, path, progress, transport_factory=run_locally, resume=resume)
    return path


@torch.no_grad()
def evaluate(path: Path, seed: int, sets: list[str], defense: str) -> dict[str, dict]:
    """Per tier of one run: accuracies, feature statistics, worst-case SSIM, verdict."""
    scenario = load_scenario(SCENARIO, [f"tiers.*.defense={{name: {defense}}}",
                                        f"seed={seed}", *sets])
    ws = build_workspace(scenario)
    kit = ModelKit(ws)
    edges, cloud_state = read_checkpoints(path)
    cloud = kit.cloud()
    cloud.load_state_dict(cloud_state)
    cloud.eval()
    tiers = pd.read_parquet(path / "tiers.parquet").set_index("tier")
    chance = 1.0 / ws.num_classes
    x_eval, y_eval = torch.from_numpy(ws.eval_x), torch.from_numpy(ws.eval_y)
    out = {}
    for tier in (t.name for t in scenario.tiers):
        edge = kit.edge(tier)
        edge.load_state_dict(edges[tier])
        edge.eval()
        idx = np.concatenate([d.test_idx for d in ws.population.devices if d.tier == tier])
        x, _ = ws.batch(idx)
        z = edge(x)  # what the encoder computes, before the defense's random transform
        nonzero = float((z.abs() > 1e-6).float().mean())
        spread = float(z.flatten(1).std(0).mean() / (z.abs().mean() + 1e-12))
        sent = kit.defenses[tier].transform(edge(x_eval), training=False,
                                            generator=torch.Generator().manual_seed(seed))
        heldout = float((cloud(sent, tier).argmax(1) == y_eval).float().mean())
        acc = float(tiers.loc[tier, "accuracy_mean"])
        ssim = "ssim_worst_case_mean"
        collapsed = nonzero < NONZERO_MIN or spread < SPREAD_MIN
        out[tier] = {"acc": acc, "heldout": heldout, "n_heldout": len(y_eval),
                     "nonzero": nonzero, "spread": spread,
                     "volume": float((z.abs() > 1e-6).flatten(1).sum(1).float().mean()),
                     "dcor": bias_corrected_dcor2(x, z),
                     "ssim": float(tiers.loc[tier, ssim]) if ssim in tiers else np.nan,
                     "collapsed": collapsed,
                     # features vary but the task was not learned: a failed tier too
                     "chance": not collapsed and heldout < CHANCE_FACTOR * chance}
    return out


def aggregate(per_seed: list[dict[str, dict]]) -> dict[str, dict]:
    """Means over seeds; failure counts (collapsed or at chance) over seeds."""
    out = {}
    for tier in per_seed[0]:
        rows = [r[tier] for r in per_seed]
        agg = {k: float(np.mean([r[k] for r in rows]))
               for k in ("acc", "heldout", "nonzero", "volume", "dcor", "ssim")}
        agg["failed"] = sum(r["collapsed"] or r["chance"] for r in rows)
        agg["collapsed"] = sum(r["collapsed"] for r in rows)
        agg["seeds"] = len(rows)
        out[tier] = agg
    return out


def table(results: dict[str, dict[str, dict]], adversary: bool) -> str:
    """Markdown: one row per defense; accuracy per tier (points vs none), failures,
    worst-case SSIM and the encoder's non-zero share and dCor^2 per tier."""
    tiers = list(next(iter(results.values())))
    base = results.get("none")
    head = ["defense", *(f"acc {t}" for t in tiers), "largest cost"]
    if adversary:
        head += [f"SSIM {t}" for t in tiers]
    head += [*(f"nz {t}" for t in tiers), *(f"dCor {t}" for t in tiers), "failed tiers"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, res in results.items():
        cells = [name]
        costs = []
        for t in tiers:
            cell = f"{res[t]['acc']:.3f} / {res[t]['heldout']:.3f}"
            if base and name != "none":
                costs.append(100 * (base[t]["heldout"] - res[t]["heldout"]))
                cell += f" ({-costs[-1]:+.1f})"
            cells.append(cell)
        cells.append(f"{max(costs):.1f}" if costs else "")
        if adversary:
            cells += [f"{res[t]['ssim']:.3f}" for t in tiers]
        cells += [f"{res[t]['nonzero']:.2f} ({res[t]['volume']:.0f})" for t in tiers]
        cells += [f"{res[t]['dcor']:.3f}" for t in tiers]
        failed = [f"{t} {res[t]['failed']}/{res[t]['seeds']}" for t in tiers
                  if res[t]["failed"]]
        cells.append(", ".join(failed) if failed else "none")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--defenses", nargs="+", default=None,
                        help="registry names (default: all, none first)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0],
                        help="scenario seeds (data partition and initial weights)")
    parser.add_argument("--set", dest="sets", action="append", default=[],
                        help="extra scenario override, e.g. training.rounds=2")
    parser.add_argument("--adversary", action="store_true",
                        help="attack every run; adds worst-case SSIM per tier")
    parser.add_argument("--out", type=Path, default=Path("runs/defenses_quickstart"),
                        help="run directories (one per defense and seed, reused)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    names = args.defenses or ["none", *(n for n in DEFENSES.names() if n != "none")]
    t0 = time.perf_counter()
    results = {}
    for name in names:
        per_seed = []
        for seed in args.seeds:
            path = run_one(name, seed, args.out, args.sets, args.adversary)
            per_seed.append(evaluate(path, seed, args.sets, name))
            print(f"{name} seed {seed}: " + ", ".join(
                f"{t} acc {r['acc']:.3f}/{r['heldout']:.3f} nz {r['nonzero']:.2f} "
                f"dCor {r['dcor']:.3f}" + (" COLLAPSED" if r["collapsed"] else "")
                + (" AT CHANCE" if r["chance"] else "")
                for t, r in per_seed[-1].items()), flush=True)
        results[name] = aggregate(per_seed)
    sets = " ".join(f"--set '{s}'" for s in args.sets)
    n_eval = per_seed[0][next(iter(per_seed[0]))]["n_heldout"]
    print(f"\nquickstart, every tier with the defense at its defaults {sets} "
          f"(seeds {' '.join(map(str, args.seeds))}, means; in-process engine). acc: "
          f"mean device accuracy / accuracy on the {n_eval} held-out evaluation images "
          "(points vs none); largest cost: the most held-out points lost on any tier; "
          "nz: non-zero share (per sample) of the edge output before the random "
          "transform; dCor: bias-corrected dCor^2(x, z) on the devices' test images; "
          "failed: seeds where the tier collapsed or stayed at chance\n")
    print(table(results, args.adversary))
    print(f"\n{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
