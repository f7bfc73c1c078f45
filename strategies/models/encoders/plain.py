"""The unprotected edge: the backbone's own layers up to the cut."""

from __future__ import annotations

from torch import nn

from strategies.models.backbone import Backbone
from strategies.models.encoder import ENCODERS, Encoder, NoParams

__all__ = ["PlainEncoder"]


@ENCODERS.register("plain")
class PlainEncoder(Encoder):
    """The backbone's layers up to its cut: the reference point without a defense."""

    Params = NoParams

    def build(self, backbone: Backbone) -> nn.Module:
        return backbone.edge_layers()
