"""The backbone interface: a classification network split at a named cut layer.

A backbone is a *factory*, not a module: :meth:`Backbone.edge_layers` and
:meth:`Backbone.trunk` build fresh layers on every call, so the edges (per device or
tier) and the cloud trunk never share parameters by accident.
"""

from __future__ import annotations

import typing
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from torch import nn

from strategies.models._shapes import check_image_shape, feature_shape
from strategies.registry import PluginParams, Registry

__all__ = ["BACKBONES", "Backbone", "LayerSpec"]

LayerSpec = tuple[str, Callable[[], nn.Module]]
"""A named layer and the zero-argument factory that builds it fresh."""


class Backbone:
    """Base class of every backbone.

    Subclasses declare ``Params`` with a ``cut`` field typed as a ``Literal`` of layer
    names, an ``example_shape`` (a typical input, used by contract tests) and implement
    :meth:`layers`; optionally :meth:`check_image` to reject unsupported input sizes.

    Parameters
    ----------
    params
        The validated ``Params`` of the subclass.
    image_shape
        Input shape (C, H, W).
    num_classes
        Number of classes K of the logits.
    """

    Params: ClassVar[type[PluginParams]]
    name: ClassVar[str] = "base"
    example_shape: ClassVar[tuple[int, int, int]] = (3, 32, 32)

    def __init__(self, params: PluginParams, image_shape: Sequence[int],
                 num_classes: int) -> None:
        self.params = params
        self.image_shape = check_image_shape(image_shape)
        if not isinstance(num_classes, int) or isinstance(num_classes, bool) \
                or num_classes < 2:
            raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
        self.num_classes = num_classes
        self.check_image(self.image_shape)
        self._cut_shape: tuple[int, int, int] | None = None

    # -- subclass API ------------------------------------------------------------------
    def layers(self) -> list[LayerSpec]:
        """The whole network, input to logits, as named layer factories."""
        raise NotImplementedError

    def check_image(self, image_shape: tuple[int, int, int]) -> None:
        """Raise ``ValueError`` if this backbone cannot take ``image_shape``."""

    # -- derived -----------------------------------------------------------------------
    @classmethod
    def cuts(cls) -> tuple[str, ...]:
        """The cut names this backbone supports (the ``Literal`` of ``Params.cut``)."""
        field = cls.Params.model_fields.get("cut")
        return typing.get_args(field.annotation) if field is not None else ()

    @property
    def cut(self) -> str:
        """The layer after which the network is split."""
        return str(getattr(self.params, "cut"))

    def _split_index(self, specs: list[LayerSpec]) -> int:
        names = [name for name, _ in specs]
        if self.cut not in names:
            raise ValueError(f"cut {self.cut!r} is not a layer of {self.name}; "
                             f"layers: {', '.join(names)}")
        return names.index(self.cut) + 1

    @staticmethod
    def _build(specs: list[LayerSpec]) -> nn.Sequential:
        return nn.Sequential(OrderedDict((name, make()) for name, make in specs))

    def edge_layers(self) -> nn.Sequential:
        """Fresh layers from the input up to and including the cut layer."""
        specs = self.layers()
        return self._build(specs[: self._split_index(specs)])

    def trunk(self) -> nn.Sequential:
        """Fresh layers after the cut, ending in logits (N, K)."""
        specs = self.layers()
        return self._build(specs[self._split_index(specs):])

    @property
    def cut_shape(self) -> tuple[int, int, int]:
        """Per-sample feature shape (C, H, W) at the cut (one dry run, cached)."""
        if self._cut_shape is None:
            shape = feature_shape(self.edge_layers(), self.image_shape)
            self._cut_shape = check_image_shape(shape, name="cut shape")
        return self._cut_shape

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(cut={self.cut!r}, "
                f"image_shape={self.image_shape}, num_classes={self.num_classes})")

    def __eq__(self, other: Any) -> bool:
        return (type(other) is type(self) and other.params == self.params
                and other.image_shape == self.image_shape
                and other.num_classes == self.num_classes)

    def __hash__(self) -> int:
        return hash((type(self), self.params, self.image_shape, self.num_classes))


BACKBONES: Registry[type[Backbone]] = Registry(
    "backbone", package="strategies.models.backbones")
