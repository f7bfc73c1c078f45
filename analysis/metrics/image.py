"""Per-image reconstruction metrics on [0, 1] images (the project's pinned definitions).

Every function scores each image separately and returns a tensor of shape (N,); the
caller chooses the reduction (mean and a t-interval via :func:`mean_ci`). Definitions
follow ``/work/shared/reference/metrics.md``:

* SSIM: Wang et al. 2004, 11x11 Gaussian window (sigma 1.5), K = (0.01, 0.03),
  data_range 1, averaged over the *valid* region only (no padded border) and then over
  channels. Equal to scikit-image ``structural_similarity(gaussian_weights=True,
  sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=...)``.
* PSNR: peak 1, per-image MSE clamped at >= 1e-10 (identical images give 100 dB).
* MSE: mean over all elements of one image (not summed over channels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "SSIM_WINDOW",
    "SSIM_SIGMA",
    "ssim",
    "psnr",
    "mse",
    "recognisable_fraction",
    "nearest_neighbour_identification",
]

SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
_K1, _K2 = 0.01, 0.03
_MSE_FLOOR = 1e-10


def _check_images(x: Tensor, y: Tensor, *, names: tuple[str, str] = ("x", "y")) -> None:
    for name, t in zip(names, (x, y)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 4:
            raise ValueError(
                f"{name} must have shape (N, C, H, W), got {tuple(t.shape)}"
            )
    if x.shape != y.shape:
        raise ValueError(
            f"{names[0]} and {names[1]} must have the same shape, got "
            f"{tuple(x.shape)} and {tuple(y.shape)}"
        )


def _prepare(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Clamp to [0, 1] in a floating dtype (at least float32) common to both."""
    dtype = torch.promote_types(x.dtype, y.dtype)
    if not dtype.is_floating_point or dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32
    return x.to(dtype).clamp(0.0, 1.0), y.to(dtype).clamp(0.0, 1.0)


def _gaussian_window(size: int, sigma: float, x: Tensor) -> Tensor:
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g = g / g.sum()
    return g.to(device=x.device, dtype=x.dtype)


def _blur_valid(t: Tensor, g: Tensor) -> Tensor:
    """Depthwise separable Gaussian filter, valid region only (no padding)."""
    c = t.shape[1]
    t = F.conv2d(t, g.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(t, g.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def ssim(x: Tensor, y: Tensor) -> Tensor:
    """Structural similarity per image (Wang et al. 2004), valid region only.

    Parameters
    ----------
    x, y : Tensor
        Images of shape (N, C, H, W) in [0, 1] (clamped); H and W must be >= 11.

    Returns
    -------
    Tensor
        Shape (N,): the SSIM map averaged over the valid region, then over channels.

    Raises
    ------
    ValueError
        On a shape mismatch, or when an image side is smaller than the 11-pixel window.
        There is deliberately no silent fallback to a smaller window (that would be a
        different metric): upsample small images (e.g. 8x8 digits) to >= 16 px first.
    """
    _check_images(x, y)
    h, w = x.shape[-2:]
    if min(h, w) < SSIM_WINDOW:
        raise ValueError(
            f"ssim needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW} pixels (the "
            f"Gaussian window), got {h}x{w}; resize the images (e.g. to 16x16) first"
        )
    x, y = _prepare(x, y)
    g = _gaussian_window(SSIM_WINDOW, SSIM_SIGMA, x)
    n, c = x.shape[:2]
    # One blur call for the five moment images keeps the conv count low.
    stacked = torch.cat([x, y, x * x, y * y, x * y], dim=1)
    mu_x, mu_y, e_xx, e_yy, e_xy = _blur_valid(stacked, g).split(c, dim=1)
    var_x = e_xx - mu_x * mu_x
    var_y = e_yy - mu_y * mu_y
    cov_xy = e_xy - mu_x * mu_y
    c1, c2 = _K1**2, _K2**2
    num = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
    den = (mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2)
    return (num / den).reshape(n, c, -1).mean(dim=2).mean(dim=1)


def mse(x: Tensor, y: Tensor) -> Tensor:
    """Mean squared error per image, averaged over all C*H*W elements.

    Parameters
    ----------
    x, y : Tensor
        Images of shape (N, C, H, W) in [0, 1] (clamped).

    Returns
    -------
    Tensor
        Shape (N,).
    """
    _check_images(x, y)
    x, y = _prepare(x, y)
    return (x - y).pow(2).flatten(1).mean(dim=1)


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """Peak signal-to-noise ratio per image in dB, peak 1, MSE clamped at >= 1e-10.

    Parameters
    ----------
    x, y : Tensor
        Images of shape (N, C, H, W) in [0, 1] (clamped).

    Returns
    -------
    Tensor
        Shape (N,); identical images give exactly 100 dB.
    """
    return -10.0 * torch.log10(mse(x, y).clamp_min(_MSE_FLOOR))


def recognisable_fraction(ssim_values: Tensor, threshold: float = 0.3) -> float:
    """Fraction of images whose SSIM is strictly above ``threshold``.

    Parameters
    ----------
    ssim_values : Tensor
        Per-image SSIM values, shape (N,) with N >= 1.
    threshold : float
        The "recognisable" threshold; 0.3 is the common choice in the literature.

    Returns
    -------
    float
        A value in [0, 1].
    """
    values = torch.as_tensor(ssim_values)
    if values.ndim != 1 or values.numel() == 0:
        raise ValueError(
            "ssim_values must be a non-empty 1-D tensor, got shape "
            f"{tuple(values.shape)}"
        )
    return float((values > threshold).float().mean())


def nearest_neighbour_identification(
    recon: Tensor, gallery: Tensor, true_index: Tensor
) -> Tensor:
    """Whether each reconstruction's nearest gallery image (pixel MSE) is the true one.

    Parameters
    ----------
    recon : Tensor
        Reconstructions, shape (N, C, H, W) in [0, 1] (clamped).
    gallery : Tensor
        Candidate real images, shape (M, C, H, W) in [0, 1] (clamped).
    true_index : Tensor
        Integer tensor of shape (N,): index into ``gallery`` of each true image.

    Returns
    -------
    Tensor
        Boolean tensor of shape (N,). Ties go to the lowest gallery index.
    """
    if not isinstance(recon, Tensor) or recon.ndim != 4:
        raise ValueError(f"recon must be a (N, C, H, W) tensor, got {recon!r:.80}")
    if not isinstance(gallery, Tensor) or gallery.ndim != 4:
        raise ValueError(f"gallery must be a (M, C, H, W) tensor, got {gallery!r:.80}")
    if recon.shape[1:] != gallery.shape[1:]:
        raise ValueError(
            f"recon and gallery images must share (C, H, W), got "
            f"{tuple(recon.shape[1:])} and {tuple(gallery.shape[1:])}"
        )
    true_index = torch.as_tensor(true_index, device=recon.device)
    if true_index.shape != (recon.shape[0],) or true_index.is_floating_point():
        raise ValueError(
            f"true_index must be an integer tensor of shape ({recon.shape[0]},), got "
            f"{true_index.dtype} of shape {tuple(true_index.shape)}"
        )
    m = gallery.shape[0]
    if true_index.numel() and (true_index.min() < 0 or true_index.max() >= m):
        raise ValueError(f"true_index values must lie in [0, {m}), got {true_index}")
    r, g = _prepare(recon, gallery)
    # Euclidean distance ranks gallery images exactly as per-image MSE does.
    dist = torch.cdist(r.flatten(1), g.flatten(1).to(r.device))
    return dist.argmin(dim=1) == true_index.long()
