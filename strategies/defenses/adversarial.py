"""Attacker-aware training against a simulated inversion decoder."""

from __future__ import annotations

import torch
from torch import nn

from strategies.defenses._common import (PROXY_KEY, ProxyParams, adversarial_term,
                                        build_proxy)
from strategies.defenses.base import DEFENSES, DefendedEdge, Defense

__all__ = ["AdversarialTraining"]


@DEFENSES.register("adversarial")
class AdversarialTraining(Defense):
    """Min-max training of the edge against a proxy model-inversion attacker.

    ResSFL (Li et al., "ResSFL: A Resistance Transfer Framework for Defending Model
    Inversion Attack in Split Federated Learning", CVPR 2022,
    https://arxiv.org/abs/2205.04007) and DeepObfuscator (Li et al., 2019,
    https://arxiv.org/abs/1909.04126). A proxy decoder (transposed convolutions from
    the feature shape to the image shape, sigmoid output) lives in
    ``DefendedEdge.training_only``, so it is never deployed nor counted as edge cost.
    Each :meth:`edge_loss` call first trains the proxy one Adam step on
    ``(z.detach(), x)`` (its optimiser is kept on the decoder module), then returns
    ``-lam * MSE(proxy(z), x)`` with the proxy's weights frozen: the edge learns
    features the adapting attacker reconstructs badly, while the cloud keeps plain
    cross-entropy. ResSFL's bottleneck at the cut is the tier's encoder choice.
    """

    class Params(ProxyParams):
        """Proxy-attacker weight and decoder settings (see ``ProxyParams``)."""

    params: Params

    def wrap_edge(self, encoder: nn.Module,
                  feature_shape: tuple[int, int, int]) -> DefendedEdge:
        proxy = build_proxy(encoder, feature_shape, self.params)
        return DefendedEdge(encoder, training_only={PROXY_KEY: proxy})

    def edge_loss(self, x: torch.Tensor, z: torch.Tensor,
                  edge: DefendedEdge) -> torch.Tensor | None:
        return adversarial_term(edge, x, z, self.params)
