"""Edge burden: deployed parameters, MACs per sample and transmitted size."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from strategies.models._shapes import eval_mode, zero_input

__all__ = ["EdgeCost", "edge_cost", "deployed_parameter_count"]

_TRAINING_ONLY = "training_only."


@dataclass(frozen=True)
class EdgeCost:
    """What running an edge model costs a device, per sample.

    Attributes
    ----------
    params
        Deployed parameters (``training_only.*`` excluded).
    macs
        Multiply-accumulates of one forward pass (FLOPs / 2, see :func:`edge_cost`).
    feature_shape
        Shape of the transmitted feature, batch dimension excluded.
    elements
        Number of transmitted elements.
    bytes
        Transmitted bytes (``elements * bytes_per_element``).
    """

    params: int
    macs: int
    feature_shape: tuple[int, ...]
    elements: int
    bytes: int


def deployed_parameter_count(edge: nn.Module) -> int:
    """Parameters that ship to the device: names starting ``training_only.`` skipped."""
    return sum(p.numel() for name, p in edge.named_parameters()
               if not name.startswith(_TRAINING_ONLY))


def edge_cost(edge: nn.Module, image_shape: Sequence[int],
              bytes_per_element: int = 4) -> EdgeCost:
    """Measure ``edge`` on one zero sample of shape ``image_shape`` (C, H, W).

    MACs come from :class:`torch.utils.flop_counter.FlopCounterMode` over one forward
    pass in eval mode, divided by 2. Like ``flop_counter`` they cover convolutions,
    linear layers and matrix products (conv/linear/matmul MACs, biases not included);
    element-wise work (BN, activations, pooling, attention scaling) is not counted.

    Parameters
    ----------
    edge
        The edge model (e.g. a ``DefendedEdge``); it is left in its original mode.
    image_shape
        Input shape (C, H, W).
    bytes_per_element
        Size of one transmitted element (4 for float32).
    """
    if not isinstance(bytes_per_element, int) or bytes_per_element < 1:
        raise ValueError(f"bytes_per_element must be a positive int, "
                         f"got {bytes_per_element!r}")
    counter = FlopCounterMode(display=False)
    with eval_mode(edge), torch.no_grad(), counter:
        out = edge(zero_input(edge, image_shape))
    shape = tuple(int(s) for s in out.shape[1:])
    elements = math.prod(shape)
    return EdgeCost(params=deployed_parameter_count(edge),
                    macs=counter.get_total_flops() // 2, feature_shape=shape,
                    elements=elements, bytes=elements * bytes_per_element)
