"""The cloud model: per-tier channel adapters in front of one shared trunk."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import get_args

import torch
from torch import nn

from strategies.defenses.base import AdapterKind
from strategies.models._shapes import check_image_shape
from strategies.models.backbone import Backbone
from strategies.models.blocks import TripletAttention, Up

__all__ = ["CloudModel", "TierView", "build_cloud"]

TierSpec = tuple[Sequence[int], str]
_KINDS: tuple[str, ...] = get_args(AdapterKind)


def _adapter(kind: str, c_in: int, c_out: int) -> nn.Module:
    if kind == "linear":
        return nn.Conv2d(c_in, c_out, 1)
    if kind == "auto" and c_in == c_out:
        return nn.Identity()
    # The reference cloud lifts channels with Up followed by triplet attention.
    return nn.Sequential(Up(c_in, c_out), TripletAttention())


class TierView(nn.Module):
    """One tier's path through the cloud: its adapter, then the shared trunk.

    Holds *references* to the cloud's modules (no copies), so training or attacking the
    view acts on the cloud model itself.
    """

    def __init__(self, adapter: nn.Module, trunk: nn.Module) -> None:
        super().__init__()
        self.adapter = adapter
        self.trunk = trunk

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.adapter(z))


class CloudModel(nn.Module):
    """The shared cloud: per-tier adapters lifting each tier's channels into one trunk.

    Following SiftFunnel (https://arxiv.org/abs/2501.00824), a tier transmitting fewer
    channels than the backbone has at its cut is lifted by ``Up`` + triplet attention.

    Parameters
    ----------
    backbone
        Gives the cut shape (C, H, W) and builds the trunk.
    tiers
        Tier name -> (feature_shape (c, H, W), adapter kind). Kind ``"auto"``: identity
        when c == C, else Up(c, C) + TripletAttention; ``"up"``: always Up + triplet;
        ``"linear"``: Conv1x1 (c -> C). Every tier must keep the cut's spatial size.
    """

    def __init__(self, backbone: Backbone, tiers: Mapping[str, TierSpec]) -> None:
        super().__init__()
        if not tiers:
            raise ValueError("tiers must name at least one tier, got none")
        self.cut_shape = backbone.cut_shape
        self.feature_shapes: dict[str, tuple[int, int, int]] = {}
        self.adapters = nn.ModuleDict()
        for tier, (shape, kind) in tiers.items():
            self._add_tier(tier, shape, kind)
        self.trunk = backbone.trunk()

    def _add_tier(self, tier: str, shape: Sequence[int], kind: str) -> None:
        if not isinstance(tier, str) or not tier or "." in tier:
            raise ValueError(f"tier names must be non-empty strings without '.', "
                             f"got {tier!r}")
        if kind not in _KINDS:
            raise ValueError(f"adapter kind of tier {tier!r} must be one of "
                             f"{', '.join(_KINDS)}, got {kind!r}")
        c, height, width = check_image_shape(
            [int(s) for s in shape], name=f"feature shape of tier {tier!r}")
        if (height, width) != self.cut_shape[1:]:
            raise ValueError(f"feature shape of tier {tier!r} has spatial size "
                             f"{(height, width)}, the cut has {self.cut_shape[1:]}")
        try:
            self.adapters[tier] = _adapter(kind, c, self.cut_shape[0])
        except KeyError as err:  # ModuleDict refuses names of its own attributes
            raise ValueError(f"tier name {tier!r} is reserved: {err}") from None
        self.feature_shapes[tier] = (c, height, width)

    @property
    def tiers(self) -> list[str]:
        """The tier names, in construction order."""
        return list(self.adapters.keys())

    def _check_tier(self, tier: str) -> None:
        if tier not in self.adapters:
            raise ValueError(f"unknown tier {tier!r}; known tiers: "
                             f"{', '.join(self.tiers)}")

    def forward(self, z: torch.Tensor, tier: str) -> torch.Tensor:
        """Logits (N, K) for features ``z`` (N, c, H, W) sent by devices of ``tier``."""
        self._check_tier(tier)
        return self.trunk(self.adapters[tier](z))

    def tier_view(self, tier: str) -> TierView:
        """A module ``z -> logits`` for one tier, sharing this model's parameters."""
        self._check_tier(tier)
        return TierView(self.adapters[tier], self.trunk)


def build_cloud(backbone: Backbone, tiers: Mapping[str, TierSpec]) -> CloudModel:
    """Build the :class:`CloudModel` for ``backbone`` and the given ``tiers``."""
    return CloudModel(backbone, tiers)
