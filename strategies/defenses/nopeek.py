"""NoPeek: cross-entropy plus distance correlation between input and feature."""

from __future__ import annotations

import torch
from pydantic import Field

from strategies.defenses._common import DcorEstimator, dcor_loss
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
    only detects linear dependence. ``dcor_estimator="u"`` uses the bias-corrected
    (U-centred) estimator instead, clamped at 0. Default ``a = 15``, the weight a
    public framework uses for this loss (as recorded in the project's SiftFunnel
    reference notes).
    """

    class Params(PluginParams):
        a: float = Field(15.0, ge=0.0, le=1000.0,
                         description="weight a of dCor^2(x, z)")
        # V kept as for siftfunnel (bench/collapse_study.py); NoPeek not measured
        dcor_estimator: DcorEstimator = Field(
            "v", description="dCor^2 estimator: 'v' (V-statistic) or 'u' (U-centred, "
            "clamped at 0; batches >= 4)")

    params: Params

    def edge_loss(self, x: torch.Tensor, z: torch.Tensor,
                  edge: DefendedEdge) -> torch.Tensor | None:
        if self.params.a == 0.0:
            return None
        return self.params.a * dcor_loss(x, z, self.params.dcor_estimator)
