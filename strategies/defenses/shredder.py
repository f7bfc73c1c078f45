"""Shredder: learned additive Laplace noise on the transmitted feature."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from strategies.defenses._common import (NoiseUnits, attach_scale, attached_scale,
                                        laplace_like, noise_unit, noise_units_field)
from strategies.defenses.base import DEFENSES, DefendedEdge, Defense
from strategies.registry import PluginParams

__all__ = ["LearnedNoiseHead", "Shredder"]


class LearnedNoiseHead(nn.Module):
    """Holds the learnable noise tensor ``noise`` of the feature shape (C, H, W).

    ``forward`` returns ``z`` unchanged (as a view carrying the per-element scale
    ``|noise|``); :meth:`Shredder.transform` draws the noise from the caller's
    generator.
    """

    def __init__(self, feature_shape: tuple[int, int, int], scale: float) -> None:
        super().__init__()
        # Laplace(0, b) initialisation as in Shredder. Like every layer's initial
        # weights it draws from torch's default generator, seeded by the caller.
        init = (torch.distributions.Laplace(0.0, scale).sample(feature_shape)
                if scale > 0 else torch.zeros(feature_shape))
        self.noise = nn.Parameter(init)

    def scale(self) -> torch.Tensor:
        """Per-element Laplace scale, (C, H, W)."""
        return self.noise.abs()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return attach_scale(z, self.scale())


@DEFENSES.register("shredder")
class Shredder(Defense):
    """Learned additive noise (Mireshghallah et al., "Shredder: Learning Noise
    Distributions to Protect Inference Privacy", ASPLOS 2020,
    https://arxiv.org/abs/1905.11814).

    Scheme implemented here. A learnable tensor ``N`` of the feature shape is
    initialised with Laplace(0, ``scale``) samples and lives in the edge head. The
    device sends ``z + |N| * e`` with fresh ``e ~ Laplace(0, 1)`` per element and per
    call, i.e. Laplace noise with the learned per-element scale ``|N|``, drawn from the
    generator given to :meth:`transform`, in training and at inference. The gradient
    reaches ``N`` through the reparameterisation. Training minimises
    ``CE - lam * mean(|N|)``: the cloud-side cross-entropy keeps utility while the edge
    term grows the noise (``edge_loss`` returns ``-lam * mean(|N|)``).

    The learned scale is in units of each sample's feature RMS by default
    (``units: absolute``: units of the feature), so the initial ``scale`` means the
    same on a funnel whose features are ~0.01 and on a plain cut whose features are ~1.

    Shredder itself trains noise *samples* against a frozen network and fits a Laplace
    distribution per element to them for inference. Learning the per-element scale
    directly makes training and inference noise come from the same distribution, which
    matters here because the cloud is trained jointly with the noise.
    """

    class Params(PluginParams):
        scale: float = Field(0.5, ge=0.0, le=100.0,
                             description="Laplace scale b of the initial noise tensor")
        lam: float = Field(0.1, ge=0.0, le=100.0,
                           description="weight of the noise-magnitude reward")
        units: NoiseUnits = noise_units_field()

    params: Params

    def wrap_edge(self, encoder: nn.Module,
                  feature_shape: tuple[int, int, int]) -> DefendedEdge:
        head = LearnedNoiseHead(feature_shape, self.params.scale)
        return DefendedEdge(encoder, head=head)

    def edge_loss(self, x: torch.Tensor, z: torch.Tensor,
                  edge: DefendedEdge) -> torch.Tensor | None:
        if self.params.lam == 0.0:
            return None
        head = edge.head
        if not isinstance(head, LearnedNoiseHead):
            raise TypeError(f"shredder needs an edge built by its wrap_edge, got head "
                            f"{type(head).__name__}")
        return -self.params.lam * head.scale().mean()

    def transform(self, z: torch.Tensor, *, training: bool,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        scale = attached_scale(z, "shredder") * noise_unit(z, self.params.units)
        return z + scale * laplace_like(z, generator)
