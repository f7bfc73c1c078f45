"""The cloud model: per-tier channel adapters in front of one shared trunk.

Tiers send differently distributed features into the same trunk, so one set of
BatchNorm running statistics fits none of them at inference: the trunk's BatchNorm
layers share their affine weights but keep running statistics per tier (as FedBN keeps
them per client; Li et al. 2021, arXiv 2102.07623).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import get_args

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from strategies.defenses.base import AdapterKind
from strategies.models._shapes import check_image_shape
from strategies.models.backbone import Backbone
from strategies.models.blocks import TripletAttention, Up

__all__ = ["CloudModel", "TierBatchNorm", "TierView", "build_cloud"]

TierSpec = tuple[Sequence[int], str]
_KINDS: tuple[str, ...] = get_args(AdapterKind)


def _adapter(kind: str, c_in: int, c_out: int) -> nn.Module:
    if kind == "linear":
        return nn.Conv2d(c_in, c_out, 1)
    if kind == "auto" and c_in == c_out:
        return nn.Identity()
    # The reference cloud lifts channels with Up followed by triplet attention.
    return nn.Sequential(Up(c_in, c_out), TripletAttention())


class TierBatchNorm(nn.Module):
    """BatchNorm with shared affine weights and per-tier running statistics.

    ``tier`` selects the statistics; :class:`CloudModel` and :class:`TierView` set it
    before each forward pass.
    """

    def __init__(self, bn: _BatchNorm, tiers: Sequence[str]) -> None:
        super().__init__()
        self.weight = nn.Parameter(bn.weight.detach().clone())
        self.bias = nn.Parameter(bn.bias.detach().clone())
        self.tier_stats = nn.ModuleDict({
            t: type(bn)(bn.num_features, eps=bn.eps, momentum=bn.momentum, affine=False)
            for t in tiers})
        self.tier: str | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.tier is None:
            raise RuntimeError("TierBatchNorm needs its tier set before forward")
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return self.tier_stats[self.tier](x) * self.weight.view(shape) + \
            self.bias.view(shape)


def _per_tier_batchnorm(module: nn.Module, tiers: Sequence[str]) -> nn.Module:
    """Replace every affine BatchNorm below ``module`` by a :class:`TierBatchNorm`."""
    for name, child in module.named_children():
        if isinstance(child, _BatchNorm) and child.affine:
            setattr(module, name, TierBatchNorm(child, tiers))
        else:
            _per_tier_batchnorm(child, tiers)
    return module


def _select_tier(trunk: nn.Module, tier: str) -> None:
    for m in trunk.modules():
        if isinstance(m, TierBatchNorm):
            m.tier = tier


class TierView(nn.Module):
    """One tier's path through the cloud: its adapter, then the shared trunk.

    Holds *references* to the cloud's modules (no copies), so training or attacking the
    view acts on the cloud model itself.
    """

    def __init__(self, adapter: nn.Module, trunk: nn.Module, tier: str) -> None:
        super().__init__()
        self.adapter = adapter
        self.trunk = trunk
        self.tier = tier

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        _select_tier(self.trunk, self.tier)
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
        self.trunk = _per_tier_batchnorm(backbone.trunk(), list(tiers))

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
        _select_tier(self.trunk, tier)
        return self.trunk(self.adapters[tier](z))

    def tier_view(self, tier: str) -> TierView:
        """A module ``z -> logits`` for one tier, sharing this model's parameters."""
        self._check_tier(tier)
        return TierView(self.adapters[tier], self.trunk, tier)


def build_cloud(backbone: Backbone, tiers: Mapping[str, TierSpec]) -> CloudModel:
    """Build the :class:`CloudModel` for ``backbone`` and the given ``tiers``."""
    return CloudModel(backbone, tiers)
