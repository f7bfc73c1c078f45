"""Bias of the V-statistic dCor^2 against batch size, next to the U-centred estimator.

For batch sizes n = 8 ... 256, draws ``--reps`` batches of each case, computes the plain
V-statistic (:func:`analysis.metrics.distance_correlation`, the training loss today)
and the bias-corrected U-statistic (:func:`analysis.metrics.u_distance_correlation_sqr`)
in float64, and prints a Markdown table of mean (sd) over the batches.

Cases: Gaussian toys (independent in 5-D and in 256-D / 64-D, linearly dependent in
5-D) and scikit-learn digits (8x8 upsampled to 16x16, 256-D) against a fixed random
convolutional feature (Conv 3x3 stride 2 to 4 x 8 x 8, ReLU) of the same images
(dependent) or of other images drawn independently (independent). Usage::

    python bench/dcor_bias.py [--reps 20]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from analysis.metrics import distance_correlation, u_distance_correlation_sqr

SIZES = (8, 16, 32, 64, 128, 256)
Pair = Callable[[int, torch.Generator], tuple[torch.Tensor, torch.Tensor]]


def digits_pairs() -> tuple[Pair, Pair]:
    """Samplers of (image, feature) pairs: feature of the same / of another image."""
    from sklearn.datasets import load_digits

    images = torch.from_numpy(load_digits().images / 16.0)[:, None]
    images = F.interpolate(images, size=16, mode="bilinear", align_corners=False)
    weight = torch.randn(4, 1, 3, 3, generator=torch.Generator().manual_seed(0),
                         dtype=torch.float64)

    def feature(x: torch.Tensor) -> torch.Tensor:
        return F.relu(F.conv2d(x, weight, stride=2, padding=1))

    def same(n: int, g: torch.Generator):
        x = images[torch.randperm(len(images), generator=g)[:n]]
        return x, feature(x)

    def other(n: int, g: torch.Generator):
        idx = torch.randperm(len(images), generator=g)
        return images[idx[:n]], feature(images[idx[n:2 * n]])

    return same, other


def gaussian(dx: int, dz: int, dependent: bool) -> Pair:
    def draw(n: int, g: torch.Generator):
        x = torch.randn(n, dx, generator=g, dtype=torch.float64)
        noise = torch.randn(n, dz, generator=g, dtype=torch.float64)
        return x, (x[:, :dz] + noise if dependent else noise)

    return draw


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20, help="batches per cell")
    args = parser.parse_args()
    torch.set_num_threads(1)
    same, other = digits_pairs()
    cases: dict[str, Pair] = {
        "Gaussian 5-D / 5-D, independent": gaussian(5, 5, False),
        "Gaussian 256-D / 64-D, independent": gaussian(256, 64, False),
        "Gaussian 5-D, z = x + noise": gaussian(5, 5, True),
        "digits vs conv feature of other images": other,
        "digits vs conv feature of the same images": same,
    }
    print(f"dCor^2 mean (sd) over {args.reps} batches per cell, float64\n")
    print("| case | estimator | " + " | ".join(f"n = {n}" for n in SIZES) + " |")
    print("|" + "---|" * (2 + len(SIZES)))
    for name, draw in cases.items():
        values = {"V": {n: [] for n in SIZES}, "U": {n: [] for n in SIZES}}
        for n in SIZES:
            g = torch.Generator().manual_seed(n)
            for _ in range(args.reps):
                x, z = draw(n, g)
                values["V"][n].append(float(distance_correlation(x, z, eps=0.0)))
                values["U"][n].append(float(u_distance_correlation_sqr(x, z, eps=0.0)))
        for est, by_n in values.items():
            cells = [f"{np.mean(v):.3f} ({np.std(v, ddof=1):.3f})"
                     for v in by_n.values()]
            print(f"| {name} | {est} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
