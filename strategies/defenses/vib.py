"""Variational information bottleneck at the cut (MID)."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from strategies.defenses._common import (attach_scale, attached_scale, gaussian_like,
                                        noise_unit)
from strategies.defenses.base import DEFENSES, DefendedEdge, Defense
from strategies.registry import PluginParams

__all__ = ["VIB", "VIBHead"]


class VIBHead(nn.Module):
    """Maps ``z`` to ``mu`` and ``sigma = softplus(raw - 5)`` with 1x1 convolutions.

    The convolutions see ``z`` divided by each sample's RMS (detached): the prior
    N(0, 1) fixes the scale of ``mu`` and ``sigma``, and an encoder whose output is
    ~0.01 (the quickstart's funnels) would otherwise start with ``mu`` all bias and no
    signal, which the KL term then drowns in unit noise (accuracy 0.28 on the low tier).

    ``forward`` returns ``mu`` (a view carrying ``sigma``) and remembers ``(mu, sigma)``
    of the *last* forward in ``last_stats`` for the KL term of :meth:`VIB.edge_loss`.
    The cache is dropped when the module is pickled or deep-copied.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.mu = nn.Conv2d(channels, channels, 1)
        self.raw = nn.Conv2d(channels, channels, 1)
        self.last_stats: tuple[torch.Tensor, torch.Tensor] | None = None

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        z = z / noise_unit(z, "relative").clamp_min(1e-12)
        mu = self.mu(z)
        # The -5 shift starts sigma near 0.007: early training is nearly deterministic.
        sigma = F.softplus(self.raw(z) - 5.0)
        self.last_stats = (mu, sigma)
        return attach_scale(mu, sigma)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(super().__getstate__())
        state["last_stats"] = None
        return state


@DEFENSES.register("vib")
class VIB(Defense):
    """Variational information bottleneck at the cut, as in MID (Wang et al.,
    "Improving Robustness to Model Inversion Attacks via Mutual Information
    Regularization", AAAI 2021, https://arxiv.org/abs/2009.05241).

    The head produces ``mu`` and ``sigma``; :meth:`transform` sends the reparameterised
    sample ``mu + sigma * e``, ``e ~ N(0, 1)`` from the given generator, in training,
    and ``mu`` at inference (or a sample with ``sample_at_inference``).
    ``edge_loss = beta * KL(N(mu, sigma^2) || N(0, 1))``, summed over the feature
    elements and averaged over the batch; it uses the statistics of the edge's *last*
    forward pass (the batch whose ``z`` it is given, in the engine's step order).
    """

    class Params(PluginParams):
        beta: float = Field(1e-3, ge=0.0, le=100.0, description="weight of the KL term")
        sample_at_inference: bool = Field(
            False, description="send a sample instead of mu at inference")

    params: Params

    def wrap_edge(self, encoder: nn.Module,
                  feature_shape: tuple[int, int, int]) -> DefendedEdge:
        return DefendedEdge(encoder, head=VIBHead(feature_shape[0]))

    def edge_loss(self, x: torch.Tensor, z: torch.Tensor,
                  edge: DefendedEdge) -> torch.Tensor | None:
        if self.params.beta == 0.0:
            return None
        head = edge.head
        if not isinstance(head, VIBHead) or head.last_stats is None:
            raise ValueError("vib.edge_loss needs a forward pass of an edge built by "
                             "its wrap_edge first")
        mu, sigma = head.last_stats
        kl = 0.5 * (sigma.pow(2) + mu.pow(2) - 1.0) - torch.log(sigma)
        return self.params.beta * kl.flatten(1).sum(1).mean()

    def transform(self, z: torch.Tensor, *, training: bool,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        if not (training or self.params.sample_at_inference):
            return z
        sigma = attached_scale(z, "vib")
        return z + sigma * gaussian_like(z, generator)
