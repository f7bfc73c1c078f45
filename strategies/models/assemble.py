"""Assembling a device's edge model: normalisation, encoder, defense wrapper."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel
from torch import nn

from strategies.defenses.base import DefendedEdge, Defense
from strategies.models._shapes import feature_shape
from strategies.models.backbone import Backbone
from strategies.models.blocks import Normalize
from strategies.models.encoder import ENCODERS

__all__ = ["build_edge", "feature_shape"]


def _encoder_params(name: str, params: Any) -> Any:
    """Hand the registry a dict unless ``params`` already is that encoder's Params."""
    cls = ENCODERS.get(name)
    if isinstance(params, BaseModel) and not isinstance(params, cls.Params):
        return params.model_dump()
    return params


def build_edge(backbone: Backbone, encoder_spec: Any, defense: Defense,
               normalization: tuple[Sequence[float], Sequence[float]]) -> DefendedEdge:
    """Build a device's edge model: ``Normalize -> encoder``, wrapped by the defense.

    Parameters
    ----------
    backbone
        Fixes the input shape and the cut the encoder must reach.
    encoder_spec
        Any object with ``.name`` (an :data:`ENCODERS` name) and ``.params`` (a dict or
        Params model); the defense may swap it first (:meth:`Defense.edge_spec`).
    defense
        The device's defense; its :meth:`Defense.wrap_edge` adds edge-side layers.
    normalization
        (mean, std) per input channel of the dataset.

    Returns
    -------
    DefendedEdge
        ``defense.wrap_edge(Sequential(Normalize, encoder), feature_shape)``; the
        encoder's layers are ``result.encoder[1]``.
    """
    spec = defense.edge_spec(encoder_spec)
    for attr in ("name", "params"):
        if not hasattr(spec, attr):
            raise TypeError(f"encoder_spec needs .name and .params, got {spec!r}")
    if len(normalization) != 2:
        raise ValueError(f"normalization must be (mean, std), got {normalization!r}")
    mean, std = normalization
    channels = backbone.image_shape[0]
    if len(mean) != channels:
        raise ValueError(f"normalization has {len(mean)} channel(s), the backbone's "
                         f"input has {channels}: got mean={list(mean)!r}")
    encoder = ENCODERS.create(spec.name, _encoder_params(spec.name, spec.params))
    edge = nn.Sequential(Normalize(mean, std), encoder.build(backbone))
    shape = feature_shape(edge, backbone.image_shape)
    if len(shape) != 3:
        raise ValueError(f"encoder {spec.name!r} must output (N, C, H, W), "
                         f"got per-sample shape {shape}")
    wrapped = defense.wrap_edge(edge, shape)  # type: ignore[arg-type]
    if not isinstance(wrapped, DefendedEdge):
        raise TypeError(f"{type(defense).__name__}.wrap_edge must return a "
                        f"DefendedEdge, got {type(wrapped).__name__}")
    return wrapped
