"""Pieces of the distribution-aligning attacks (private: not a plug-in, not public API).

``fora`` and ``sdar`` train a substitute edge on auxiliary images so that its features
look like the features the cloud observed from the victims (``query_free``'s shadow
edge is the same network, trained through the cloud alone). Shared here:

* :func:`labelled_aux` - the auxiliary images and labels, checked to pair up;
* :func:`new_shadow_edge` - a seeded shadow / substitute edge for the knowledge;
* :func:`observed_features` - the observation log from the knowledge, checked;
* :func:`mk_mmd` - multi-kernel maximum mean discrepancy (Gaussian kernels);
* :func:`build_discriminator` - a small conv critic for features or images;
* :func:`gradient_penalty` - the WGAN-GP term;
* :func:`flip_labels` - SDAR's random label flipping, :func:`bce_logits`;
* :func:`num_classes` - the cloud's number of outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from strategies.attacks._common import build_shadow_edge, check_features, init_parameters
from strategies.attacks.base import QueryFree

__all__ = ["MMD_ALPHAS", "bce_logits", "build_discriminator", "flip_labels",
           "gradient_penalty", "labelled_aux", "mk_mmd", "new_shadow_edge", "num_classes",
           "observed_features", "sample_rows"]

MMD_ALPHAS = tuple(2.0 ** k for k in range(-3, 2))
"""Bandwidth multipliers of the kernel family (FORA's choice, after DAN)."""

_DIST_FLOOR = 1e-12  # identical rows: keep the bandwidth finite


def labelled_aux(knowledge: QueryFree) -> tuple[torch.Tensor, torch.Tensor]:
    """The auxiliary images and their labels (int64), one label per image."""
    x, y = knowledge.aux_x, knowledge.aux_y.long()
    if y.shape != (x.shape[0],):
        raise ValueError(f"aux_y must have shape ({x.shape[0]},), got {tuple(y.shape)}")
    return x, y


def new_shadow_edge(knowledge: QueryFree, width: int,
                    generator: torch.Generator) -> nn.Module:
    """A shadow edge image -> feature for the knowledge's shapes, initialised from
    ``generator``, on the auxiliary images' device."""
    shadow = build_shadow_edge(knowledge.image_shape, knowledge.feature_shape,
                               knowledge.normalization, width)
    return init_parameters(shadow, generator).to(knowledge.aux_x.device)


def observed_features(knowledge: QueryFree, attack: str) -> torch.Tensor:
    """The features the cloud observed from this tier, float32 on ``aux_x``'s device.

    Raises ``ValueError`` naming the attack when the knowledge carries none.
    """
    z = knowledge.observed
    if z is None or len(z) < 2:
        got = "none" if z is None else f"{len(z)} row(s)"
        raise ValueError(
            f"attack {attack!r} aligns a substitute edge with the features the cloud "
            f"observed from this tier, so its knowledge needs `observed` (at least 2 "
            f"rows of the tier's observation log); got {got}")
    check_features(z, knowledge.feature_shape, "knowledge.observed")
    return z.detach().float().to(knowledge.aux_x.device)


def sample_rows(n: int, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` row indices drawn uniformly (with replacement) from ``range(n)``."""
    return torch.randint(0, n, (k,), generator=generator)


def mk_mmd(source: torch.Tensor, target: torch.Tensor,
           alphas: tuple[float, ...] = MMD_ALPHAS) -> torch.Tensor:
    """Biased MK-MMD^2 between two batches of rows (flattened per row).

    Gaussian kernels ``exp(-d^2 / (2 alpha s^2))`` with ``s^2`` the mean squared
    distance over the pooled batch (detached, so the bandwidth follows the data without
    being a way to shrink the loss), summed over ``alphas`` (Long et al., "Learning
    Transferable Features with Deep Adaptation Networks", ICML 2015, as used by FORA).
    """
    s, t = source.flatten(1), target.flatten(1)
    pooled = torch.cat([s, t])
    d2 = torch.cdist(pooled, pooled).pow(2)
    scale = d2.detach().mean().clamp_min(_DIST_FLOOR)
    kernel = sum(torch.exp(-d2 / (2.0 * a * scale)) for a in alphas)
    n = s.shape[0]
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2.0 * kernel[:n, n:].mean()


def build_discriminator(shape: tuple[int, int, int], width: int = 32) -> nn.Sequential:
    """A critic (N, *shape) -> (N, 1) logits: 3x3 conv, then stride-2 3x3 convs (width
    doubling, capped at 8x) until the map is at most 4x4, LeakyReLU(0.2), linear head.

    No batch norm (the gradient penalty is per sample) and no dropout (attacks draw
    randomness only from their generator).
    """
    c, h, w = shape
    layers: list[nn.Module] = [nn.Conv2d(c, width, 3, padding=1), nn.LeakyReLU(0.2)]
    ch = width
    while h > 4 or w > 4:
        nxt = min(ch * 2, width * 8)
        layers += [nn.Conv2d(ch, nxt, 3, stride=2, padding=1), nn.LeakyReLU(0.2)]
        ch, h, w = nxt, (h + 1) // 2, (w + 1) // 2
    layers += [nn.Flatten(), nn.Linear(ch * h * w, 1)]
    return nn.Sequential(*layers)


def gradient_penalty(critic: nn.Module, real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator) -> torch.Tensor:
    """WGAN-GP: ``mean((||grad critic(mix)|| - 1)^2)`` on random interpolations."""
    eps = torch.rand((real.shape[0],) + (1,) * (real.dim() - 1), generator=generator)
    mix = (eps.to(real.device) * real.detach()
           + (1 - eps.to(real.device)) * fake.detach()).requires_grad_(True)
    grad, = torch.autograd.grad(critic(mix).sum(), mix, create_graph=True)
    return (grad.flatten(1).norm(dim=1) - 1.0).pow(2).mean()


def flip_labels(y: torch.Tensor, classes: int, rate: float,
                generator: torch.Generator) -> torch.Tensor:
    """Keep each label with probability ``1 - rate``, else draw one uniformly (which
    may be the same): SDAR's guard against a simulator that over-fits the cloud."""
    if rate == 0.0:
        return y
    flip = torch.rand(y.shape, generator=generator) < rate
    other = torch.randint(0, classes, y.shape, generator=generator)
    return torch.where(flip.to(y.device), other.to(y.device), y)


@torch.no_grad()
def num_classes(cloud: nn.Module, feature_shape: tuple[int, int, int],
                device: torch.device) -> int:
    """Outputs of ``cloud`` (it is in eval mode: one zero feature is enough)."""
    return int(cloud(torch.zeros(1, *feature_shape, device=device)).shape[1])


def bce_logits(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Binary cross-entropy of critic logits against a constant label."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))
