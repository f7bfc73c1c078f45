"""Many devices' copies of one edge run as one network, devices laid along channels.

:class:`~simulator.engine.cohort_edges.StackedEdges` keeps ``n`` devices' weights
stacked along a leading axis. ``torch.func.vmap`` runs them, but around every
BatchNorm and pooling layer it moves the device axis into the channels and back,
copying the activations each time (about 30% of a stacked step in the torch profiler).
The *grouped* layout keeps it there for the whole edge: the activations of ``n``
devices with ``B`` images each form one ``(B, n * C, H, W)`` tensor (device ``i`` owns
channels ``i * C`` to ``(i + 1) * C``), so

- a convolution is one grouped convolution over the devices' concatenated kernels;
- a BatchNorm is one native ``batch_norm`` over ``n * C`` channels, whose per-channel
  statistics over ``(B, H, W)`` are each device's own, running statistics included;
- pooling and element-wise activations run unchanged;
- the attention blocks pool over each device's channels through a ``(B, n, C, H, W)``
  view, which costs nothing.

Each supported module type has a rule here computing what ``n`` copies of it compute;
:func:`supports` says whether every module of an edge has one (an edge with any other
layer runs under vmap). Same arithmetic as one module per device, up to float rounding
(tests/test_grouped.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from strategies.defenses import DefendedEdge
from strategies.models.blocks import CBAM, SE, Normalize, TripletAttention
from strategies.models.blocks import _ZPoolGate   # run piecewise by the triplet rule

__all__ = ["GroupedEdge", "supports"]

Tensors = dict[str, torch.Tensor]   # parameter or buffer name -> (n, *shape)
Rule = Callable[["GroupedEdge", nn.Module, str, torch.Tensor], torch.Tensor]
_RULES: dict[type[nn.Module], Rule] = {}
_ELEMENTWISE = (nn.ReLU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.GELU, nn.Identity)
_PER_CHANNEL = (nn.MaxPool2d, nn.AvgPool2d)


def _rule(*types: type[nn.Module]) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for t in types:
            _RULES[t] = fn
        return fn
    return register


def supports(module: nn.Module) -> bool:
    """Whether every layer of ``module`` runs in the grouped layout."""
    return all(_supported(m) for m in module.modules())


def _supported(m: nn.Module) -> bool:
    kind = type(m)
    if kind is nn.Conv2d:
        return m.padding_mode == "zeros" and isinstance(m.padding, tuple)
    if kind is nn.BatchNorm2d:
        return m.track_running_stats and m.affine
    if kind is DefendedEdge:   # modules trained only by a device-side term never run here
        return not m.training_only
    if kind is nn.ModuleDict:  # an empty training_only
        return not m
    return kind in _RULES or kind is _ZPoolGate or isinstance(m, _ELEMENTWISE + _PER_CHANNEL)


class GroupedEdge:
    """``n`` copies of ``skeleton`` run on stacked weights in the grouped layout.

    ``tensors`` (weights and buffers, ``(n, *shape)`` each) are read per call, so an
    optimiser stepping them in place is seen by the next call; BatchNorm running
    statistics are updated in place in them, as ``n`` modules would.
    """

    def __init__(self, skeleton: nn.Module) -> None:
        if not supports(skeleton):
            raise ValueError(f"{type(skeleton).__name__} has layers without a grouped rule")
        self.skeleton = skeleton
        self.n = 0
        self.tensors: Tensors = {}

    def __call__(self, tensors: Tensors, x: torch.Tensor) -> torch.Tensor:
        """Every device's output ``(n, B, ...)`` for its images ``x`` ``(n, B, C, H, W)``."""
        n, b = x.shape[:2]
        self.n, self.tensors = n, tensors
        out = self.run(self.skeleton, "", x.transpose(0, 1).reshape(b, -1, *x.shape[3:]))
        return out.view(b, n, -1, *out.shape[2:]).transpose(0, 1)

    def run(self, m: nn.Module, prefix: str, x: torch.Tensor) -> torch.Tensor:
        """``m`` (named ``prefix`` in the skeleton) applied to grouped ``x``."""
        if isinstance(m, _ELEMENTWISE + _PER_CHANNEL):
            return m(x)
        return _RULES[type(m)](self, m, prefix, x)

    def get(self, name: str, *shape: int) -> torch.Tensor:
        """The devices' ``name`` tensors flattened along the device axis."""
        return self.tensors[name].reshape(*shape)

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """The ``(B, n, C, ...)`` view of grouped ``x``."""
        return x.view(x.shape[0], self.n, -1, *x.shape[2:])


@_rule(nn.Sequential)
def _sequential(g: GroupedEdge, m: nn.Sequential, prefix: str, x: torch.Tensor) -> torch.Tensor:
    for name, child in m.named_children():
        x = g.run(child, f"{prefix}{name}.", x)
    return x


@_rule(DefendedEdge)
def _defended(g: GroupedEdge, m: DefendedEdge, prefix: str, x: torch.Tensor) -> torch.Tensor:
    return g.run(m.head, f"{prefix}head.", g.run(m.encoder, f"{prefix}encoder.", x))


@_rule(nn.Conv2d)
def _conv(g: GroupedEdge, m: nn.Conv2d, prefix: str, x: torch.Tensor) -> torch.Tensor:
    if _pointwise(m):
        return _pointwise_conv(g, m, prefix, x)
    weight = g.get(prefix + "weight", -1, *m.weight.shape[1:])
    bias = g.get(prefix + "bias", -1) if m.bias is not None else None
    return F.conv2d(x, weight, bias, m.stride, m.padding, m.dilation, g.n * m.groups)


def _pointwise(m: nn.Conv2d) -> bool:
    return (m.kernel_size == (1, 1) and m.stride == (1, 1) and m.dilation == (1, 1)
            and m.padding == (0, 0) and m.groups == 1)


def _pointwise_conv(g: GroupedEdge, m: nn.Conv2d, prefix: str,
                    x: torch.Tensor) -> torch.Tensor:
    """A 1x1 convolution as one batched matrix product over (image, device).

    On one thread and fewer than 16 images, torch does not hand a 1x1 convolution to
    oneDNN, and its fallback runs a grouped one a group (device) at a time, with a
    narrow / convolve / cat per device (7% of a stacked funnel_2 step at 10 devices in
    the torch profiler; the step ran 0-12% faster this way, measured interleaved).
    """
    b, _, h, w = x.shape
    weight = g.tensors[prefix + "weight"].flatten(2)           # (n, out, in)
    out = torch.matmul(weight, g.split(x).flatten(3))          # (B, n, out, H * W)
    if m.bias is not None:
        out = out + g.tensors[prefix + "bias"][:, :, None]
    return out.view(b, -1, h, w)


@_rule(nn.BatchNorm2d)
def _batch_norm(g: GroupedEdge, m: nn.BatchNorm2d, prefix: str,
                x: torch.Tensor) -> torch.Tensor:
    mean, var = g.tensors[prefix + "running_mean"], g.tensors[prefix + "running_var"]
    momentum = m.momentum
    if m.training:
        count = g.tensors[prefix + "num_batches_tracked"]
        count.add_(1)
        if momentum is None:                 # cumulative average, as nn.BatchNorm2d
            momentum = 1.0 / float(count[0])
    # Views of the stacked buffers: batch_norm's in-place update lands in them.
    return F.batch_norm(x, mean.view(-1), var.view(-1), g.get(prefix + "weight", -1),
                        g.get(prefix + "bias", -1), m.training, momentum or 0.0, m.eps)


@_rule(nn.Linear)
def _linear(g: GroupedEdge, m: nn.Linear, prefix: str, x: torch.Tensor) -> torch.Tensor:
    # x (B, n * in), as in an SE block: each device's features through its own matrix.
    if x.dim() != 2:
        raise ValueError(f"{prefix[:-1]}: the grouped layout runs a Linear layer on "
                         f"(batch, features) only, got shape {tuple(x.shape)}")
    out = torch.einsum("bni,noi->bno", g.split(x), g.tensors[prefix + "weight"])
    if m.bias is not None:
        out = out + g.tensors[prefix + "bias"]
    return out.flatten(1)


@_rule(Normalize)
def _normalize(g: GroupedEdge, m: Normalize, prefix: str, x: torch.Tensor) -> torch.Tensor:
    return (x - g.get(prefix + "mean", 1, -1, 1, 1)) / g.get(prefix + "std", 1, -1, 1, 1)


@_rule(SE)
def _se(g: GroupedEdge, m: SE, prefix: str, x: torch.Tensor) -> torch.Tensor:
    return x * g.run(m.fc, prefix + "fc.", x.mean(dim=(2, 3)))[:, :, None, None]


def _gate(g: GroupedEdge, gate: nn.Module, prefix: str, pooled: torch.Tensor) -> torch.Tensor:
    """A triplet-attention gate on each device's pooled planes ``(B, n, 2, P, Q)``:
    its 7x7 convolution and BatchNorm, sigmoid -> ``(B, n, P, Q)``."""
    planes = pooled.flatten(1, 2)
    return torch.sigmoid(g.run(gate.bn, prefix + "bn.",
                               g.run(gate.conv, prefix + "conv.", planes)))


@_rule(TripletAttention)
def _triplet(g: GroupedEdge, m: TripletAttention, prefix: str,
             x: torch.Tensor) -> torch.Tensor:
    # TripletAttention permutes the pooled axis to dim 1; here each gate pools its axis
    # of the (B, n, C, H, W) view and keeps its plane's (rows, columns) order.
    x5 = g.split(x)

    def zpool(dim: int) -> torch.Tensor:
        return torch.stack([x5.amax(dim=dim), x5.mean(dim=dim)], dim=2)

    cw = _gate(g, m.cw, prefix + "cw.", zpool(3))                                # (C, W)
    hc = _gate(g, m.hc, prefix + "hc.", zpool(4).transpose(3, 4)).transpose(2, 3)  # (H, C)
    hw = _gate(g, m.hw, prefix + "hw.", zpool(2))                                # (H, W)
    out = (x5 * cw[:, :, :, None, :] + x5 * hc[..., None] + x5 * hw[:, :, None]) / 3.0
    return out.flatten(1, 2)


@_rule(CBAM)
def _cbam(g: GroupedEdge, m: CBAM, prefix: str, x: torch.Tensor) -> torch.Tensor:
    avg = g.run(m.mlp, prefix + "mlp.", x.mean(dim=(2, 3), keepdim=True))
    mx = g.run(m.mlp, prefix + "mlp.", x.amax(dim=(2, 3), keepdim=True))
    x5 = g.split(x * torch.sigmoid(avg + mx))
    maps = torch.stack([x5.mean(dim=2), x5.amax(dim=2)], dim=2).flatten(1, 2)
    spatial = torch.sigmoid(g.run(m.spatial, prefix + "spatial.", maps))
    return (x5 * spatial[:, :, None]).flatten(1, 2)
