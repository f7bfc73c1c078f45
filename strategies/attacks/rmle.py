"""Regularised maximum-likelihood inversion (rMLE) against the white-box edge."""

from __future__ import annotations

from typing import cast

import torch
from pydantic import Field
from torch import nn

from strategies.attacks._common import (InitKind, check_features, frozen_copy,
                                        initial_images, invert_by_optimisation)
from strategies.attacks.base import ATTACKS, Attack, QueryFree, WhiteBox
from strategies.registry import PluginParams

__all__ = ["RMLE"]


@ATTACKS.register("rmle")
class RMLE(Attack):
    """White-box rMLE (He, Zhang, Lee, "Model Inversion Attacks Against Collaborative
    Inference", ACSAC 2019, https://doi.org/10.1145/3359789.3359824).

    ``x_hat = argmin_x mse(E(x), z) / mean(z^2) + lambda_tv TV_beta(x)
    + lambda_l2 mean(x^2)``,
    optimised with Adam for all observed rows at once (in chunks of ``chunk_size``; the
    loss is a sum of per-image terms, so chunking does not change any result). ``x``
    lives in [0, 1] directly and is clamped after every step (projected Adam), because
    E begins with the public ``Normalize`` layer and so expects [0, 1] images.

    ``E`` is a frozen eval-mode copy of ``knowledge.edge`` taken at :meth:`fit`
    (Normalize + encoder + the defense's learned edge layers). The defense's *random*
    :meth:`~strategies.defenses.base.Defense.transform` is not part of E: the attacker
    matches the noisy z with the clean edge output, as in He et al.

    Defaults: Adam lr 1e-2 and 500 iterations (He et al., shallow cuts). ``TV_beta`` is
    He et al.'s ``(dh^2 + dw^2)^(beta/2)`` with beta 1, *averaged* over pixels and
    channels (so ``lambda_tv`` does not scale with image size); the feature term is the
    mean squared error over feature elements *relative* to the observed feature's mean
    square, per image (``relative: false`` gives He et al.'s absolute error): funnel
    edges emit features of ~1e-2, where an absolute error of ~1e-4 lets any TV weight
    flatten the image to a constant, and a defense must not win by scaling z down.
    He et al. use lambda_TV 0 at conv11, 1e1 at ReLU22 and 1e3 at ReLU32 with a
    different TV normalisation and the absolute error; our default 0.05 is
    chosen for shallow cuts (weak smoothing that removes high-frequency artefacts
    without blurring; sweep it for deeper cuts). ``init="mean"`` starts from the mean
    auxiliary image, the [0, 1]-space equivalent of He et al.'s zero start in
    normalised space.
    """

    class Params(PluginParams):
        iterations: int = Field(500, ge=1, le=100_000)
        lr: float = Field(1e-2, gt=0.0, le=10.0)
        lambda_tv: float = Field(0.05, ge=0.0, le=1e6)
        tv_beta: float = Field(1.0, gt=0.0, le=2.0)
        lambda_l2: float = Field(0.0, ge=0.0, le=1e6)
        relative: bool = Field(True, description="feature error relative to mean(z^2)")
        init: InitKind = "mean"
        chunk_size: int = Field(128, ge=1, le=65_536,
                                description="rows optimised together (memory only)")

    requires = WhiteBox

    def __init__(self, params: PluginParams) -> None:
        super().__init__(params)
        self._encoder: nn.Module | None = None
        self._mean_image: torch.Tensor | None = None
        self._feature_shape: tuple[int, int, int] | None = None
        self._image_shape: tuple[int, int, int] | None = None
        self._seed = 0

    def _fit(self, knowledge: QueryFree, generator: torch.Generator) -> None:
        self._prepare(knowledge, generator)
        edge = cast(WhiteBox, knowledge).edge
        if not isinstance(edge, nn.Module):
            raise TypeError(f"knowledge.edge must be an nn.Module, "
                            f"got {type(edge).__name__}")
        self._encoder = frozen_copy(edge).to(knowledge.aux_x.device)

    def _prepare(self, knowledge: QueryFree, generator: torch.Generator) -> None:
        """Record shapes, the mean auxiliary image and a seed for random starts."""
        self._feature_shape = tuple(knowledge.feature_shape)
        self._image_shape = tuple(knowledge.image_shape)
        self._mean_image = knowledge.aux_x.detach().mean(0)
        # one draw at fit time: reconstruct() is then a pure function of z
        self._seed = int(torch.randint(0, 2**62, (1,), generator=generator))

    def reconstruct(self, z: torch.Tensor) -> torch.Tensor:
        """Optimise one image per row of ``z``; images in [0, 1] on ``z``'s device."""
        if self._encoder is None or self._mean_image is None:
            raise RuntimeError("call fit() before reconstruct()")
        check_features(z, self._feature_shape, "z")
        p = self.params
        device = self._mean_image.device
        start = initial_images(p.init, z.shape[0], self._image_shape, self._mean_image,
                               torch.Generator().manual_seed(self._seed))
        x = invert_by_optimisation(
            self._encoder, z.to(device), start, iterations=p.iterations, lr=p.lr,
            lambda_tv=p.lambda_tv, tv_beta=p.tv_beta, lambda_l2=p.lambda_l2,
            chunk_size=p.chunk_size, relative=p.relative)
        return x.to(z.device)
