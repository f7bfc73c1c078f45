"""FORA: a substitute edge aligned with the observed features, then a decoder."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from strategies.attacks._alignment import (build_discriminator, gradient_penalty,
                                           labelled_aux, mk_mmd, new_shadow_edge,
                                           observed_features, sample_rows)
from strategies.attacks._common import (build_decoder, frozen_copy, init_parameters,
                                        map_in_batches, minibatches)
from strategies.attacks.base import ATTACKS, QueryFree
from strategies.attacks.inverse_network import InverseNetwork

__all__ = ["FORA"]

_EVAL_BATCH = 256


@ATTACKS.register("fora")
class FORA(InverseNetwork):
    """Feature-Oriented Reconstruction Attack (Xu et al., "A Stealthy Wolf in Sheep's
    Clothing: Feature-Oriented Reconstruction Attack in Split Learning", CVPR 2024,
    https://arxiv.org/abs/2405.04115).

    Query-free: the victim's edge is never run. The attacker trains a substitute edge
    ``E'`` (:func:`~strategies.attacks._common.build_shadow_edge`: public normalisation,
    conv + ReLU, one pooling per halving down to the tier's ``feature_shape``) on its
    auxiliary images so that the *distribution* of ``E'(x_aux)`` matches the features
    the cloud observed (``knowledge.observed``). Per mini-batch of auxiliary images,
    with as many observed rows drawn at random::

        L(E') = a * MK-MMD(E'(x_aux), z_obs) + (1 - a) * (-critic(E'(x_aux)))
                + task_weight * CE(cloud(E'(x_aux)), y_aux)

    MK-MMD uses five Gaussian kernels (bandwidths 2^-3..2^1 times the mean squared
    distance); the critic is a WGAN-GP critic on features (Adam at ``critic_lr``,
    penalty weight ``gp_weight``; 1e-5 and 1000 as in the authors' code), updated once
    per step when ``a < 1``.
    Then an inverse network ``g`` (the decoder and training of
    :class:`~strategies.attacks.inverse_network.InverseNetwork`: ``width``,
    ``depth_extra``, ``epochs``, ``lr``, ``batch_size``, held-out model choice) learns
    ``E'(x_aux) -> x_aux`` and ``reconstruct(z) = g(z)``.

    Differences from the paper's code, on purpose: FORA's default ``a = 1`` (pure
    MK-MMD) is kept; the cross-entropy through the frozen cloud (``task_weight``) is
    our addition: distribution matching alone cannot tell ``E`` from ``E`` composed
    with a symmetry of the data (a flip of a flip-symmetric image set), the cloud's
    labels can; set it to 0 for the paper's loss. The substitute is trained first
    and the decoder after it (the paper trains them side by side each step), for
    ``substitute_epochs`` passes at ``substitute_lr`` 1e-3 (the code: 10,000 steps at
    1e-4); the cloud is frozen (the paper's server keeps training the target).
    """

    class Params(InverseNetwork.Params):
        substitute_width: int = Field(64, ge=1, le=1024,
                                      description="substitute edge channels")
        substitute_epochs: int = Field(50, ge=1, le=10_000)
        substitute_lr: float = Field(1e-3, gt=0.0, le=1.0)
        a: float = Field(1.0, ge=0.0, le=1.0,
                         description="MK-MMD share of the alignment (1 - a: critic)")
        task_weight: float = Field(
            1.0, ge=0.0, le=1e3,
            description="weight of CE(cloud(E'(x_aux)), y_aux); 0: the paper's loss")
        critic_width: int = Field(32, ge=1, le=512)
        critic_lr: float = Field(1e-5, gt=0.0, le=1.0)
        gp_weight: float = Field(1000.0, ge=0.0, le=1e5, description="WGAN-GP weight")

    requires = QueryFree
    observed_phases = ("training", "inference")  # any feature the cloud received

    def _fit(self, knowledge: QueryFree, generator: torch.Generator) -> None:
        p = self.params
        observed = observed_features(knowledge, self.name)
        x = knowledge.aux_x
        substitute = self._train_substitute(knowledge, observed, generator)
        z = map_in_batches(substitute, x, _EVAL_BATCH)
        decoder = build_decoder(knowledge.feature_shape, knowledge.image_shape,
                                p.width, p.depth_extra)
        decoder = init_parameters(decoder, generator).to(x.device)
        self._feature_shape = tuple(knowledge.feature_shape)
        self._decoder = self._train(decoder, x, z, generator)

    def _train_substitute(self, knowledge: QueryFree, observed: torch.Tensor,
                          generator: torch.Generator) -> nn.Module:
        p = self.params
        x, y = labelled_aux(knowledge)
        sub = new_shadow_edge(knowledge, p.substitute_width, generator)
        cloud = frozen_copy(knowledge.cloud).to(x.device)
        opt = torch.optim.Adam(sub.parameters(), lr=p.substitute_lr)
        critic = crit_opt = None
        if p.a < 1.0:
            critic = init_parameters(build_discriminator(knowledge.feature_shape,
                                                         p.critic_width), generator)
            critic = critic.to(x.device)
            crit_opt = torch.optim.Adam(critic.parameters(), lr=p.critic_lr)
        rows = torch.arange(x.shape[0])
        for _ in range(p.substitute_epochs):
            for idx in minibatches(rows, p.batch_size, generator):
                z_obs = observed[sample_rows(len(observed), len(idx), generator)]
                feat = sub(x[idx])
                loss = p.a * mk_mmd(feat, z_obs) if p.a > 0 else feat.sum() * 0.0
                if critic is not None:
                    loss = loss - (1.0 - p.a) * critic(feat).mean()
                if p.task_weight > 0:
                    loss = loss + p.task_weight * F.cross_entropy(cloud(feat), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if critic is not None:
                    self._critic_step(critic, crit_opt, z_obs, feat.detach(), generator)
        return frozen_copy(sub)

    def _critic_step(self, critic: nn.Module, opt: torch.optim.Optimizer,
                     real: torch.Tensor, fake: torch.Tensor,
                     generator: torch.Generator) -> None:
        """One WGAN-GP step: observed features should score above substitute ones."""
        loss = critic(fake).mean() - critic(real).mean()
        if self.params.gp_weight > 0:
            loss = loss + self.params.gp_weight * gradient_penalty(critic, real, fake,
                                                                   generator)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
