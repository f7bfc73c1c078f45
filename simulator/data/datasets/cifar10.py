"""CIFAR-10 (Krizhevsky, 2009): torchvision's batches, or the npz copies we ship."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

import numpy as np

from simulator.data.base import DATASETS, Dataset, ImageData, Split, to_image_data

__all__ = ["CIFAR10"]

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
           "ship", "truck")


@DATASETS.register("cifar10")
class CIFAR10(Dataset):
    """CIFAR-10: 32x32 RGB images, 10 classes.

    Looked up in this order under ``root``:

    1. ``cifar-10-batches-py/`` (torchvision's format, 50,000 / 10,000 images);
    2. ``CIFAR10/cifar10_test.npz`` and ``CIFAR10/cifar10_train*.npz`` (arrays ``x``
       ``(N, 32, 32, 3)`` uint8 and ``y``), the layout of the shared data folder,
       whose train file holds only the first 2,000 training images and whose test
       file has 9,000 JPEG-decoded (lossy) images; see its README;
    3. ``download: true`` fetches the torchvision batches.
    """

    default_mean: ClassVar[tuple[float, ...]] = (0.4914, 0.4822, 0.4465)
    default_std: ClassVar[tuple[float, ...]] = (0.2470, 0.2435, 0.2616)

    def _load(self, split: Split) -> ImageData:
        root = self.root
        npz_files = self._npz_files(root / "CIFAR10", split)
        if (root / "cifar-10-batches-py").is_dir() or (self.params.download
                                                       and not npz_files):
            import torchvision  # lazy: listing the registry should not pay for it

            ds = self.open_torchvision(torchvision.datasets.CIFAR10,
                                       self._expected(), train=split == "train")
            images, labels = ds.data, np.asarray(ds.targets)
        elif npz_files:
            arrays = [np.load(f) for f in npz_files]
            images = np.concatenate([a["x"] for a in arrays])
            labels = np.concatenate([a["y"] for a in arrays])
        else:
            raise self.not_found(root, self._expected())
        if images.ndim != 4 or images.shape[1:] != (32, 32, 3):
            raise ValueError(
                f"cifar10 images must be (N, 32, 32, 3), got {images.shape}")
        return to_image_data(images.transpose(0, 3, 1, 2), labels.astype(np.int64),
                             num_classes=10, name=self.name, split=split,
                             classes=CLASSES)

    @staticmethod
    def _npz_files(folder: Path, split: Split) -> list[Path]:
        pattern = "cifar10_train*.npz" if split == "train" else "cifar10_test.npz"
        return sorted(folder.glob(pattern)) if folder.is_dir() else []

    @staticmethod
    def _expected() -> str:
        return ("cifar-10-batches-py/ (torchvision) or CIFAR10/cifar10_test.npz and "
                "CIFAR10/cifar10_train*.npz")
