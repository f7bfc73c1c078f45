"""Pieces shared by the inversion attacks (private: not a plug-in, not public API).

* :func:`build_decoder` - the inverse network's decoder, feature -> image shape;
* :func:`build_shadow_edge` - the query-free attacker's shadow edge, image -> feature;
* :func:`init_parameters` - seeded PyTorch-default initialisation (no global RNG);
* :func:`channels_last` - the memory layout every attack model runs in;
* :func:`total_variation` - per-image TV_beta prior of He et al. (ACSAC 2019);
* :func:`initial_images` - starting points of the optimisation attacks;
* :func:`invert_by_optimisation` - the batched rMLE optimisation, reused by ``rmle`` and
  ``query_free``;
* :func:`map_in_batches`, :func:`minibatches`, :func:`split_indices`,
  :func:`frozen_copy`, :func:`check_features` - small helpers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from copy import deepcopy
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["InitKind", "Normalizer", "Resize", "build_decoder", "build_shadow_edge",
           "channels_last", "check_features", "frozen_copy", "init_parameters",
           "initial_images", "invert_by_optimisation", "map_in_batches", "minibatches",
           "num_halvings", "split_indices", "total_variation"]

InitKind = Literal["zeros", "randn", "mean"]
Shape = tuple[int, int, int]

_TV_EPS = 1e-8  # inside the root: TV_1 is not differentiable where the image is flat
_SCALE_FLOOR = 1e-12  # an all-zero target keeps a finite relative feature term


class Normalizer(nn.Module):
    """Per-channel ``(x - mean) / std``: the public first layer of every edge."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"normalization needs matching mean/std with std > 0, "
                             f"got mean={mean}, std={std}")
        self.register_buffer("mean", torch.tensor(mean).float().view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std).float().view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Resize(nn.Module):
    """Bilinear resize to a fixed spatial size (for sizes not a power of two apart)."""

    def __init__(self, size: tuple[int, int]) -> None:
        super().__init__()
        self.size = size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if tuple(x.shape[-2:]) == self.size:
            return x
        return F.interpolate(x, size=self.size, mode="bilinear", align_corners=False)


def num_halvings(small: tuple[int, int], large: tuple[int, int]) -> int:
    """How many stride-2 steps fit between two spatial sizes (0 if none fits)."""
    ratio = min(large[0] / small[0], large[1] / small[1])
    return max(0, int(math.floor(math.log2(ratio) + 1e-9))) if ratio >= 1 else 0


def _block(conv: nn.Module, channels: int) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(channels), nn.Tanh()]


def _extra_blocks(width: int, depth_extra: int) -> list[nn.Module]:
    return [m for _ in range(depth_extra)
            for m in _block(nn.Conv2d(width, width, 3, padding=1), width)]


def build_decoder(feature_shape: Shape, image_shape: Shape, width: int = 64,
                  depth_extra: int = 0) -> nn.Sequential:
    """Decoder g: (N, *feature_shape) -> (N, *image_shape) in [0, 1].

    A 3x3 conv to ``width`` channels, one stride-2 ``ConvTranspose2d`` 4x4 per halving
    between the feature and image sizes (each undoing one pooling of the edge), BN +
    Tanh after every conv, ``depth_extra`` extra 3x3 conv blocks per stage (stem and
    each up-sampling stage), a final 3x3 conv to the image channels, a bilinear resize
    when the sizes are not power-of-two multiples, and a sigmoid.
    """
    cf, hf, wf = feature_shape
    ci, hi, wi = image_shape
    layers: list[nn.Module] = _block(nn.Conv2d(cf, width, 3, padding=1), width)
    layers += _extra_blocks(width, depth_extra)
    for _ in range(num_halvings((hf, wf), (hi, wi))):
        up = nn.ConvTranspose2d(width, width, 4, stride=2, padding=1)
        layers += _block(up, width) + _extra_blocks(width, depth_extra)
    layers += [nn.Conv2d(width, ci, 3, padding=1), Resize((hi, wi)), nn.Sigmoid()]
    return channels_last(nn.Sequential(*layers))


def build_shadow_edge(image_shape: Shape, feature_shape: Shape,
                      normalization: tuple[tuple[float, ...], tuple[float, ...]],
                      width: int = 64) -> nn.Sequential:
    """Shadow edge E': (N, *image_shape) -> (N, *feature_shape), linear output.

    ``Normalizer`` first (the protocol is public), a 3x3 conv + ReLU, then one
    3x3 conv + ReLU + 2x2 max-pool per halving between image and feature sizes
    (mirroring the edge's pooling), a final 3x3 conv to the feature channels and a
    bilinear resize when the sizes are not power-of-two multiples. No BN, so train and
    eval modes agree.
    """
    ci, hi, wi = image_shape
    cf, hf, wf = feature_shape
    layers: list[nn.Module] = [Normalizer(*normalization),
                               nn.Conv2d(ci, width, 3, padding=1), nn.ReLU()]
    for _ in range(num_halvings((hf, wf), (hi, wi))):
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
    layers += [nn.Conv2d(width, cf, 3, padding=1), Resize((hf, wf))]
    return channels_last(nn.Sequential(*layers))


def channels_last(module: nn.Module) -> nn.Module:
    """``module`` with its 4-D weights in channels-last memory; values unchanged.

    Convolutions then keep their activations channels-last, where this PyTorch's CPU
    max-pooling is an order of magnitude faster than on NCHW tensors (80 x 64 x 28 x 28,
    one thread: 2.3 ms against 35 ms): rMLE through the plain MNIST cut ran 2.2x
    faster, decoders and shadow edges 5-15%. Only float rounding differs from NCHW.
    """
    return module.to(memory_format=torch.channels_last)


def init_parameters(module: nn.Module, generator: torch.Generator) -> nn.Module:
    """Re-initialise conv/linear layers like PyTorch's default, from ``generator``.

    PyTorch's constructors draw from the global RNG; an attack must be reproducible from
    the generator it is handed without touching global state.
    """
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            with torch.no_grad():
                w = torch.empty(m.weight.shape)
                nn.init.kaiming_uniform_(w, a=math.sqrt(5), generator=generator)
                m.weight.copy_(w)
                if m.bias is not None:
                    fan_in, _ = nn.init._calculate_fan_in_and_fan_out(m.weight)
                    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                    b = torch.empty(m.bias.shape).uniform_(-bound, bound,
                                                           generator=generator)
                    m.bias.copy_(b)
    return module


def total_variation(x: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Per-image TV_beta of He et al.: mean of ``(dh^2 + dw^2)^(beta/2)``, shape (N,).

    Averaged (not summed) over channels and the (H-1) x (W-1) grid, so that the weight
    ``lambda_tv`` does not depend on the image size; ``beta = 1`` is the paper's choice.
    """
    dh = x[:, :, 1:, :-1] - x[:, :, :-1, :-1]
    dw = x[:, :, :-1, 1:] - x[:, :, :-1, :-1]
    return (dh * dh + dw * dw + _TV_EPS).pow(beta / 2).flatten(1).mean(1)


def initial_images(init: InitKind, n: int, image_shape: Shape, mean_image: torch.Tensor,
                   generator: torch.Generator) -> torch.Tensor:
    """Starting images (n, *image_shape) in [0, 1] on ``mean_image``'s device.

    ``"zeros"``: black; ``"mean"``: the mean auxiliary image (in [0, 1] space this is
    He et al.'s zero start, which they took in *normalised* space); ``"randn"``:
    ``0.5 + 0.25 * N(0, 1)`` clamped to [0, 1].
    """
    shape = (n, *image_shape)
    if init == "zeros":
        x = torch.zeros(shape)
    elif init == "mean":
        x = mean_image.detach().cpu().expand(shape).clone()
    elif init == "randn":
        x = (0.5 + 0.25 * torch.randn(shape, generator=generator)).clamp(0, 1)
    else:
        raise ValueError(f"init must be 'zeros', 'randn' or 'mean', got {init!r}")
    return x.to(mean_image.device)


def invert_by_optimisation(
    encoder: Callable[[torch.Tensor], torch.Tensor], z: torch.Tensor,
    start: torch.Tensor, *, iterations: int, lr: float, lambda_tv: float,
    tv_beta: float = 1.0, lambda_l2: float = 0.0, chunk_size: int = 128,
    relative: bool = True,
) -> torch.Tensor:
    """rMLE: ``argmin_x mse(E(x), z) + lambda_tv TV_beta(x) + lambda_l2 mean(x^2)``.

    With ``relative`` the feature term is divided by the target's own mean square
    (per image), so it is the *relative* feature error: the priors' weights then mean
    the same for every edge, and an edge cannot defeat the attack merely by emitting
    small numbers (a funnel's attention gates shrink z to ~1e-2, where an absolute
    ``mse`` is ~1e-4 and any TV weight flattens the image).

    Every term is per image and the batch loss is their sum, so each image follows
    exactly the optimisation it would follow alone (Adam is per element): chunking only
    trades memory for speed. ``x`` is projected onto [0, 1] after every Adam step, so
    the encoder only ever sees valid images (He et al. clip once at the end).

    Parameters
    ----------
    encoder
        Frozen differentiable edge (or shadow edge), in eval mode, [0, 1] images in.
    z
        Observed features (N, C', H', W').
    start
        Initial images (N, C, H, W) in [0, 1].
    """
    if z.shape[0] != start.shape[0]:
        raise ValueError(f"z has {z.shape[0]} rows but start has {start.shape[0]}")
    out = []
    for i in range(0, z.shape[0], chunk_size):
        target = z[i:i + chunk_size].detach()
        scale = (target.pow(2).flatten(1).mean(1).clamp_min(_SCALE_FLOOR) if relative
                 else 1.0)
        x = start[i:i + chunk_size].detach().clone().requires_grad_(True)
        opt = torch.optim.Adam([x], lr=lr)
        for _ in range(iterations):
            opt.zero_grad(set_to_none=True)
            feat = (encoder(x) - target).pow(2).flatten(1).mean(1) / scale
            loss = feat + lambda_tv * total_variation(x, tv_beta)
            if lambda_l2 > 0:
                loss = loss + lambda_l2 * x.pow(2).flatten(1).mean(1)
            if not loss.requires_grad:  # E ignores x and no prior: nothing to move
                break
            loss.sum().backward()
            opt.step()
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
        out.append(x.detach())
    return torch.cat(out)


def map_in_batches(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                   batch_size: int = 256) -> torch.Tensor:
    """``fn`` over ``x`` in batches without autograd (oracle queries, decoding), as
    one contiguous tensor (channels-last modules give channels-last outputs)."""
    with torch.no_grad():
        return torch.cat([fn(x[i:i + batch_size]).detach()
                          for i in range(0, x.shape[0], batch_size)]).contiguous()


def minibatches(indices: torch.Tensor, batch_size: int,
                generator: torch.Generator) -> list[torch.Tensor]:
    """Shuffled mini-batches of ``indices``; a trailing single row joins the previous
    batch (batch norm cannot train on one sample)."""
    chunks = list(indices[torch.randperm(len(indices), generator=generator)]
                  .split(batch_size))
    if len(chunks) > 1 and len(chunks[-1]) == 1:
        chunks[-2] = torch.cat([chunks[-2], chunks.pop()])
    return chunks


def decode(decoder: nn.Module | None, z: torch.Tensor, feature_shape: Shape | None,
           batch: int = 256) -> torch.Tensor:
    """A fitted decoder's images in [0, 1] for features ``z``, on ``z``'s device."""
    if decoder is None or feature_shape is None:
        raise RuntimeError("call fit() before reconstruct()")
    check_features(z, feature_shape, "z")
    device = next(decoder.parameters()).device
    decoder.eval()
    return map_in_batches(decoder, z.to(device), batch).to(z.device)


def frozen_copy(module: nn.Module) -> nn.Module:
    """A private eval-mode copy without gradients: the attacker never mutates (or
    accumulates gradients into) the module it was handed."""
    copy = channels_last(deepcopy(module).eval())
    copy.requires_grad_(False)
    return copy


def check_features(z: torch.Tensor, feature_shape: Shape, what: str) -> None:
    """Raise ValueError unless ``z`` is (N, *feature_shape)."""
    if z.dim() != 4 or tuple(z.shape[1:]) != tuple(feature_shape):
        dims = ", ".join(map(str, feature_shape))
        raise ValueError(f"{what} must have shape (N, {dims}), got {tuple(z.shape)}")


def split_indices(n: int, fraction: float,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (train, held-out) index split; held-out is empty when ``fraction == 0``.

    A positive fraction holds out at least one row and always leaves one for training.
    """
    if n < 1 or (fraction > 0 and n < 2):
        raise ValueError(f"need at least {2 if fraction > 0 else 1} auxiliary images "
                         f"(held_out_fraction={fraction}), got {n}")
    perm = torch.randperm(n, generator=generator)
    k = min(n - 1, max(1, round(n * fraction))) if fraction > 0 else 0
    return perm[k:], perm[:k]
