"""SiftFunnel's funnel encoder: a thin edge model with attention, few channels out."""

from __future__ import annotations

from collections import OrderedDict

from pydantic import Field
from torch import nn

from strategies.models.backbone import Backbone
from strategies.models.blocks import CBAM, SE, TripletAttention
from strategies.models.encoder import ENCODERS, Encoder, count_halvings
from strategies.registry import PluginParams

__all__ = ["FunnelEncoder"]

# Reduction ratios of the reference CNN variant: SE(64, 32), SE(12, 4), CBAM(12, 6).
_STEM_SE_RATIO = 32
_OUT_SE_RATIO = 4
_CBAM_RATIO = 6


def _pools(count: int) -> list[nn.Module]:
    return [nn.MaxPool2d(2) for _ in range(count)]


@ENCODERS.register("funnel")
class FunnelEncoder(Encoder):
    """Funnel encoder of SiftFunnel (Liu et al., https://arxiv.org/abs/2501.00824).

    Layout (reference CNN variant at the defaults, 64 x 64 RGB -> 12 x 16 x 16)::

        stem    Conv3x3 (nc -> width) + BN + MaxPool2 + ReLU
                SE(width, 32) -> TripletAttention                  [attention]
        funnel  Conv1x1 (width -> hidden) + BN + ReLU + MaxPool2
                Conv1x1 (hidden -> channels)
                depth x Conv3x3 (channels -> channels), joined by SiLU + Conv1x1
                Conv5x5 (channels -> channels) -> ReLU
                SE(channels, 4) -> CBAM(channels, 6)                [attention]

    The number of MaxPool2 steps n is whatever takes the input size to the backbone's
    cut size (n = 2 for an H/4 cut, 0 for a full-resolution cut); ceil(n/2) of them sit
    in the stem and floor(n/2) in the funnel: this reproduces the reference for n = 2,
    and pooling early keeps the later convolutions cheap for deeper cuts.
    """

    class Params(PluginParams):
        width: int = Field(64, ge=1, le=1024, description="stem channels")
        channels: int = Field(12, ge=1, le=1024, description="transmitted channels")
        hidden: int = Field(16, ge=1, le=1024, description="first funnel 1x1 output")
        depth: int = Field(2, ge=1, le=16, description="3x3 conv units in the funnel")
        attention: bool = Field(True, description="SE + triplet + CBAM on/off")

    def supports(self, backbone: Backbone) -> bool:
        try:
            count_halvings(backbone.image_shape[1:], backbone.cut_shape[1:])
        except ValueError:
            return False
        return True

    def build(self, backbone: Backbone) -> nn.Module:
        p = self.params
        n = count_halvings(backbone.image_shape[1:], backbone.cut_shape[1:])
        layers: OrderedDict[str, nn.Module] = OrderedDict()
        layers["stem"] = nn.Sequential(
            nn.Conv2d(backbone.image_shape[0], p.width, 3, padding=1),
            nn.BatchNorm2d(p.width), *_pools(n - n // 2), nn.ReLU(),
        )
        if p.attention:
            layers["se_stem"] = SE(p.width, _STEM_SE_RATIO)
            layers["triplet"] = TripletAttention()
        layers["funnel"] = self._funnel(n // 2)
        if p.attention:
            layers["se_out"] = SE(p.channels, _OUT_SE_RATIO)
            layers["cbam"] = CBAM(p.channels, _CBAM_RATIO)
        return nn.Sequential(layers)

    def _funnel(self, pools: int) -> nn.Sequential:
        p = self.params
        c = p.channels
        body: list[nn.Module] = [
            nn.Conv2d(p.width, p.hidden, 1), nn.BatchNorm2d(p.hidden), nn.ReLU(),
            *_pools(pools), nn.Conv2d(p.hidden, c, 1),
        ]
        for unit in range(p.depth):
            if unit:
                body += [nn.SiLU(), nn.Conv2d(c, c, 1)]
            body.append(nn.Conv2d(c, c, 3, padding=1))
        body += [nn.Conv2d(c, c, 5, padding=2), nn.ReLU()]
        return nn.Sequential(*body)
