"""Gaussian feature noise: the device sends ``z + N(0, sigma^2)``."""

from __future__ import annotations

import torch
from pydantic import Field

from strategies.defenses._common import (NoiseUnits, gaussian_like, noise_unit,
                                        noise_units_field)
from strategies.defenses.base import DEFENSES, Defense
from strategies.registry import PluginParams

__all__ = ["GaussianNoise"]


@DEFENSES.register("gaussian_noise")
class GaussianNoise(Defense):
    """Additive i.i.d. Gaussian noise on the transmitted feature.

    The same noise is added in training (so the cloud learns to cope with it) and at
    inference. The SiftFunnel code sweeps ``sigma`` up to 5 and uses 0.8 in its MINE
    runs (https://arxiv.org/abs/2501.00824), in the units of its network's features;
    here ``sigma`` is by default relative to each sample's feature RMS
    (:func:`~strategies.defenses._common.noise_unit`), ``units: absolute`` gives the
    papers' convention. ``sigma = 0`` is the identity.
    """

    class Params(PluginParams):
        sigma: float = Field(0.8, ge=0.0, le=100.0,
                             description="standard deviation of the added noise")
        units: NoiseUnits = noise_units_field()

    params: Params

    def transform(self, z: torch.Tensor, *, training: bool,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        if self.params.sigma == 0.0:
            return z
        unit = noise_unit(z, self.params.units)
        return z + self.params.sigma * unit * gaussian_like(z, generator)
