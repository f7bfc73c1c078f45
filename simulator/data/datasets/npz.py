"""Images and labels from a NumPy ``.npz`` file."""

from __future__ import annotations

import zipfile
from typing import ClassVar

import numpy as np
from pydantic import Field

from simulator.data.base import (
    DATASETS,
    Dataset,
    DatasetParams,
    ImageData,
    Split,
    to_image_data,
)
from simulator.data.datasets.image_folder import resolve_path

__all__ = ["Npz"]

_CHANNELS = (1, 3, 4)


def _to_nchw(x: np.ndarray, where: str) -> np.ndarray:
    """NHWC, NCHW or NHW -> NCHW, deciding by which axis is a channel axis."""
    if x.ndim == 3:
        return x[:, None]
    if x.ndim != 4:
        raise ValueError(f"{where}: images must be (N, H, W), (N, H, W, C) or "
                         f"(N, C, H, W), got shape {x.shape}")
    if x.shape[-1] in _CHANNELS:
        return x.transpose(0, 3, 1, 2)
    if x.shape[1] in _CHANNELS:
        return x
    raise ValueError(f"{where}: cannot tell the channel axis of shape {x.shape} "
                     f"(expected 1, 3 or 4 channels first or last)")


def _scale(x: np.ndarray, where: str) -> float:
    if x.dtype == np.uint8:
        return 255.0
    if np.issubdtype(x.dtype, np.floating):
        if x.size and (x.min() < 0.0 or x.max() > 1.0):
            raise ValueError(f"{where}: float images must lie in [0, 1], got "
                             f"[{x.min():.3g}, {x.max():.3g}]")
        return 1.0
    raise TypeError(f"{where}: images must be uint8 or float in [0, 1], got {x.dtype}")


@DATASETS.register("npz")
class Npz(Dataset):
    """A dataset stored as arrays ``x`` (uint8 or float in [0, 1]) and ``y`` (ints).

    ``x`` may be ``(N, H, W, C)``, ``(N, C, H, W)`` or ``(N, H, W)``. The number of
    classes is ``num_classes`` if set, else ``max(y) + 1`` of the train file.
    """

    class Params(DatasetParams):
        path: str = Field(description="Train .npz; a relative path is under root.")
        test_path: str | None = Field(None, description="Optional test .npz.")
        x_key: str = "x"
        y_key: str = "y"
        num_classes: int | None = Field(None, ge=1)

    downloadable: ClassVar[bool] = False
    params: Params

    def _file(self, raw: str) -> np.lib.npyio.NpzFile:
        path = resolve_path(raw, self.params.root)
        if not path.is_file():
            raise self.not_found(path.parent, f"the file {path.name}")
        arrays = np.load(path)
        for key in (self.params.x_key, self.params.y_key):
            if key not in arrays.files:
                raise KeyError(f"{path}: no array {key!r}; arrays: {arrays.files}")
        return arrays

    def _num_classes(self) -> int:
        if self.params.num_classes is not None:
            return self.params.num_classes
        y = self._file(self.params.path)[self.params.y_key]
        return int(y.max()) + 1 if y.size else 1

    def default_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        c = _to_nchw(np.empty((0, *self._x_shape()[1:]), dtype=np.uint8),
                     self.params.path).shape[1]
        return (0.5,) * c, (0.5,) * c

    def _x_shape(self) -> tuple[int, ...]:
        """Shape of the train ``x`` from its .npy header, without reading the data."""
        path = resolve_path(self.params.path, self.params.root)
        if not path.is_file():
            raise self.not_found(path.parent, f"the file {path.name}")
        fmt = np.lib.format
        try:
            with zipfile.ZipFile(path) as zf, zf.open(f"{self.params.x_key}.npy") as f:
                version = fmt.read_magic(f)
                reader = (fmt.read_array_header_1_0 if version == (1, 0)
                          else fmt.read_array_header_2_0)
                return tuple(reader(f)[0])
        except (KeyError, ValueError):  # unusual archive: read the array itself
            return tuple(self._file(self.params.path)[self.params.x_key].shape)

    def _load(self, split: Split) -> ImageData | None:
        raw = self.params.path if split == "train" else self.params.test_path
        if raw is None:
            return None
        arrays = self._file(raw)
        x, y = arrays[self.params.x_key], arrays[self.params.y_key]
        where = f"npz {raw}"
        if not np.issubdtype(y.dtype, np.integer) or y.shape != (x.shape[0],):
            raise ValueError(f"{where}: labels must be {x.shape[0]} integers, got "
                             f"{y.dtype} with shape {y.shape}")
        k = self._num_classes()
        if y.size and (y.min() < 0 or y.max() >= k):
            raise ValueError(f"{where}: labels must lie in [0, {k}), got "
                             f"[{y.min()}, {y.max()}]")
        scale = _scale(x, where)
        return to_image_data(_to_nchw(x, where), y.astype(np.int64), num_classes=k,
                             name=self.name, split=split, scale=scale)
