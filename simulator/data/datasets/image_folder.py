"""Any folder of class sub-folders of images, through torchvision's ImageFolder."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
from PIL import Image
from pydantic import Field

from simulator.data.base import (
    DATASETS,
    Dataset,
    DatasetParams,
    ImageData,
    Split,
    resize_images,
    to_image_data,
)

__all__ = ["ImageFolder"]


def resolve_path(path: str, root: str | None) -> Path:
    """``path`` with ``~`` expanded; a relative path is taken under ``root`` if set."""
    p = Path(path).expanduser()
    return p if p.is_absolute() or root is None else Path(root).expanduser() / p


@DATASETS.register("image_folder")
class ImageFolder(Dataset):
    """Images stored as ``path/<class>/<image>``; labels follow sorted class names.

    Images of different sizes need ``image_size`` (each is resized as it is read).
    ``test_path`` (same class folders) gives an optional test split.
    """

    class Params(DatasetParams):
        path: str = Field(description="Folder of class sub-folders (train split); a "
                                      "relative path is taken under root if set.")
        test_path: str | None = Field(None, description="Same layout, test split.")
        channels: Literal[1, 3] = Field(3, description="1 = grayscale, 3 = RGB.")

    downloadable: ClassVar[bool] = False
    params: Params

    def default_normalization(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return (0.5,) * self.params.channels, (0.5,) * self.params.channels

    def _load(self, split: Split) -> ImageData | None:
        raw = self.params.path if split == "train" else self.params.test_path
        if raw is None:
            return None
        folder = resolve_path(raw, self.params.root)
        if not folder.is_dir():
            raise self.not_found(folder, "a folder of class sub-folders of images")
        import torchvision  # lazy: listing the registry should not pay for it

        ds = torchvision.datasets.ImageFolder(str(folder))
        mode = "L" if self.params.channels == 1 else "RGB"
        images = [self._read(path, mode) for path, _ in ds.samples]
        shapes = {im.shape for im in images}
        if len(shapes) > 1:
            raise ValueError(f"image_folder {folder}: images differ in size "
                             f"({sorted(shapes)[:3]}...); set image_size to resize "
                             f"them")
        x = torch.cat(images) if images else torch.empty(0, self.params.channels, 8, 8)
        return to_image_data(x, [t for _, t in ds.samples], num_classes=len(ds.classes),
                             name=self.name, split=split, classes=tuple(ds.classes),
                             scale=1.0)

    def _read(self, path: str, mode: str) -> torch.Tensor:
        with Image.open(path) as im:
            arr = np.asarray(im.convert(mode), dtype=np.uint8)
        x = torch.from_numpy(arr.reshape(arr.shape[0], arr.shape[1], -1).copy())
        x = x.permute(2, 0, 1)[None].to(torch.float32) / 255.0
        size = self.params.image_size
        # Resizing here (with the shared function) lets mixed-size folders stack.
        return resize_images(x, size) if size is not None else x
