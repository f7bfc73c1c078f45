"""DISCO: dynamic, input-dependent channel pruning of the transmitted feature."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn

from strategies.defenses._common import (PROXY_KEY, ProxyParams, adversarial_term,
                                        build_proxy)
from strategies.defenses.base import DEFENSES, DefendedEdge, Defense

__all__ = ["ChannelPruner", "Disco"]


class ChannelPruner(nn.Module):
    """Predicts a per-sample, per-channel mask from ``z`` and applies it.

    Conv3x3 (C -> hidden) + ReLU -> global average pool -> Linear (hidden -> C) ->
    sigmoid gives soft scores ``m`` in (0, 1). Only the ``keep`` highest-scoring
    channels of each sample survive (``z * m * top_k(m)``), the others are zeroed, in
    training as at inference: the cloud learns on the features it will be sent (with
    soft masks in training and the cut only at inference, the quickstart's plain-cut
    tier fell from 0.98 to 0.23 accuracy). The pruner learns through the scores of the
    channels it keeps.
    """

    def __init__(self, channels: int, hidden: int, ratio: float) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(channels, hidden, 3, padding=1), nn.ReLU(),
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(hidden, channels))
        self.keep = max(1, channels - round(ratio * channels))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        m = torch.sigmoid(self.net(z))
        if self.keep < m.shape[1]:
            top = m.topk(self.keep, dim=1).indices
            m = m * torch.zeros_like(m).scatter_(1, top, 1.0)
        return z * m[:, :, None, None]


@DEFENSES.register("disco")
class Disco(Defense):
    """DISCO (Singh et al., "DISCO: Dynamic and Invariant Sensitive Channel
    Obfuscation for deep neural networks", CVPR 2021, https://arxiv.org/abs/2012.11025).

    A small pruner network on the edge (the head) predicts soft channel masks from
    ``z``; the fraction ``ratio`` of lowest-scoring channels of each sample is removed
    (in training too, see :class:`ChannelPruner`). As in
    :class:`~strategies.defenses.adversarial.AdversarialTraining`, a
    proxy decoder in ``training_only`` is trained one step per :meth:`edge_loss` call,
    which returns ``-lam * MSE(proxy(z), x)``; the cloud keeps cross-entropy, so the
    pruner learns to drop the channels that help reconstruction but not the task.
    """

    class Params(ProxyParams):
        ratio: float = Field(0.5, ge=0.0, lt=1.0,
                             description="fraction of channels pruned at inference")
        pruner_hidden: int = Field(32, ge=1, le=512, description="pruner channels")

    params: Params

    def wrap_edge(self, encoder: nn.Module,
                  feature_shape: tuple[int, int, int]) -> DefendedEdge:
        pruner = ChannelPruner(feature_shape[0], self.params.pruner_hidden,
                               self.params.ratio)
        proxy = build_proxy(encoder, feature_shape, self.params)
        return DefendedEdge(encoder, head=pruner, training_only={PROXY_KEY: proxy})

    def edge_loss(self, x: torch.Tensor, z: torch.Tensor,
                  edge: DefendedEdge) -> torch.Tensor | None:
        return adversarial_term(edge, x, z, self.params)
