"""Distance correlation (Szekely et al. 2007) and inter-channel redundancy of features.

Two differentiable estimators of dCor^2 on a batch:

* :func:`distance_correlation`, the plain V-statistic (double-centred distances). It is
  close to 1 for *independent* high-dimensional batches and depends on batch size and
  feature shape.
* :func:`u_distance_correlation_sqr`, the bias-corrected U-statistic (U-centred
  distances, Szekely & Rizzo 2014): near 0 for independent data at any dimension, can be
  slightly negative.

Both serve as NoPeek / SiftFunnel training losses (the defenses choose one); tables
report :func:`bias_corrected_dcor2`, the U-statistic in float64 on a fixed-size
subsample.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "bias_corrected_dcor2",
    "distance_correlation",
    "pearson_redundancy",
    "u_distance_correlation_sqr",
]


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


def _u_centred_distances(v: Tensor, eps: float) -> Tensor:
    n = v.shape[0]
    # Distances are translation invariant; centring the columns first keeps the Gram
    # formula below accurate for data far from the origin.
    v = v - v.mean(dim=0, keepdim=True)
    sq = v.pow(2).sum(dim=1)
    d2 = (sq[:, None] + sq[None, :] - 2.0 * (v @ v.T)).clamp_min(0.0)
    off = ~torch.eye(n, dtype=torch.bool, device=v.device)
    # eps inside the sqrt keeps the gradient finite at coinciding samples. The diagonal
    # gets 1 so that eps = 0 yields no 0 * inf there either; it is masked out anyway.
    # Subtracting sqrt(eps) changes nothing (U-centring removes any constant added
    # off the diagonal) but makes a constant input give exactly 0, not rounding noise.
    d = torch.sqrt(torch.where(off, d2, torch.ones_like(d2)) + eps) - eps**0.5
    d = torch.where(off, d, torch.zeros_like(d))
    row = d.sum(dim=1, keepdim=True) / (n - 2)
    col = d.sum(dim=0, keepdim=True) / (n - 2)
    total = d.sum() / ((n - 1) * (n - 2))
    return torch.where(off, d - row - col + total, torch.zeros_like(d))


def u_distance_correlation_sqr(x: Tensor, z: Tensor, eps: float = 1e-9) -> Tensor:
    """Bias-corrected squared distance correlation (U-statistic), differentiable.

    Szekely & Rizzo (2014), "Partial distance correlation with methods for
    dissimilarities": Euclidean distance matrices of the flattened samples are
    U-centred (row and column sums divided by ``n - 2``, the grand sum by
    ``(n - 1)(n - 2)``, zero diagonal), the inner product is
    ``(A . B) = sum_{i != j} A_ij B_ij / (n (n - 3))``, and
    ``(A . B) / sqrt((A . A) (B . B))`` is returned. ``(A . B)`` is an unbiased
    estimator of dCov^2, so the result is near 0 for independent data in any dimension.
    It is computed in the inputs' dtype: float64 for reporting, float32 as a loss.

    Parameters
    ----------
    x : Tensor
        Shape (N, ...) with N >= 4, e.g. input images.
    z : Tensor
        Shape (N, ...), e.g. transmitted features.
    eps : float
        Added to squared distances before the square root (>= 0); keeps the gradient
        finite where samples coincide. Use 0 for exact values without gradients.

    Returns
    -------
    Tensor
        A scalar in [-1, 1] (slightly negative under independence); 0 when either input
        is constant over the batch.
    """
    if eps < 0:
        raise ValueError(f"eps must be >= 0, got {eps}")
    xf, zf = _flatten_pair(x, z, min_n=4)
    n = xf.shape[0]
    a = _u_centred_distances(xf, eps)
    b = _u_centred_distances(zf.to(a.device), eps)
    scale = n * (n - 3)
    dcov2 = (a * b).sum() / scale
    # (A . A) is a sum of squares, so >= 0; it is 0 only for a constant input, where
    # dCor is defined as 0 and the guarded sqrt keeps the gradient finite.
    denom = ((a * a).sum() / scale) * ((b * b).sum() / scale)
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

    :func:`u_distance_correlation_sqr` in float64 (exact distances, ``eps = 0``) on at
    most ``max_samples`` samples drawn without replacement, so values compare across
    runs with different batch sizes. Near 0 for independent data even in high
    dimension; can be slightly negative. Returns a float, without gradient.

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
    xs = xf.to(torch.float64)
    zs = zf.to(device=xs.device, dtype=torch.float64)
    return float(u_distance_correlation_sqr(xs, zs, eps=0.0))


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
