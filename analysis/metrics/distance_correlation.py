"""Distance correlation (Szekely et al. 2007) and inter-channel redundancy of features.

:func:`distance_correlation` is the single differentiable dCor^2 used both as the
NoPeek / SiftFunnel training loss and for evaluation on a batch. Its plain
V-statistic is close to 1 for *independent* high-dimensional batches and depends on
batch size and feature shape, so tables report :func:`bias_corrected_dcor2` (U-centred,
via the ``dcor`` package) on a fixed-size subsample instead.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

__all__ = ["distance_correlation", "bias_corrected_dcor2", "pearson_redundancy"]


def _flatten_pair(x: Tensor, z: Tensor, min_n: int) -> tuple[Tensor, Tensor]:
    for name, t in (("x", x), ("z", z)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim < 1:
            raise ValueError(f"{name} must have a batch dimension, got a scalar")
    if x.shape[0] != z.shape[0]:
        raise ValueError(
            f"x and z must have the same number of samples, got {x.shape[0]} and "
            f"{z.shape[0]}"
        )
    if x.shape[0] < min_n:
        raise ValueError(f"need at least {min_n} samples, got {x.shape[0]}")
    dtype = torch.promote_types(x.dtype, z.dtype)
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    n = x.shape[0]
    return x.reshape(n, -1).to(dtype), z.reshape(n, -1).to(dtype)


def _centred_distances(v: Tensor, eps: float) -> Tensor:
    # Squared distances first, then sqrt(d2 + eps): the gradient stays finite where
    # two samples coincide (the diagonal, duplicates) instead of 0 * inf = NaN.
    d2 = torch.cdist(v, v).pow(2)
    d = torch.sqrt(d2 + eps)
    return d - d.mean(dim=0, keepdim=True) - d.mean(dim=1, keepdim=True) + d.mean()


def distance_correlation(x: Tensor, z: Tensor, eps: float = 1e-9) -> Tensor:
    """Squared distance correlation dCor^2 (V-statistic), differentiable.

    Samples are flattened, Euclidean distance matrices computed with ``torch.cdist``
    (with ``eps`` inside the square root), double-centred (A, B), and
    ``mean(A*B) / sqrt(mean(A*A) * mean(B*B))`` returned.

    Parameters
    ----------
    x : Tensor
        Shape (N, ...), e.g. input images.
    z : Tensor
        Shape (N, ...), e.g. transmitted features.
    eps : float
        Added to squared distances before the square root (>= 0).

    Returns
    -------
    Tensor
        A scalar in [0, 1]; 0 when either input is constant over the batch.
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    xf, zf = _flatten_pair(x, z, min_n=2)
    a = _centred_distances(xf, eps)
    b = _centred_distances(zf.to(a.device), eps)
    dcov2 = (a * b).mean()
    denom = (a * a).mean() * (b * b).mean()
    # Constant inputs have zero distance variance; dCor is defined as 0 there and the
    # guarded sqrt keeps the gradient finite.
    positive = denom > 0
    safe = torch.where(positive, denom, torch.ones_like(denom))
    return torch.where(positive, dcov2 / torch.sqrt(safe), torch.zeros_like(dcov2))


def bias_corrected_dcor2(
    x: Tensor,
    z: Tensor,
    max_samples: int = 512,
    generator: torch.Generator | None = None,
) -> float:
    """Bias-corrected squared distance correlation (U-centred) for reporting.

    Uses ``dcor.u_distance_correlation_sqr`` in float64 on at most ``max_samples``
    samples drawn without replacement, so values compare across runs with different
    batch sizes. Near 0 for independent data even in high dimension; can be slightly
    negative. Not differentiable (never use as a loss).

    Parameters
    ----------
    x, z : Tensor
        Shape (N, ...) with N >= 4.
    max_samples : int
        Subsample size (>= 4); all samples are used when N <= max_samples.
    generator : torch.Generator, optional
        Draws the subsample; None uses a fixed local seed (0) so results repeat.

    Returns
    -------
    float
    """
    if max_samples < 4:
        raise ValueError(f"max_samples must be >= 4, got {max_samples}")
    xf, zf = _flatten_pair(x.detach(), z.detach(), min_n=4)
    n = xf.shape[0]
    if n > max_samples:
        if generator is None:
            generator = torch.Generator().manual_seed(0)
        idx = torch.randperm(n, generator=generator)[:max_samples]
        xf, zf = xf[idx.to(xf.device)], zf[idx.to(zf.device)]
    # Imported here: ``import dcor`` costs seconds (numba compilation), and every
    # process that imports the training loss above would pay it.
    import dcor

    xs = xf.cpu().to(torch.float64).numpy()
    zs = zf.cpu().to(torch.float64).numpy()
    return float(dcor.u_distance_correlation_sqr(np.ascontiguousarray(xs), zs))


def pearson_redundancy(z: Tensor, eps: float = 1e-8) -> Tensor:
    """Mean squared off-diagonal inter-channel Pearson correlation of features.

    Per sample, z is reshaped to C x (H*W), each channel centred and scaled to unit
    norm (``eps`` added to the squared norm, so constant channels count as
    uncorrelated), the C x C correlation matrix formed, and the mean of its squared
    off-diagonal entries taken; the result is averaged over samples.

    Parameters
    ----------
    z : Tensor
        Features of shape (N, C, H, W) (any trailing spatial dims, at least one).
    eps : float
        Stabiliser (> 0) for the channel norms.

    Returns
    -------
    Tensor
        A differentiable scalar: 0 for decorrelated channels, 1 for copies (up to
        sign); 0 when C == 1.
    """
    if not isinstance(z, Tensor) or z.ndim < 3:
        raise ValueError(
            f"z must be a tensor of shape (N, C, H, W), got "
            f"{tuple(z.shape) if isinstance(z, Tensor) else type(z).__name__}"
        )
    if eps <= 0:
        raise ValueError(f"eps must be > 0, got {eps}")
    n, c = z.shape[:2]
    if c == 1:
        return z.new_zeros(())
    v = z.reshape(n, c, -1)
    v = v - v.mean(dim=2, keepdim=True)
    v = v / torch.sqrt(v.pow(2).sum(dim=2, keepdim=True) + eps)
    corr = v @ v.transpose(1, 2)
    off = corr.pow(2).sum(dim=(1, 2)) - torch.diagonal(corr, dim1=1, dim2=2).pow(2).sum(
        dim=1
    )
    return (off / (c * (c - 1))).mean()
