"""SiftFunnel feature collapse against batch size, learning rate and dCor^2 estimator.

Trains a SiftFunnel edge and the cloud of the ``siftfunnel_cnn`` backbone jointly with
the defense's own losses (``task_loss + edge_loss``, code-default weights, no edge-loss
warm-up) for a fixed number of Adam steps (betas 0.5, 0.999, the scenario default), as
one device would in split training, then scores the deployed pair on held-out images.
A run *collapses* when the transmitted feature carries nothing: (almost) all zero
(non-zero share < 1%) or constant over samples (mean per-element sd across test images
< 1% of mean |z|); the cloud can then only guess (accuracy at chance). Accuracy itself
is not the criterion: at a fixed step budget small batches are still under-trained
(the plain cut reaches 0.18 after 30 steps of 8 images without any collapse).

Digits (scikit-learn, 8x8 upsampled to 16x16) with the capacities of the tradeoff
study's tiers (funnel 16/4, funnel 32/8) and the plain cut (SiftFunnel's losses on the
unprotected encoder, ``funnel: false``); a short MNIST case (28x28, funnel 32/8) from
the shared data folder. Prints Markdown tables. Usage, from the repository root::

    nice -n 10 python bench/collapse_study.py              # about 10 min, one core
    python bench/collapse_study.py --steps 5 --seeds 1 --mnist-steps 0  # smoke run
"""

from __future__ import annotations

import argparse
import itertools
import time
from pathlib import Path

import numpy as np
import torch

from simulator.data.base import DATASETS
from strategies.defenses import DEFENSES
from strategies.defenses.siftfunnel import EncoderChoice
from strategies.models import BACKBONES, build_cloud, build_edge, debias_batchnorm

ENCODERS = {
    "funnel 16/4": (EncoderChoice("funnel", {"width": 16, "channels": 4}), {}),
    "funnel 32/8": (EncoderChoice("funnel", {"width": 32, "channels": 8}), {}),
    "plain cut": (EncoderChoice("plain", {}), {"funnel": False}),
}
SHARED = Path("/work/shared/data")


def load(name: str, n_train: int, n_test: int, seed: int = 0):
    """Shuffled train/test tensors in [0, 1] and the dataset's normalisation."""
    params = {"image_size": 16} if name == "digits" else {"root": str(SHARED)}
    ds = DATASETS.create(name, params)
    data = ds.load("train")
    order = np.random.default_rng(seed).permutation(len(data.y))
    train, test = order[:n_train], order[n_train:n_train + n_test]
    x, y = data.x, torch.as_tensor(data.y).long()
    return (x[train], y[train]), (x[test], y[test]), ds.normalization()


def run(data, norm, encoder: str, batch: int, lr: float, estimator: str, seed: int,
        steps: int) -> dict[str, float]:
    (x_tr, y_tr), (x_te, y_te) = data
    spec, extra = ENCODERS[encoder]
    defense = DEFENSES.create("siftfunnel", {**extra, "dcor_estimator": estimator})
    backbone = BACKBONES.create("siftfunnel_cnn", {}, image_shape=tuple(x_tr.shape[1:]),
                                num_classes=10)
    torch.manual_seed(seed)  # initial weights; batches come from their own generator
    edge = build_edge(backbone, spec, defense, norm)
    with torch.no_grad():
        shape = tuple(edge.eval()(x_tr[:2]).shape[1:])
    cloud = build_cloud(backbone, {"t": (shape, defense.adapter())})
    edge.train(), cloud.train()
    opt = torch.optim.Adam([*edge.parameters(), *cloud.parameters()], lr=lr,
                           betas=(0.5, 0.999))
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    order = np.concatenate([rng.permutation(len(y_tr))
                            for _ in range(-(-steps * batch // len(y_tr)))])
    for step in range(steps):
        idx = torch.from_numpy(order[step * batch:(step + 1) * batch])
        x, y = x_tr[idx], y_tr[idx]
        z = defense.transform(edge(x), training=True, generator=gen)
        loss = defense.task_loss(cloud(z, "t"), y) + defense.edge_loss(x, z, edge)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    # Deployed as the engine deploys: BatchNorm statistics de-biased, eval mode.
    debias_batchnorm(edge), debias_batchnorm(cloud)
    edge.eval(), cloud.eval()
    with torch.no_grad():
        z = edge(x_te)
        acc = float((cloud(z, "t").argmax(1) == y_te).float().mean())
    nonzero = float((z.abs() > 1e-6).float().mean())
    spread = float(z.flatten(1).std(0).mean() / (z.abs().mean() + 1e-12))
    return {"acc": acc, "nonzero": nonzero,
            "collapsed": float(nonzero < 0.01 or spread < 0.01)}


def table(rows: list[dict], lrs: list[float]) -> str:
    """Rows encoder x batch; per (lr, estimator): collapses/seeds (acc, non-zeros)."""
    cols = [(lr, est) for lr in lrs for est in ("v", "u")]
    head = "| encoder | batch | " + " | ".join(
        f"lr {lr:g}, {est.upper()}" for lr, est in cols) + " |"
    lines = [head, "|" + "---|" * (2 + len(cols))]
    keys = sorted({(r["encoder"], r["batch"]) for r in rows},
                  key=lambda k: (list(ENCODERS).index(k[0]), k[1]))
    for enc, batch in keys:
        cells = []
        for lr, est in cols:
            sel = [r for r in rows if (r["encoder"], r["batch"], r["lr"], r["est"])
                   == (enc, batch, lr, est)]
            k = int(sum(r["collapsed"] for r in sel))
            acc = np.mean([r["acc"] for r in sel])
            nz = np.mean([r["nonzero"] for r in sel])
            cells.append(f"{k}/{len(sel)} ({acc:.2f}, {nz:.2f})")
        lines.append(f"| {enc} | {batch} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def study(name: str, data, norm, encoders: list[str], batches: list[int],
          lrs: list[float], seeds: int, steps: int) -> list[dict]:
    rows = []
    for enc, batch, lr, est, seed in itertools.product(encoders, batches, lrs,
                                                       ("v", "u"), range(seeds)):
        t0 = time.process_time()
        out = run(data, norm, enc, batch, lr, est, seed, steps)
        rows.append({"encoder": enc, "batch": batch, "lr": lr, "est": est, **out})
        print(f"  {name} {enc} n={batch} lr={lr:g} {est} seed {seed}: acc "
              f"{out['acc']:.3f} nonzero {out['nonzero']:.3f} "
              f"({time.process_time() - t0:.1f} s CPU)", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=25, help="Adam steps per run")
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[8, 16, 32, 128])
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.001, 0.003])
    parser.add_argument("--mnist-steps", type=int, default=25)
    parser.add_argument("--mnist-batches", type=int, nargs="+", default=[8, 32])
    parser.add_argument("--mnist-lrs", type=float, nargs="+", default=[0.003])
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    *digits, dnorm = load("digits", 1200, 300)
    rows = study("digits", digits, dnorm, list(ENCODERS), args.batches, args.lrs,
                 args.seeds, args.steps)
    mnist_rows: list[dict] = []
    if args.mnist_steps and (SHARED / "MNIST").exists():
        *mnist, mnorm = load("mnist", 6000, 300)
        mnist_rows = study("mnist", mnist, mnorm, ["funnel 32/8"], args.mnist_batches,
                           args.mnist_lrs, args.seeds, args.mnist_steps)
    print(f"\nSiftFunnel collapse, digits 16x16 ({args.steps} Adam steps per run, "
          f"{args.seeds} seeds): collapsed runs / seeds (mean test accuracy, mean "
          "non-zero share of z)\n")
    print(table(rows, args.lrs))
    if mnist_rows:
        print(f"\nMNIST 28x28 ({args.mnist_steps} steps, {args.seeds} seeds):\n")
        print(table(mnist_rows, args.mnist_lrs))
    print(f"\n{time.perf_counter() - t0:.0f} s in all "
          f"({time.process_time():.0f} s CPU)")


if __name__ == "__main__":
    main()
