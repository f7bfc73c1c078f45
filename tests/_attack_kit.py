"""Shared pieces of the attack tests: the toy setting (smooth 1x16x16 images, an
invertible edge and its variants, a tiny cloud trained on it) and test-sized settings."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from analysis.metrics import mse
from strategies.attacks import ATTACKS, BlackBoxQuery, QueryFree, QueryOracle, WhiteBox

IMAGE, FEATURE, NORM = (1, 16, 16), (4, 8, 8), ((0.5,), (0.25,))
N_AUX, N_TEST, CLASSES = 256, 24, 4
N_VICTIM = 232  # victims' images whose features the cloud logged, besides the test ones

# Test-sized settings (reference defaults train for minutes); a newly registered attack
# runs with its defaults until it gets an entry here.
FAST: dict[str, dict[str, Any]] = {
    "inverse_network": {"epochs": 6, "lr": 1e-2, "width": 16},
    "rmle": {"iterations": 150},
    "query_free": {"shadow_epochs": 5, "shadow_width": 16, "iterations": 150},
    "fora": {"substitute_epochs": 5, "substitute_width": 16, "epochs": 6, "lr": 1e-2,
             "width": 16},
    "sdar": {"epochs": 4, "simulator_width": 16, "width": 16, "critic_width": 8,
             "batch_size": 64, "sim_lr": 3e-3, "dec_lr": 1e-2},
}
# (max MSE as a fraction of the mean-image MSE, min SSIM) on the invertible toy edge.
# Query-free never sees the edge: its shadow is only pinned down through the cloud, so
# "inverts" means far better than the mean image, not exact.
# fora and sdar align a substitute edge with the observed features (measured: fora
# 0.12 / 0.92, sdar 0.15 / 0.90).
INVERTS = {"inverse_network": (0.1, 0.9), "rmle": (0.01, 0.99),
           "query_free": (0.5, 0.5), "fora": (0.3, 0.8), "sdar": (0.3, 0.8)}
ALIGNING = ["fora", "sdar"]  # need the cloud's observation log, never the edge


def smooth_images(n: int, g: torch.Generator) -> torch.Tensor:
    low = torch.rand(n, 1, 4, 4, generator=g)
    return F.interpolate(low, size=IMAGE[1:], mode="bilinear", align_corners=False)


def quadrant_labels(x: torch.Tensor) -> torch.Tensor:
    """Class = brightest quadrant, so the cloud's task depends on the image."""
    return x.view(len(x), 2, 8, 2, 8).mean((2, 4)).flatten(1).argmax(1)


class OrthoEdge(nn.Module):
    """Invertible edge: normalise, space-to-depth, orthogonal channel mixing."""

    def __init__(self, g: torch.Generator) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(4, 4, generator=g))
        self.mix = nn.Conv2d(4, 4, 1, bias=False)
        with torch.no_grad():
            self.mix.weight.copy_(q.view(4, 4, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mix(F.pixel_unshuffle((x - 0.5) / 0.25, 2))


class ZeroEdge(OrthoEdge):
    """Same parameters, but the transmitted feature is always zero."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.0 * super().forward(x)


class NoiseEdge(OrthoEdge):
    """Transmits fresh Gaussian noise, independent of x."""

    def __init__(self, g: torch.Generator) -> None:
        super().__init__(g)
        self.noise = torch.Generator().manual_seed(7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.randn(x.shape[0], *FEATURE, generator=self.noise)


class TinyEdge(OrthoEdge):
    """The invertible edge emitting small numbers, as a funnel's attention gates do."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.01 * super().forward(x)


def make_cloud(edge: nn.Module, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
    """Tiny cloud trained on the edge's features (the provider's model)."""
    g = torch.Generator().manual_seed(3)
    cloud = nn.Sequential(nn.Flatten(), nn.Linear(256, 32), nn.ReLU(), nn.Linear(32, 4))
    for p in cloud.parameters():
        nn.init.normal_(p, std=0.1, generator=g)
    opt = torch.optim.Adam(cloud.parameters(), lr=1e-2)
    z = edge(x).detach()
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(cloud(z), y).backward()
        opt.step()
    cloud.zero_grad(set_to_none=True)
    return cloud


class Setting:
    """Aux and victim data, the edge and the three knowledge objects about it."""

    def __init__(self, edge_cls: type[OrthoEdge]) -> None:
        g = torch.Generator().manual_seed(0)
        self.edge = edge_cls(g)
        self.aux_x, self.test_x = smooth_images(N_AUX, g), smooth_images(N_TEST, g)
        self.aux_y = quadrant_labels(self.aux_x)
        self.test_z = self.edge(self.test_x).detach()
        self.cloud = make_cloud(self.edge, self.aux_x, self.aux_y)
        victims = torch.cat([smooth_images(N_VICTIM, g), self.test_x])
        self.observed = self.edge(victims).detach()  # the cloud's log of this tier
        base = dict(cloud=self.cloud, aux_x=self.aux_x, aux_y=self.aux_y,
                    feature_shape=FEATURE, image_shape=IMAGE, normalization=NORM,
                    observed=self.observed)
        self.knowledge = {
            QueryFree: QueryFree(**base),
            BlackBoxQuery: BlackBoxQuery(**base, query=QueryOracle(self.edge)),
            WhiteBox: WhiteBox(**base, query=QueryOracle(self.edge), edge=self.edge),
        }
        mean = self.aux_x.mean(0, keepdim=True).expand_as(self.test_x)
        self.mean_mse = mse(mean, self.test_x).mean().item()

    def run(self, name: str, seed: int = 1, **override: Any) -> torch.Tensor:
        attack = ATTACKS.create(name, {**FAST.get(name, {}), **override})
        attack.fit(self.knowledge[WhiteBox], torch.Generator().manual_seed(seed))
        return attack.reconstruct(self.test_z)
