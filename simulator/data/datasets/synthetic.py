"""Synthetic class-conditional images: smooth random templates plus noise."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field

from simulator.data.base import DATASETS, Dataset, DatasetParams, ImageData, Split

__all__ = ["Synthetic"]

_GRID = 4  # template resolution before upsampling: low = smooth, blob-like images
_STREAM = {"train": 1, "test": 2}  # seed offsets: templates use 0, splits 1 and 2


def _smooth(values: np.ndarray, size: int) -> torch.Tensor:
    """Bilinear upsampling of ``(N, C, g, g)`` values to ``size x size``."""
    t = torch.from_numpy(values.astype(np.float32))
    return F.interpolate(t, size=(size, size), mode="bilinear", align_corners=False)


@DATASETS.register("synthetic")
class Synthetic(Dataset):
    """Each class is a smooth random template; a sample is its template plus a smooth
    per-sample perturbation and pixel noise, clipped to [0, 1].

    Templates depend only on ``seed``, so both splits share them; train and test
    draw their samples from different seed streams (``[seed, 1]`` and ``[seed, 2]``),
    so no test image repeats a training image. Classes are balanced. A small CNN
    separates the classes after a few epochs at the default noise.
    """

    class Params(DatasetParams):
        num_samples: int = Field(2000, ge=1, description="Train split size.")
        test_samples: int | None = Field(
            None, ge=1, description="Test split size; None = num_samples // 4.")
        num_classes: int = Field(10, ge=2, le=1000)
        channels: Literal[1, 3] = 1
        size: int = Field(16, ge=8, le=512, description="Native height and width.")
        noise: float = Field(0.1, ge=0.0, le=1.0, description="Pixel noise std.")
        seed: int = Field(0, ge=0)

    downloadable = False
    params: Params

    def default_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return (0.5,) * self.params.channels, (0.25,) * self.params.channels

    def templates(self) -> torch.Tensor:
        """The ``(num_classes, C, size, size)`` class templates in [0.15, 0.85]."""
        p = self.params
        rng = np.random.default_rng([p.seed, 0])
        t = _smooth(rng.random((p.num_classes, p.channels, _GRID, _GRID)), p.size)
        lo = t.amin(dim=(1, 2, 3), keepdim=True)
        hi = t.amax(dim=(1, 2, 3), keepdim=True)
        return 0.15 + 0.7 * (t - lo) / (hi - lo).clamp_min(1e-6)

    def _load(self, split: Split) -> ImageData:
        p = self.params
        n = p.num_samples if split == "train" else (p.test_samples
                                                    or max(1, p.num_samples // 4))
        rng = np.random.default_rng([p.seed, _STREAM[split]])
        y = rng.permutation(np.arange(n) % p.num_classes)
        wobble = _smooth(rng.normal(0.0, 0.08, (n, p.channels, _GRID, _GRID)), p.size)
        shape = (n, p.channels, p.size, p.size)
        pixels = torch.from_numpy(rng.normal(0.0, p.noise, shape).astype(np.float32))
        x = (self.templates()[torch.from_numpy(y)] + wobble + pixels).clamp_(0.0, 1.0)
        return ImageData(x=x, y=torch.from_numpy(y.astype(np.int64)),
                         num_classes=p.num_classes, name=self.name, split=split,
                         classes=tuple(str(c) for c in range(p.num_classes)))
