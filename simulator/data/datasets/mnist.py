"""MNIST handwritten digits (LeCun et al., 1998) through torchvision."""

from __future__ import annotations

from typing import ClassVar

from simulator.data.base import DATASETS, Dataset, ImageData, Split, to_image_data

__all__ = ["MNIST"]


@DATASETS.register("mnist")
class MNIST(Dataset):
    """MNIST: 60,000 train / 10,000 test 28x28 grayscale digits, 10 classes.

    Files are torchvision's layout, ``<root>/MNIST/raw/*-ubyte``. The raw uint8
    tensor (``.data``) is converted at once instead of decoding one PIL image per item.
    """

    default_mean: ClassVar[tuple[float, ...]] = (0.1307,)
    default_std: ClassVar[tuple[float, ...]] = (0.3081,)
    #: Class name in ``torchvision.datasets``.
    torchvision_class: ClassVar[str] = "MNIST"
    folder: ClassVar[str] = "MNIST"

    def _load(self, split: Split) -> ImageData:
        import torchvision  # lazy: listing the registry should not pay for it

        ds = self.open_torchvision(
            getattr(torchvision.datasets, self.torchvision_class),
            f"{self.folder}/raw/*-ubyte (torchvision layout)",
            train=split == "train")
        return to_image_data(ds.data.unsqueeze(1), ds.targets,
                             num_classes=len(ds.classes), name=self.name, split=split,
                             classes=tuple(ds.classes))
