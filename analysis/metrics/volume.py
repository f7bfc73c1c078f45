"""Effective information volume of a transmitted feature (SiftFunnel, arXiv 2501.00824).

The paper's code counts the non-zero elements of z per sample. The per-element fraction
is reported beside it so tiers with different feature shapes compare.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["effective_volume"]


def effective_volume(z: Tensor, tol: float = 0.0) -> dict[str, Tensor | float | int]:
    """Count the non-zero elements of z (``|z| > tol``) per sample.

    Parameters
    ----------
    z : Tensor
        Features of shape (N, ...), N >= 1.
    tol : float
        Magnitudes at or below ``tol`` (>= 0) count as zero.

    Returns
    -------
    dict
        ``per_sample``: Tensor (N,) float counts; ``mean_per_sample``: float mean count;
        ``fraction``: float share of non-zero elements in [0, 1];
        ``elements_per_sample``: int number of elements of one sample.
    """
    if not isinstance(z, Tensor) or z.ndim < 2 or z.shape[0] == 0:
        raise ValueError(
            "z must be a tensor of shape (N, ...) with N >= 1 and at least one feature "
            f"dimension, got {tuple(z.shape) if isinstance(z, Tensor) else type(z)}"
        )
    if tol < 0:
        raise ValueError(f"tol must be >= 0, got {tol}")
    flat = z.detach().reshape(z.shape[0], -1)
    per_sample = (flat.abs() > tol).sum(dim=1).to(torch.float32)
    elements = flat.shape[1]
    mean = float(per_sample.mean())
    return {
        "per_sample": per_sample,
        "mean_per_sample": mean,
        "fraction": mean / elements if elements else float("nan"),
        "elements_per_sample": elements,
    }
