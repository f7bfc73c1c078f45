"""The encoder interface: what the edge device runs up to the backbone's cut.

An encoder decides the *edge architecture* (the backbone's own layers, or SiftFunnel's
funnel); the backbone decides where the cut is and what the cloud trunk looks like.
Every encoder's output has the cut's spatial size, so any tier's feature fits the
shared trunk after a channel adapter (:class:`strategies.models.cloud.CloudModel`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from torch import nn

from strategies.models.backbone import Backbone
from strategies.registry import PluginParams, Registry

__all__ = ["ENCODERS", "Encoder", "NoParams", "count_halvings"]


class NoParams(PluginParams):
    """An encoder without parameters."""


def count_halvings(image_hw: Sequence[int], cut_hw: Sequence[int]) -> int:
    """Number of floor halvings (MaxPool2d(2)) taking ``image_hw`` to ``cut_hw``.

    Raises
    ------
    ValueError
        If no whole number of halvings maps the input size onto the cut size.
    """
    height, width = (int(s) for s in image_hw)
    target = tuple(int(s) for s in cut_hw)
    n = 0
    while max(height >> n, width >> n) >= 1:
        if (height >> n, width >> n) == target:
            return n
        n += 1
    raise ValueError(f"cut spatial size {target} is not the input size "
                     f"{(height, width)} halved a whole number of times")


class Encoder:
    """Base class of every encoder.

    Parameters
    ----------
    params
        The validated ``Params`` of the subclass.
    """

    Params: ClassVar[type[PluginParams]] = NoParams
    name: ClassVar[str] = "base"

    def __init__(self, params: PluginParams) -> None:
        self.params = params

    def supports(self, backbone: Backbone) -> bool:
        """Whether :meth:`build` can produce the cut's spatial size for ``backbone``."""
        return True

    def build(self, backbone: Backbone) -> nn.Module:
        """Fresh edge layers for ``backbone``'s input; output spatial size = cut's."""
        raise NotImplementedError


ENCODERS: Registry[type[Encoder]] = Registry(
    "encoder", package="strategies.models.encoders")
