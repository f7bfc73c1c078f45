"""Query-free inversion: a shadow edge trained through the frozen cloud, then rMLE."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from strategies.attacks._alignment import labelled_aux, new_shadow_edge
from strategies.attacks._common import frozen_copy, minibatches
from strategies.attacks.base import ATTACKS, QueryFree
from strategies.attacks.rmle import RMLE

__all__ = ["QueryFreeAttack"]


@ATTACKS.register("query_free")
class QueryFreeAttack(RMLE):
    """Query-free attack (He, Zhang, Lee, "Model Inversion Attacks Against Collaborative
    Inference", ACSAC 2019, https://doi.org/10.1145/3359789.3359824).

    The attacker has neither the edge nor queries, only the cloud's model for the tier
    and labelled auxiliary data. It trains a shadow edge ``E'`` (public ``Normalize``,
    then a small conv net mirroring the edge's pooling steps down to ``feature_shape``;
    see :func:`strategies.attacks._common.build_shadow_edge`) so that the frozen cloud
    classifies ``cloud(E'(x_aux))`` correctly (cross-entropy, Adam lr 1e-3, 50 epochs),
    then runs the same rMLE optimisation as :class:`~strategies.attacks.rmle.RMLE`
    against ``E'`` (He et al.: 500 iterations, lr 1e-1, lambda_TV 2).

    The cloud is copied and frozen (eval mode, no gradients into its parameters); only
    E' learns. How well this works depends on how tightly the cloud pins down the
    features it expects; E' is never compared with the real edge.
    """

    class Params(RMLE.Params):
        lr: float = Field(1e-1, gt=0.0, le=10.0)
        lambda_tv: float = Field(2.0, ge=0.0, le=1e6)
        shadow_width: int = Field(64, ge=1, le=1024, description="shadow edge channels")
        shadow_epochs: int = Field(50, ge=1, le=10_000)
        shadow_lr: float = Field(1e-3, gt=0.0, le=1.0)
        batch_size: int = Field(32, ge=1, le=65_536)

    requires = QueryFree

    def _fit(self, knowledge: QueryFree, generator: torch.Generator) -> None:
        self._prepare(knowledge, generator)
        self._encoder = self._train_shadow(knowledge, generator)

    def _train_shadow(self, knowledge: QueryFree,
                      generator: torch.Generator) -> nn.Module:
        p = self.params
        x, y = labelled_aux(knowledge)
        shadow = new_shadow_edge(knowledge, p.shadow_width, generator)
        cloud = frozen_copy(knowledge.cloud).to(x.device)
        opt = torch.optim.Adam(shadow.parameters(), lr=p.shadow_lr)
        rows = torch.arange(x.shape[0])
        for _ in range(p.shadow_epochs):
            for idx in minibatches(rows, p.batch_size, generator):
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(cloud(shadow(x[idx])), y[idx]).backward()
                opt.step()
        return frozen_copy(shadow)
