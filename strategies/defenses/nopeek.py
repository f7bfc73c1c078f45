"""NoPeek: cross-entropy plus distance correlation between input and feature."""

from __future__ import annotations

import torch
from pydantic import Field

from analysis.metrics import distance_correlation
from strategies.defenses.base import DEFENSES, DefendedEdge, Defense
from strategies.registry import PluginParams

__all__ = ["NoPeek"]


@DEFENSES.register("nopeek")
class NoPeek(Defense):
    """NoPeek (Vepakomma et al., "NoPeek: Information leakage reduction to share
    activations in distributed deep learning", 2020, https://arxiv.org/abs/2008.09161).

    ``L = CE + a * dCor^2(x, z)``: the cloud trains with cross-entropy, the device adds
    ``a`` times the differentiable squared distance correlation of
    :func:`analysis.metrics.distance_correlation`, computed on *Euclidean* (not
    squared) pairwise distances: the squared-distance variant found in several repos
    only detects linear dependence. Default ``a = 15``, the weight a public framework
    uses for this loss (as recorded in the project's SiftFunnel reference notes).
    """

    class Params(PluginParams):
        a: float = Field(15.0, ge=0.0, le=1000.0,
                         description="weight a of dCor^2(x, z)")

    params: Params

    def edge_loss(self, x: torch.Tensor, z: torch.Tensor,
                  edge: DefendedEdge) -> torch.Tensor | None:
        if self.params.a == 0.0:
            return None
        return self.params.a * distance_correlation(x, z)
