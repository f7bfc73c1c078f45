"""Laplace feature noise: the device sends ``z + Laplace(0, b)``."""

from __future__ import annotations

import torch
from pydantic import Field

from strategies.defenses._common import (NoiseUnits, laplace_like, noise_unit,
                                        noise_units_field)
from strategies.defenses.base import DEFENSES, Defense
from strategies.registry import PluginParams

__all__ = ["LaplaceNoise"]


@DEFENSES.register("laplace_noise")
class LaplaceNoise(Defense):
    """Additive i.i.d. Laplace noise of scale ``b`` (standard deviation ``b sqrt(2)``).

    Applied in training and at inference, like :class:`GaussianNoise`. The reference
    gives no default scale; 0.5 is ours (standard deviation 0.71, close to the Gaussian
    default 0.8), relative to each sample's feature RMS by default (``units``, as for
    :class:`GaussianNoise`). ``scale = 0`` is the identity.
    """

    class Params(PluginParams):
        scale: float = Field(0.5, ge=0.0, le=100.0,
                             description="Laplace scale b of the added noise")
        units: NoiseUnits = noise_units_field()

    params: Params

    def transform(self, z: torch.Tensor, *, training: bool,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        if self.params.scale == 0.0:
            return z
        unit = noise_unit(z, self.params.units)
        return z + self.params.scale * unit * laplace_like(z, generator)
