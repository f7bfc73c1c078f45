"""Dropout defense: the device zeroes each feature element with probability ``r``."""

from __future__ import annotations

import torch
from pydantic import Field

from strategies.defenses.base import DEFENSES, Defense
from strategies.registry import PluginParams

__all__ = ["FeatureDropout"]


@DEFENSES.register("dropout")
class FeatureDropout(Defense):
    """Random element masking ``z * Bernoulli(1 - r)``, in training and at inference.

    Unlike ``nn.Dropout`` the kept elements are *not* rescaled by ``1 / (1 - r)``: this
    follows the reference defense (SiftFunnel code, https://arxiv.org/abs/2501.00824),
    whose cloud is trained on the same masked features it later receives. ``r`` goes up
    to 0.9 in the paper's sweeps; 0.8 is used in its MINE runs. ``rate = 0`` is the
    identity.
    """

    class Params(PluginParams):
        rate: float = Field(0.8, ge=0.0, lt=1.0,
                            description="probability r of zeroing each element")

    params: Params

    def transform(self, z: torch.Tensor, *, training: bool,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        if self.params.rate == 0.0:
            return z
        u = torch.rand(z.shape, generator=generator, dtype=z.dtype, device=z.device)
        return z * (u >= self.params.rate).to(z.dtype)
