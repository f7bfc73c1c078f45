"""Dataset interface: one in-memory image tensor per split, resized in one place.

Every dataset plug-in returns an :class:`ImageData` (float32 images in [0, 1],
``(N, C, H, W)``, int64 labels) at its native size from ``_load``; the shared
:meth:`Dataset.load` checks the result, applies the optional resize and turns a
torchvision "not found" error into :class:`DatasetNotFoundError` with a message that
says where we looked and how to fix it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, model_validator

from strategies.registry import PluginParams, Registry

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetNotFoundError",
    "DatasetParams",
    "ImageData",
    "Split",
    "default_root",
    "resize_images",
    "to_image_data",
]

Split = Literal["train", "test"]
T = TypeVar("T")

# Resizing 60k images at once would allocate the full float tensor twice; chunks keep
# the peak close to the output size.
_RESIZE_CHUNK = 4096


@dataclass(frozen=True, eq=False)
class ImageData:
    """Images and labels of one split, held in memory.

    Parameters
    ----------
    x
        float32 images in [0, 1], shape ``(N, C, H, W)``.
    y
        int64 labels in ``[0, num_classes)``, shape ``(N,)``.
    num_classes
        Number of classes of the dataset (not only those present in ``y``).
    name
        Registry name of the dataset (``"mnist"``).
    split
        Source split the rows come from (``"train"`` or ``"test"``).
    classes
        Optional class names, ``len(classes) == num_classes``.
    index
        Optional int64 array of the rows' indices in the source split; ``None``
        means ``arange(N)``. :meth:`subset` keeps it, so records can name samples.
    """

    x: torch.Tensor
    y: torch.Tensor
    num_classes: int
    name: str
    split: str = "train"
    classes: tuple[str, ...] | None = None
    index: np.ndarray | None = None

    def __post_init__(self) -> None:
        # Shape/dtype checks only: a value-range pass over 60k images would run on
        # every subset; Dataset.load checks the range once.
        if self.x.dtype != torch.float32 or self.x.ndim != 4:
            raise TypeError(
                f"x must be a float32 (N, C, H, W) tensor, got {self.x.dtype} "
                f"with shape {tuple(self.x.shape)}")
        if self.y.dtype != torch.int64 or self.y.shape != (self.x.shape[0],):
            raise TypeError(
                f"y must be an int64 tensor of shape ({self.x.shape[0]},), got "
                f"{self.y.dtype} with shape {tuple(self.y.shape)}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {self.num_classes}")
        if self.classes is not None and len(self.classes) != self.num_classes:
            raise ValueError(f"classes has {len(self.classes)} names for "
                             f"num_classes={self.num_classes}")
        if self.index is not None and (self.index.dtype != np.int64
                                       or self.index.shape != (len(self),)):
            raise TypeError(f"index must be an int64 array of shape ({len(self)},), "
                            f"got {self.index.dtype} {self.index.shape}")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def indices(self) -> np.ndarray:
        """Source-split indices of the rows (``index`` or ``arange(N)``)."""
        return self.index if self.index is not None else np.arange(len(self))

    def subset(self, indices: Sequence[int] | np.ndarray | torch.Tensor) -> ImageData:
        """Rows ``indices`` (positions in this object) as a new :class:`ImageData`."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"subset indices must lie in [0, {len(self)}), got "
                             f"[{idx.min()}, {idx.max()}]")
        t = torch.from_numpy(idx)
        return replace(self, x=self.x[t], y=self.y[t], index=self.indices[idx].copy())


class DatasetNotFoundError(FileNotFoundError):
    """The dataset's files are not under ``root`` and downloading was not allowed."""


def default_root() -> Path:
    """Where datasets live when ``root`` is not set.

    ``$SIFTSIM_DATA`` if set, else ``$XDG_CACHE_HOME/siftsim/data`` (default
    ``~/.cache/siftsim/data``): a per-user cache, never the repository.
    """
    env = os.environ.get("SIFTSIM_DATA")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or "~/.cache"
    return Path(cache).expanduser() / "siftsim" / "data"


class DatasetParams(PluginParams):
    """Fields every dataset shares (subclass it to add dataset-specific ones)."""

    root: str | None = Field(
        None, description="Folder holding the dataset; None = default_root().")
    download: bool = Field(False, description="Let torchvision download missing files.")
    image_size: int | None = Field(
        None, ge=8, description="Resize to image_size x image_size; None = native.")
    mean: tuple[float, ...] | None = Field(
        None, min_length=1, description="Per-channel mean; None = dataset default.")
    std: tuple[float, ...] | None = Field(
        None, min_length=1,
        description="Per-channel std (> 0); None = dataset default.")

    @model_validator(mode="after")
    def _check_normalization(self) -> DatasetParams:
        if (self.mean is None) != (self.std is None):
            raise ValueError("set both mean and std, or neither (dataset default)")
        if self.std is not None and self.mean is not None:
            if any(not s > 0 for s in self.std):
                raise ValueError(f"std values must be > 0, got {self.std}")
            if len(self.mean) != len(self.std):
                raise ValueError(f"mean and std need one value per channel, got "
                                 f"{len(self.mean)} means and {len(self.std)} stds")
        return self


def resize_images(x: torch.Tensor, size: int) -> torch.Tensor:
    """Bilinear resize of ``(N, C, H, W)`` images in [0, 1] to ``size x size``.

    Antialiasing is on when any side shrinks, so down-sizing does not alias.
    """
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    antialias = size < h or size < w
    out = torch.empty((x.shape[0], x.shape[1], size, size), dtype=torch.float32)
    for s in range(0, x.shape[0], _RESIZE_CHUNK):
        chunk = F.interpolate(x[s:s + _RESIZE_CHUNK], size=(size, size),
                              mode="bilinear", align_corners=False, antialias=antialias)
        out[s:s + _RESIZE_CHUNK] = chunk.clamp_(0.0, 1.0)
    return out


class Dataset:
    """Base class of every dataset plug-in.

    Subclasses implement :meth:`_load` (native size, ``None`` for a missing split)
    and set ``default_mean``/``default_std`` (or override
    :meth:`default_normalization` when they depend on parameters).

    Parameters
    ----------
    params
        The validated ``Params`` instance of the subclass.
    """

    Params: ClassVar[type[DatasetParams]] = DatasetParams
    name: ClassVar[str] = "base"
    default_mean: ClassVar[tuple[float, ...]] = (0.5,)
    default_std: ClassVar[tuple[float, ...]] = (0.5,)
    #: Whether ``download: true`` can fetch the files (False for local-only sets).
    downloadable: ClassVar[bool] = True

    def __init__(self, params: DatasetParams) -> None:
        self.params = params

    @property
    def root(self) -> Path:
        """The folder searched for files (``params.root`` or :func:`default_root`)."""
        return Path(self.params.root).expanduser() if self.params.root \
            else default_root()

    def load(self, split: Split) -> ImageData | None:
        """Load ``split`` in memory, resized to ``image_size`` if set.

        Returns ``None`` when the dataset has no such split.
        """
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        data = self._load(split)
        if data is None:
            return None
        lo, hi = (float(v) for v in torch.aminmax(data.x)) if len(data) else (0.0, 1.0)
        if lo < 0.0 or hi > 1.0:
            raise ValueError(f"{self.name} {split}: images must lie in [0, 1], "
                             f"got [{lo:.3g}, {hi:.3g}]")
        mean, _ = self.normalization()
        channels = data.image_shape[0]
        if len(mean) != channels:
            raise ValueError(f"{self.name}: mean/std have {len(mean)} values but the "
                             f"images have {channels} channels")
        if self.params.image_size is not None:
            data = replace(data, x=resize_images(data.x, self.params.image_size))
        return data

    def _load(self, split: Split) -> ImageData | None:
        raise NotImplementedError

    def default_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The dataset's own per-channel ``(mean, std)``."""
        return self.default_mean, self.default_std

    def normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel ``(mean, std)``: the params' values, else the default."""
        if self.params.mean is not None and self.params.std is not None:
            return tuple(self.params.mean), tuple(self.params.std)
        return self.default_normalization()

    # -- helpers for subclasses ------------------------------------------------------
    def not_found(self, root: Path, expected: str) -> DatasetNotFoundError:
        """The error for missing files: what, where, and the two ways to fix it."""
        fix = ("set `download: true` or point `root` at a folder holding the files"
               if self.downloadable else
               "it cannot be downloaded automatically; point `root` at a folder "
               "holding the files")
        return DatasetNotFoundError(
            f"dataset {self.name!r}: files not found under root {str(root)!r} "
            f"(expected {expected}); {fix}")

    def open_torchvision(self, factory: Callable[..., T], expected: str,
                         **kwargs: Any) -> T:
        """Build a torchvision dataset on :attr:`root`, mapping "not found" errors.

        torchvision raises a bare ``RuntimeError`` when files are missing and
        ``download`` is False; callers get :class:`DatasetNotFoundError` instead.
        """
        root = self.root
        try:
            return factory(str(root), download=self.params.download, **kwargs)
        except RuntimeError as err:
            raise self.not_found(root, expected) from err


def to_image_data(images: np.ndarray | torch.Tensor, labels: Any, *, num_classes: int,
                  name: str, split: str, classes: tuple[str, ...] | None = None,
                  scale: float = 255.0) -> ImageData:
    """Pack uint8-like ``(N, C, H, W)`` images and labels into :class:`ImageData`."""
    # One fresh contiguous float32 buffer (input may be a transposed view): the
    # caller's array (a torchvision buffer) stays untouched.
    src = torch.as_tensor(images)
    x = torch.empty(src.shape, dtype=torch.float32).copy_(src).div_(scale)
    y = torch.as_tensor(np.asarray(labels)).to(torch.int64)
    return ImageData(x=x, y=y, num_classes=num_classes, name=name, split=split,
                     classes=classes)


DATASETS: Registry[type[Dataset]] = Registry("dataset",
                                             package="simulator.data.datasets")
