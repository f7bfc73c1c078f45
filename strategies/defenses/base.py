"""The defense interface: hooks that do nothing by default.

A defense is plain PyTorch (no Flower, no Ray) so the same object works in a unit test,
in centralized provider training and inside a device actor in split training:

* :meth:`Defense.edge_spec`    - edge-architecture hook (e.g. swap in the funnel encoder);
* :meth:`Defense.wrap_edge`    - add learned edge-side layers (VIB head, learned noise, pruning);
* :meth:`Defense.edge_loss`    - device-side training term, sees ``x`` and ``z``;
* :meth:`Defense.sample_losses` - cloud-side training loss of each sample, sees ``logits``
  and ``labels`` (:meth:`Defense.task_loss` is their mean);
* :meth:`Defense.transform`    - random feature transform on the device before sending
  (noise, masks), in training and at inference;
* :meth:`Defense.adapter`      - how the cloud lifts this tier's channels into the trunk.

A defense object holds only its validated ``Params``; every learned state lives in the
modules returned by :meth:`wrap_edge`, so defenses pickle and tier averaging sees it all.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from strategies.registry import PluginParams, Registry

__all__ = ["DEFENSES", "Defense", "DefendedEdge", "NoParams", "AdapterKind"]

AdapterKind = Literal["auto", "up", "linear"]


class NoParams(PluginParams):
    """A defense without parameters."""


class DefendedEdge(nn.Module):
    """An edge encoder plus the defense's learned edge-side layers.

    ``forward(x)`` returns the feature the device transmits (before the random
    :meth:`Defense.transform`). Modules only used to *train* the defense (a proxy
    attacker's decoder) live in ``training_only``: they are averaged and checkpointed
    with the edge but are never run at inference and never counted as edge cost.
    """

    def __init__(self, encoder: nn.Module, head: nn.Module | None = None,
                 training_only: dict[str, nn.Module] | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head if head is not None else nn.Identity()
        self.training_only = nn.ModuleDict(training_only or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(x))

    def deployed_parameters(self) -> list[nn.Parameter]:
        """Parameters that ship to the device (excludes ``training_only``)."""
        return [p for n, p in self.named_parameters() if not n.startswith("training_only.")]


class Defense:
    """Base class of every defense; subclasses override only the hooks they need.

    Parameters
    ----------
    params
        The validated ``Params`` instance of the subclass.
    """

    Params: ClassVar[type[PluginParams]] = NoParams
    name: ClassVar[str] = "base"

    def __init__(self, params: PluginParams) -> None:
        self.params = params

    @classmethod
    def adds_edge_loss(cls) -> bool:
        """Whether the defense adds a device-side loss term (overrides ``edge_loss``)."""
        return cls.edge_loss is not Defense.edge_loss

    @classmethod
    def transforms(cls) -> bool:
        """Whether the defense transforms features before sending (overrides
        ``transform``; the base transform returns them unchanged)."""
        return cls.transform is not Defense.transform

    # -- architecture -----------------------------------------------------------------
    def edge_spec(self, spec: Any) -> Any:
        """Return the encoder spec (a registry ``{name, params}`` model) to build."""
        return spec

    def wrap_edge(self, encoder: nn.Module, feature_shape: tuple[int, int, int]) -> DefendedEdge:
        """Wrap the built encoder; ``feature_shape`` is its (C, H, W) output."""
        return DefendedEdge(encoder)

    def adapter(self) -> AdapterKind:
        """Cloud-side channel lift for this tier.

        ``"auto"``: identity when the tier already sends the backbone's channels at the
        cut, else the reference ``Up`` (+ triplet attention); ``"up"``: always ``Up``;
        ``"linear"``: a 1x1 convolution (the ablation without ``Up``).
        """
        return "auto"

    # -- training -----------------------------------------------------------------------
    def edge_loss(self, x: torch.Tensor, z: torch.Tensor,
                  edge: DefendedEdge) -> torch.Tensor | None:
        """Device-side loss term on input ``x`` and transmitted feature ``z``.

        The engine multiplies it by ``training.edge_loss_warmup``'s weight of the round
        and skips the call while that weight is 0.
        """
        return None

    def sample_losses(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cloud-side utility loss of each sample, shape ``(B,)`` (cross-entropy by default).

        Per sample, so that the cloud takes every device's mean loss of a cohort's batch
        from one call (segment sums) instead of one call per device.
        """
        return F.cross_entropy(logits, labels, reduction="none")

    def task_loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Cloud-side utility loss of a batch: the mean of :meth:`sample_losses`."""
        return self.sample_losses(logits, labels).mean()

    # -- transmission -------------------------------------------------------------------
    def transform(self, z: torch.Tensor, *, training: bool,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        """Random transform of the feature before it leaves the device."""
        return z


DEFENSES: Registry[type[Defense]] = Registry("defense", package="strategies.defenses")
