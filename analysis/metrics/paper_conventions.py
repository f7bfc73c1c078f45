"""Paper-compatible metric variants, kept ONLY for comparison with published numbers.

SiftFunnel's released code (arXiv 2501.00824) scores reconstructions with conventions
that differ from this project's pinned definitions (:mod:`analysis.metrics.image`): SSIM
is computed over the whole (N, C, H, W) batch at once with a padded border, and MSE is
summed over colour channels. Reports must name the convention beside any number
computed here; never use these for the project's own tables.
"""

from __future__ import annotations

from torch import Tensor

from analysis.metrics.image import _check_images, _prepare, mse

__all__ = ["ssim_batch_paper", "mse_summed_channels_paper"]


def ssim_batch_paper(x: Tensor, y: Tensor) -> Tensor:
    """Batch-level SSIM as SiftFunnel's code computes it (for comparison only).

    torchmetrics' ``structural_similarity_index_measure`` with ``data_range=1`` and its
    default ``reduction="elementwise_mean"``: one scalar for the whole batch, whose
    SSIM map includes the reflect-padded border. On small images this differs from
    :func:`analysis.metrics.ssim` (valid region, per image).

    Parameters
    ----------
    x, y : Tensor
        Images of shape (N, C, H, W) in [0, 1] (clamped).

    Returns
    -------
    Tensor
        A scalar tensor.
    """
    # Imported here: torchmetrics takes ~2 s to import and is needed only here.
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check_images(x, y)
    x, y = _prepare(x, y)
    return structural_similarity_index_measure(x, y, data_range=1.0)


def mse_summed_channels_paper(x: Tensor, y: Tensor) -> Tensor:
    """Per-image MSE summed over colour channels (for comparison only).

    Mean over pixels of the squared error summed over channels, i.e. C times the
    project's per-element :func:`analysis.metrics.mse`.

    Parameters
    ----------
    x, y : Tensor
        Images of shape (N, C, H, W) in [0, 1] (clamped).

    Returns
    -------
    Tensor
        Shape (N,).
    """
    return mse(x, y) * x.shape[1]
