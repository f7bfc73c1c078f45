"""Reconstruction grids: what the curious cloud recovered, beside the truth."""

from __future__ import annotations

import numpy as np
from matplotlib.figure import Figure

from analysis.figures._style import new_figure

__all__ = ["reconstruction_grid"]


def reconstruction_grid(originals: np.ndarray, reconstructions: np.ndarray,
                        title: str | None = None, n: int = 8) -> Figure:
    """Originals (top row) above their reconstructions (bottom row).

    Parameters
    ----------
    originals, reconstructions : array of shape (N, C, H, W)
        Images in [0, 1] (clipped for display), C = 1 (grey) or 3 (RGB).
    n : int
        Images shown: the first ``min(n, N)``.
    """
    x, r = _images(originals, "originals"), _images(reconstructions, "reconstructions")
    if x.shape != r.shape:
        raise ValueError(f"originals {x.shape} and reconstructions {r.shape} differ")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    k = min(n, len(x))
    if k == 0:
        raise ValueError("originals holds no images")
    fig = new_figure((1.3 * k + 1.2, 3.0))
    axes = fig.subplots(2, k, squeeze=False)
    for row, (images, label) in enumerate(((x, "original"), (r, "reconstruction"))):
        for i in range(k):
            ax = axes[row, i]
            img = np.clip(images[i], 0.0, 1.0)
            if img.shape[0] == 1:
                ax.imshow(img[0], cmap="gray", vmin=0.0, vmax=1.0)
            else:
                ax.imshow(np.transpose(img, (1, 2, 0)))
            ax.set_xticks([])
            ax.set_yticks([])
        axes[row, 0].set_ylabel(label, fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def _images(a: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(a, dtype=np.float32)
    if arr.ndim != 4 or arr.shape[1] not in (1, 3):
        raise ValueError(f"{name} must have shape (N, C, H, W) with C in (1, 3), "
                         f"got {arr.shape}")
    return arr
