"""Laplace feature noise: the device sends ``z + Laplace(0, b)``."""

from __future__ import annotations

import torch
from pydantic import Field

from strategies.defenses._common import laplace_like
from strategies.defenses.base import DEFENSES, Defense
from strategies.registry import PluginParams

__all__ = ["LaplaceNoise"]


@DEFENSES.register("laplace_noise")
class LaplaceNoise(Defense):
    """Additive i.i.d. Laplace noise of scale ``b`` (standard deviation ``b sqrt(2)``).

    Applied in training and at inference, like :class:`GaussianNoise`. The reference
    gives no default scale; 0.5 is ours (standard deviation 0.71, close to the Gaussian
    default 0.8). ``scale = 0`` is the identity.
    """

    class Params(PluginParams):
        scale: float = Field(0.5, ge=0.0, le=100.0,
                             description="Laplace scale b of the added noise")

    params: Params

    def transform(self, z: torch.Tensor, *, training: bool,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        if self.params.scale == 0.0:
            return z
        return z + self.params.scale * laplace_like(z, generator)
