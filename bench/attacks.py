"""The attack stage against its limit: the attacks' own models at a saturating batch.

Runs a scenario as ``siftsim run`` does (Flower + Ray, the attack stage included), or
reruns only the attack stage on a copy of a finished run (``--run DIR``; the training
stage's seconds are then that run's), and prints:

* the training and attack stages' seconds and their ratio (target: the attack stage
  takes no longer than training);
* the stage's efficiency: the time the reference needs for the stage's useful work,
  divided by the stage's wall time (target >= 50%). Useful work, per unit, from the
  scenario's attack settings: a decoder trained on the auxiliary pairs (``epochs`` x
  training rows: forward, backward, Adam step), rMLE's input optimisation (``iterations``
  x reconstructed images through the tier's edge, or the shadow edge), a shadow or
  substitute edge trained through the frozen cloud (epochs x auxiliary images). The
  reference runs each of these steps in this one process with every core (torch's
  default threads) at the best of several batches. Work the model does not count
  (scoring, the evaluation classifier, the information metrics, attacks without a
  model here such as ``sdar``) costs stage time and adds no useful work.

Usage, from the repository root::

    python bench/attacks.py                                  # curious_cloud_mnist
    python bench/attacks.py --run runs/curious_cloud_mnist   # its attack stage again
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT = "scenarios/curious_cloud_mnist.yaml"
BATCHES = (64, 256)


@dataclass(frozen=True)
class Work:
    """Useful work of one unit: ``samples`` passes of a ``kind`` step on ``tier``."""

    tier: str
    kind: str       # "decoder", "rmle_edge", "rmle_shadow", "shadow"
    samples: int
    width: int = 0  # decoder / shadow channels
    depth: int = 0  # decoder extra blocks
    features: tuple[int, ...] = ()   # the tier's feature shape (C, H, W)
    attack: str = ""                 # the unit: its attack label and grid setting
    setting: str = ""

    @property
    def key(self) -> str:
        """The step measured once for every unit that runs it: decoders and shadow
        edges depend on the feature shape only; rMLE on the tier's own edge and shadow
        training on the tier's cloud (its adapter) on the tier."""
        where = self.tier if self.kind in ("rmle_edge", "shadow") else \
            "x".join(map(str, self.features))
        size = f" w{self.width}" + (f" d{self.depth}" if self.depth else "") \
            if self.width else ""
        return f"{self.kind}{size} {where}"


def unit_work(tier: str, name: str, params, n_aux: int, n_images: int) -> list[Work]:
    """The useful work of one attack unit (one grid point) on ``tier``."""
    p = params
    if name in ("inverse_network", "fora"):
        held = min(n_aux - 1, max(1, round(n_aux * p.held_out_fraction))) \
            if p.held_out_fraction > 0 else 0
        out = [Work(tier, "decoder", p.epochs * (n_aux - held), p.width, p.depth_extra)]
        if name == "fora":
            out.append(Work(tier, "shadow", p.substitute_epochs * n_aux,
                            p.substitute_width))
        return out
    if name == "rmle":
        return [Work(tier, "rmle_edge", p.iterations * n_images)]
    if name == "query_free":
        return [Work(tier, "shadow", p.shadow_epochs * n_aux, p.shadow_width),
                Work(tier, "rmle_shadow", p.iterations * n_images, p.shadow_width)]
    return []


def stage_work(run: Path) -> tuple[list[Work], list[str]]:
    """Every unit's work in an attacked run; the units not modelled, named."""
    from simulator.auxiliary import auxiliary_data
    from simulator.engine.workspace import ModelKit
    from simulator.loading import load_scenario
    from simulator.run import build_workspace
    from simulator.scenario import plugin_params
    from simulator.search import grid, point_spec, setting_text
    from strategies.attacks import ATTACKS
    sc = load_scenario(str(run / "scenario.yaml"))
    ws = build_workspace(sc)
    costs = ModelKit(ws).costs
    adv = sc.adversary
    n_aux_all = len(auxiliary_data(ws)[1])
    # the images each tier's attacks reconstructed (every attack the same rows)
    images = pd.read_parquet(run / "leakage_images.parquet", columns=["tier", "attack"])
    per_tier = images.groupby(["tier", "attack"]).size().groupby("tier").max()
    works, unmodelled = [], []
    for tier, n_images in per_tier.items():
        for spec in adv.attacks:
            for setting in grid(spec):
                point = point_spec(spec, setting) if setting else spec
                params = ATTACKS.get(point.name).Params(**plugin_params(point))
                n_aux = min(n_aux_all, point.aux_size or n_aux_all)
                w = [replace(x, features=tuple(costs[tier].feature_shape),
                             attack=spec.label or spec.name, setting=setting_text(setting))
                     for x in unit_work(tier, point.name, params, n_aux, n_images)]
                works += w
                if not w:
                    unmodelled.append(f"{point.label or point.name} on {tier}")
        if adv.information.enabled:
            unmodelled.append(f"information on {tier}")
    return works, unmodelled


def reference(run: Path, works: list[Work], seconds: float) -> dict[str, float]:
    """Samples/s of each distinct step of ``works`` at its best batch, this process."""
    import torch

    from simulator.auxiliary import auxiliary_data
    from simulator.engine.workspace import ModelKit
    from simulator.loading import load_scenario
    from simulator.records import read_checkpoints
    from simulator.run import build_workspace
    ws = build_workspace(load_scenario(str(run / "scenario.yaml")))
    kit = ModelKit(ws)
    edges, cloud_state = read_checkpoints(run)
    cloud = kit.cloud()
    cloud.load_state_dict(cloud_state)
    aux_x, aux_y = (torch.from_numpy(a) for a in auxiliary_data(ws))

    def batch(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = torch.arange(n) % len(aux_y)
        return aux_x[idx], aux_y[idx].long()

    rates: dict[str, float] = {}
    for work in {w.key: w for w in works}.values():
        step = _step(work, ws, kit, edges, cloud, batch)
        rates[work.key] = max(_rate(step, n, seconds) for n in BATCHES)
    return rates


def _step(work: Work, ws, kit, edges: dict, cloud, batch):
    """``step(n)``: one optimisation step of ``work``'s kind on ``n`` auxiliary images."""
    import torch
    import torch.nn.functional as F

    from strategies.attacks._common import (build_decoder, build_shadow_edge,
                                            frozen_copy, invert_by_optimisation)
    shape = work.features
    if work.kind == "decoder":
        model = build_decoder(shape, ws.image_shape, work.width, work.depth)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.5, 0.999))

        def loss(n: int) -> torch.Tensor:
            return F.mse_loss(model(torch.randn(n, *shape)), batch(n)[0])
    elif work.kind == "shadow":
        shadow = build_shadow_edge(ws.image_shape, shape, ws.normalization, work.width)
        view = frozen_copy(cloud.tier_view(work.tier))
        opt = torch.optim.Adam(shadow.parameters(), lr=1e-3)

        def loss(n: int) -> torch.Tensor:
            x, y = batch(n)
            return F.cross_entropy(view(shadow(x)), y)
    else:   # rMLE: one Adam step on n images through the edge or a shadow edge
        if work.kind == "rmle_edge":
            encoder = kit.edge(work.tier)
            encoder.load_state_dict(edges[work.tier])
        else:
            encoder = build_shadow_edge(ws.image_shape, shape, ws.normalization,
                                        work.width)
        encoder = frozen_copy(encoder)

        def rmle(n: int) -> None:
            x, _ = batch(n)
            with torch.no_grad():
                z = encoder(x)
            invert_by_optimisation(encoder, z, x.flip(0), iterations=1, lr=0.01,
                                   lambda_tv=0.05, chunk_size=n)
        return rmle

    def train(n: int) -> None:
        opt.zero_grad(set_to_none=True)
        loss(n).backward()
        opt.step()
    return train


def _rate(step, n: int, seconds: float) -> float:
    """Samples/s of ``step(n)`` after one warm-up call."""
    step(n)
    calls, t0 = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - t0 < seconds:
        step(n)
        calls += 1
    return calls * n / (time.perf_counter() - t0)


def _run_stage(scenario: str | None, run: Path | None, overrides: list[str],
               out: Path) -> Path:
    """A finished run with a fresh attack stage: a full ``siftsim run`` of
    ``scenario``, or ``run`` copied (its attack results left behind) and attacked."""
    if run is None:
        cmd = [sys.executable, "-m", "simulator", "run", scenario, "--out", str(out)]
    else:
        shutil.copytree(run, out, ignore=shutil.ignore_patterns("history"))
        cmd = [sys.executable, "-m", "simulator", "attack", str(out)]
    for item in overrides:
        cmd += ["--set", item]
    print("running: " + " ".join(cmd), flush=True)
    # the simulator's own progress lines go to this console as they come
    if subprocess.run(cmd, cwd=REPO).returncode != 0:
        raise SystemExit(f"the run failed; its directory is {out}")
    return out


def report(run: Path, seconds: float, scratch: Path) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    stages = manifest["stages"]
    train_s, attack_s = stages["train"]["seconds"], stages["attack"]["seconds"]
    works, unmodelled = stage_work(run)
    print("measuring the reference (every core, best batch) ...", flush=True)
    ref_file = scratch / "reference.json"
    subprocess.run([sys.executable, __file__, "--child", str(run), "--out", str(ref_file),
                    "--seconds", str(seconds)], cwd=REPO, check=True)
    rates = json.loads(ref_file.read_text())
    frame = pd.DataFrame([{"tier": w.tier, "attack": w.attack, "setting": w.setting,
                           "kind": w.kind, "samples": w.samples,
                           "ideal_s": w.samples / rates[w.key]} for w in works])
    budgets = pd.read_parquet(run / "attack_budgets.parquet")
    name = manifest["scenario"]["name"]
    print(f"\n{name}: training stage {train_s:.0f} s, attack stage {attack_s:.0f} s "
          f"({stages['attack'].get('units', '?')} units; ratio attack / training "
          f"{attack_s / train_s:.2f}, target <= 1: "
          f"{'met' if attack_s <= train_s else 'NOT met'})")
    print("reference, samples/s at the best batch: " + "; ".join(
        f"{k} {v:,.0f}" for k, v in sorted(rates.items())))
    print(frame.groupby("kind").agg(units=("samples", "size"), samples=("samples", "sum"),
                                    ideal_s=("ideal_s", "sum"))
          .to_string(float_format=lambda v: f"{v:,.1f}"))
    # per attack: the reference's time for its units' work next to the CPU-seconds
    # their workers spent (one thread each, scoring included), per core: 100% when a
    # unit on one core keeps pace with its share of the reference on all of them
    cores = manifest["scenario"]["ray"].get("num_cpus") or os.cpu_count()
    units = frame.groupby(["tier", "attack", "setting"])["ideal_s"].sum().reset_index()
    units = units.merge(budgets[["tier", "attack", "setting", "cpu_seconds"]],
                        on=["tier", "attack", "setting"], how="left")
    per = units.groupby("attack")[["ideal_s", "cpu_seconds"]].sum()
    per["per-core efficiency"] = cores * per["ideal_s"] / per["cpu_seconds"]
    print(per.to_string(float_format=lambda v: f"{v:,.2f}"))
    print(f"every attack unit's CPU-seconds: {budgets['cpu_seconds'].sum():,.0f} "
          f"(the stage had {cores * attack_s:,.0f} on {cores} cores)")
    if unmodelled:
        print(f"not counted as useful work ({len(unmodelled)} units): "
              + ", ".join(unmodelled))
    ideal = frame["ideal_s"].sum()
    eff = ideal / attack_s
    print(f"efficiency: the reference needs {ideal:,.0f} s for the useful work; the stage "
          f"took {attack_s:,.0f} s: {eff:.0%} (target >= 50%: "
          f"{'met' if eff >= 0.5 else 'NOT met'})", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenario", nargs="?", default=DEFAULT)
    parser.add_argument("--run", type=Path, default=None,
                        help="a finished run: rerun only its attack stage, on a copy")
    parser.add_argument("--set", action="append", default=[])
    parser.add_argument("--keep", type=Path, default=None,
                        help="keep the run directory here (default: a temporary one)")
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="seconds per reference measurement")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    if args.child:
        works, _ = stage_work(Path(args.child))
        Path(args.out).write_text(json.dumps(reference(Path(args.child), works,
                                                       args.seconds)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        out = args.keep or Path(tmp) / "run"
        if args.keep is not None and out.exists():
            raise SystemExit(f"{out} exists: give --keep a new directory")
        run = _run_stage(args.scenario, args.run, args.set, out)
        report(run, args.seconds, Path(tmp))


if __name__ == "__main__":
    main()
