"""Learning-based inversion: train a decoder from queried (feature, image) pairs."""

from __future__ import annotations

import math
from copy import deepcopy
from typing import cast

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from strategies.attacks._common import (build_decoder, check_features, decode,
                                        init_parameters, map_in_batches, minibatches,
                                        split_indices)
from strategies.attacks.base import ATTACKS, Attack, BlackBoxQuery, QueryFree
from strategies.registry import PluginParams

__all__ = ["InverseNetwork"]

_PLATEAU_FACTOR, _PLATEAU_PATIENCE = 0.5, 5  # halve the lr after 5 flat epochs
_EVAL_BATCH = 256


@ATTACKS.register("inverse_network")
class InverseNetwork(Attack):
    """Inverse-network attack (He, Zhang, Lee, "Model Inversion Attacks Against
    Collaborative Inference", ACSAC 2019, https://doi.org/10.1145/3359789.3359824).

    The attacker queries the deployed edge on its auxiliary images, so every pair
    ``(x_aux, z_aux)`` already carries the defense's random transform (an adaptive
    attacker), and trains a decoder ``g`` with ``MSE(g(z_aux), x_aux)``: Adam with
    betas (0.5, 0.999), ReduceLROnPlateau on a held-out part of the auxiliary data, the
    decoder with the best held-out MSE is kept. ``reconstruct(z) = g(z)``.
    The decoder is :func:`strategies.attacks._common.build_decoder` (3x3 conv stem, one
    stride-2 transposed 4x4 conv per halving, BN + Tanh, sigmoid output); ``width`` and
    ``depth_extra`` sweep the attacker's capacity.
    """

    class Params(PluginParams):
        width: int = Field(64, ge=1, le=1024, description="decoder channels")
        depth_extra: int = Field(0, ge=0, le=8,
                                 description="extra 3x3 conv blocks per decoder stage")
        epochs: int = Field(50, ge=1, le=10_000)
        lr: float = Field(1e-3, gt=0.0, le=1.0)
        batch_size: int = Field(64, ge=2, le=65_536)
        held_out_fraction: float = Field(
            0.1, ge=0.0, le=0.5,
            description="aux share for lr scheduling and model choice; 0: training MSE")

    requires = BlackBoxQuery

    def __init__(self, params: PluginParams) -> None:
        super().__init__(params)
        self._decoder: nn.Module | None = None
        self._feature_shape: tuple[int, int, int] | None = None

    def _fit(self, knowledge: QueryFree, generator: torch.Generator) -> None:
        knowledge = cast(BlackBoxQuery, knowledge)  # Attack.fit checked the type
        p = self.params
        x = knowledge.aux_x
        z = map_in_batches(knowledge.query, x, _EVAL_BATCH).to(x.device)
        check_features(z, knowledge.feature_shape, "oracle output")
        decoder = build_decoder(knowledge.feature_shape, knowledge.image_shape,
                                p.width, p.depth_extra)
        decoder = init_parameters(decoder, generator).to(x.device)
        self._feature_shape = tuple(knowledge.feature_shape)
        self._decoder = self._train(decoder, x, z, generator)

    def _train(self, decoder: nn.Module, x: torch.Tensor, z: torch.Tensor,
               generator: torch.Generator) -> nn.Module:
        p = self.params
        train_idx, held_idx = split_indices(x.shape[0], p.held_out_fraction, generator)
        opt = torch.optim.Adam(decoder.parameters(), lr=p.lr, betas=(0.5, 0.999))
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, factor=_PLATEAU_FACTOR, patience=_PLATEAU_PATIENCE)
        best, best_state = math.inf, deepcopy(decoder.state_dict())
        for _ in range(p.epochs):
            decoder.train()
            train_mse = 0.0
            for idx in minibatches(train_idx, p.batch_size, generator):
                opt.zero_grad(set_to_none=True)
                loss = F.mse_loss(decoder(z[idx]), x[idx])
                loss.backward()
                opt.step()
                train_mse += loss.item() * len(idx) / len(train_idx)
            score = _held_out_mse(decoder, x[held_idx], z[held_idx]) \
                if len(held_idx) else train_mse
            plateau.step(score)
            if score < best:
                best, best_state = score, deepcopy(decoder.state_dict())
        decoder.load_state_dict(best_state)
        return decoder.eval()

    def reconstruct(self, z: torch.Tensor) -> torch.Tensor:
        """Decode ``z`` (N, C', H', W') to images in [0, 1], on ``z``'s device."""
        return decode(self._decoder, z, self._feature_shape, _EVAL_BATCH)


def _held_out_mse(decoder: nn.Module, x: torch.Tensor, z: torch.Tensor) -> float:
    decoder.eval()
    return F.mse_loss(map_in_batches(decoder, z, _EVAL_BATCH), x).item()
