"""Shared pieces of the defense tests: a 16x16 four-class task, a defended edge and
cloud for any registered defense at small capacity."""

from __future__ import annotations

import torch

from strategies.defenses import DEFENSES, DefendedEdge, Defense
from strategies.defenses.siftfunnel import EncoderChoice
from strategies.models import BACKBONES, CloudModel, build_edge

IMAGE = (1, 16, 16)
K = 4
NORM = ((0.5,), (0.25,))
TIER = "t"
ALL = DEFENSES.names()
# Small capacities keep the tests fast; every other value is the registered default.
SMALL = {
    "siftfunnel": {"width": 8, "channels": 4, "hidden": 8, "depth": 1},
    "adversarial": {"decoder_width": 8},
    "disco": {"decoder_width": 8, "pruner_hidden": 8},
}
RANDOM = ["cem", "dropout", "gaussian_noise", "laplace_noise", "shredder", "vib"]


def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images with a bright 8x8 patch in the quadrant named by the label."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (n,), generator=g)
    x = 0.4 * torch.rand((n, *IMAGE), generator=g)
    for i, label in enumerate(y.tolist()):
        r, c = divmod(label, 2)
        x[i, :, 8 * r:8 * r + 8, 8 * c:8 * c + 8] += 0.6
    return x, y


def build(name: str, params: dict | None = None, seed: int = 0
          ) -> tuple[Defense, DefendedEdge, CloudModel]:
    torch.manual_seed(seed)  # weight initialisation only (tests may seed globally)
    defense = DEFENSES.create(name, {**SMALL.get(name, {}), **(params or {})})
    backbone = BACKBONES.create("mnist_cnn", {"cut": "relu2"}, image_shape=IMAGE,
                                num_classes=K)
    edge = build_edge(backbone, EncoderChoice("plain", {}), defense, NORM)
    with torch.no_grad():
        shape = tuple(edge.eval()(torch.zeros(1, *IMAGE)).shape[1:])
    edge.train()
    cloud = CloudModel(backbone, {TIER: (shape, defense.adapter())})
    return defense, edge, cloud


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def edge_grads(edge: DefendedEdge) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in edge.named_parameters() if p.grad is not None}


def train(defense: Defense, edge: DefendedEdge, cloud: CloudModel, x: torch.Tensor,
          y: torch.Tensor, steps: int, seed: int = 0) -> None:
    """Joint Adam steps of edge and cloud on the defense's own losses."""
    opt = torch.optim.Adam([*edge.parameters(), *cloud.parameters()], lr=1e-2)
    g = gen(seed)
    edge.train(), cloud.train()
    for _ in range(steps):
        opt.zero_grad()
        z = defense.transform(edge(x), training=True, generator=g)
        loss = defense.task_loss(cloud(z, TIER), y)
        extra = defense.edge_loss(x, z, edge)
        (loss if extra is None else loss + extra).backward()
        opt.step()
