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
    only detects linear dependence. The default estimator is the bias-corrected
    (U-centred) one, clamped at 0: the plain V-statistic (``dcor_estimator="v"``) is
    biased towards 1 on the few samples a device holds, so the term cannot be met by
    independent features and keeps erasing them (``bench/defenses_quickstart.py``).
    Default ``a = 15``, the weight a public framework uses for this loss (as recorded
    in the project's SiftFunnel reference notes).
    """

    class Params(PluginParams):
        a: float = Field(15.0, ge=0.0, le=1000.0,
                         description="weight a of dCor^2(x, z)")
        # u: quickstart, warm-up 6+4: +11 to +18 accuracy points/tier vs V, same dCor
        dcor_estimator: DcorEstimator = Field(
            "u", description="dCor^2 estimator: 'u' (U-centred, clamped at 0; 0 below "
            "4 samples) or 'v' (V-statistic)")

    params: Params

    def edge_loss(self, x: torch.Tensor, z: torch.Tensor,
                  edge: DefendedEdge) -> torch.Tensor | None:
        if self.params.a == 0.0:
            return None
        return self.params.a * dcor_loss(x, z, self.params.dcor_estimator)
