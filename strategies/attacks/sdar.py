"""SDAR: simulator edge and decoder trained with adversarial regularisation."""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from strategies.attacks._alignment import (bce_logits, build_discriminator, flip_labels,
                                           labelled_aux, new_shadow_edge, num_classes,
                                           observed_features, sample_rows)
from strategies.attacks._common import (build_decoder, decode, frozen_copy,
                                        init_parameters, minibatches)
from strategies.attacks.base import ATTACKS, Attack, QueryFree
from strategies.registry import PluginParams

__all__ = ["SDAR"]

_EVAL_BATCH = 256
_BETAS = (0.5, 0.999)


class _Player:
    """A network, its critic and their two Adam optimisers."""

    def __init__(self, net: nn.Module, lr: float, critic: nn.Module | None,
                 critic_lr: float) -> None:
        self.net, self.critic = net, critic
        self.opt = torch.optim.Adam(net.parameters(), lr=lr, betas=_BETAS)
        self.critic_opt = None if critic is None else torch.optim.Adam(
            critic.parameters(), lr=critic_lr, betas=_BETAS)

    def step(self, loss: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()

    def critic_step(self, real: torch.Tensor, fake: torch.Tensor) -> None:
        """Standard GAN critic: observed/real rows are 1, generated rows 0."""
        if self.critic is None or self.critic_opt is None:
            return
        loss = bce_logits(self.critic(real.detach()), 1.0) + \
            bce_logits(self.critic(fake.detach()), 0.0)
        self.critic_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.critic_opt.step()


@ATTACKS.register("sdar")
class SDAR(Attack):
    """SDAR (Zhu et al., "Passive Inference Attacks on Split Learning via Adversarial
    Regularization", NDSS 2025, https://arxiv.org/abs/2310.10483).

    Query-free and passive: it uses only the features the cloud logged while training
    the split model (``knowledge.observed``, training-phase rows), the cloud's model
    for the tier and labelled auxiliary data. Each step takes an auxiliary mini-batch
    ``(x_s, y_s)`` and as many observed features ``z``:

    1. simulator ``E~`` (:func:`~strategies.attacks._common.build_shadow_edge`):
       ``CE(cloud(E~(x_s)), flip(y_s)) + lambda1 * BCE(D_f(E~(x_s)), 1)``, where
       ``D_f`` learns to tell observed ``z`` (1) from ``E~(x_s)`` (0) and ``flip``
       replaces each label by a uniform one with probability ``flip_rate``;
    2. decoder ``G`` (:func:`~strategies.attacks._common.build_decoder`):
       ``MSE(G(E~(x_s)), x_s) + lambda2 * BCE(D_x(G(z)), 1)``, where ``D_x`` learns to
       tell auxiliary images (1) from decoded observed features (0).

    ``reconstruct(z) = G(z)``. Defaults follow the authors' configuration (learning
    rates 1e-3 / 2e-5 / 5e-4, lambda1 0.02, lambda2 1e-5, flip rate 0.2) except
    ``dec_critic_lr`` (theirs 5e-9, i.e. the image critic nearly frozen).

    Simplified on purpose: (a) unconditional critics and decoder (SDAR's U-shaped /
    "no_cond" variant): the knowledge holds no labels of the observed rows; (b) the
    cloud is the final, frozen tier view, where SDAR's server trains its own model
    alongside and the simulator follows it round by round; observed rows from several
    rounds are pooled; (c) critics are small conv nets without batch norm or dropout
    (:func:`~strategies.attacks._alignment.build_discriminator`) and the decoder is
    the project's inverse-network decoder, not SDAR's ResNet-matched ones; (d) training
    runs ``epochs`` passes over the auxiliary data rather than a fixed step count.
    """

    class Params(PluginParams):
        simulator_width: int = Field(64, ge=1, le=1024,
                                     description="simulator edge channels")
        width: int = Field(64, ge=1, le=1024, description="decoder channels")
        depth_extra: int = Field(0, ge=0, le=8,
                                 description="extra 3x3 conv blocks per decoder stage")
        critic_width: int = Field(32, ge=1, le=512)
        epochs: int = Field(50, ge=1, le=10_000)
        batch_size: int = Field(128, ge=2, le=65_536)
        sim_lr: float = Field(1e-3, gt=0.0, le=1.0)
        sim_critic_lr: float = Field(2e-5, gt=0.0, le=1.0)
        lambda1: float = Field(0.02, ge=0.0, le=1e3,
                               description="feature critic weight (0: no D_f)")
        dec_lr: float = Field(5e-4, gt=0.0, le=1.0)
        dec_critic_lr: float = Field(2e-5, gt=0.0, le=1.0)
        lambda2: float = Field(1e-5, ge=0.0, le=1e3,
                               description="image critic weight (0: no D_x)")
        flip_rate: float = Field(0.2, ge=0.0, le=1.0)

    requires = QueryFree
    observed_phases = ("training",)  # passive: what the cloud logged while training

    def __init__(self, params: PluginParams) -> None:
        super().__init__(params)
        self._decoder: nn.Module | None = None
        self._feature_shape: tuple[int, int, int] | None = None

    def _fit(self, knowledge: QueryFree, generator: torch.Generator) -> None:
        p = cast(SDAR.Params, self.params)
        observed = observed_features(knowledge, self.name)
        x, y = labelled_aux(knowledge)
        fshape = tuple(knowledge.feature_shape)
        sim, dec = self._players(knowledge, generator)
        cloud = frozen_copy(knowledge.cloud).to(x.device)
        classes = num_classes(cloud, fshape, x.device)
        rows = torch.arange(x.shape[0])
        for _ in range(p.epochs):
            sim.net.train(), dec.net.train()
            for idx in minibatches(rows, p.batch_size, generator):
                z = observed[sample_rows(len(observed), len(idx), generator)]
                ys = flip_labels(y[idx], classes, p.flip_rate, generator)
                zs = sim.net(x[idx])
                loss = F.cross_entropy(cloud(zs), ys)
                if sim.critic is not None:
                    loss = loss + p.lambda1 * bce_logits(sim.critic(zs), 1.0)
                sim.step(loss)
                sim.critic_step(z, zs)
                with torch.no_grad():
                    zs = sim.net(x[idx])  # the updated simulator, as in SDAR
                loss = F.mse_loss(dec.net(zs), x[idx])
                if dec.critic is not None:
                    decoded = dec.net(z)
                    loss = loss + p.lambda2 * bce_logits(dec.critic(decoded), 1.0)
                dec.step(loss)
                if dec.critic is not None:
                    dec.critic_step(x[idx], decoded)
        self._feature_shape = fshape  # type: ignore[assignment]
        self._decoder = dec.net.eval()

    def _players(self, knowledge: QueryFree,
                 generator: torch.Generator) -> tuple[_Player, _Player]:
        p = cast(SDAR.Params, self.params)
        device = knowledge.aux_x.device
        fshape, ishape = knowledge.feature_shape, knowledge.image_shape

        def make(module: nn.Module) -> nn.Module:
            return init_parameters(module, generator).to(device)

        sim = new_shadow_edge(knowledge, p.simulator_width, generator)
        dec = make(build_decoder(fshape, ishape, p.width, p.depth_extra))
        d_f = make(build_discriminator(fshape, p.critic_width)) \
            if p.lambda1 > 0 else None
        d_x = make(build_discriminator(ishape, p.critic_width)) \
            if p.lambda2 > 0 else None
        return (_Player(sim, p.sim_lr, d_f, p.sim_critic_lr),
                _Player(dec, p.dec_lr, d_x, p.dec_critic_lr))

    def reconstruct(self, z: torch.Tensor) -> torch.Tensor:
        """Decode ``z`` (N, C', H', W') to images in [0, 1], on ``z``'s device."""
        return decode(self._decoder, z, self._feature_shape, _EVAL_BATCH)
