"""scikit-learn's bundled 8x8 digits: the offline default that needs no files."""

from __future__ import annotations

from typing import ClassVar

from simulator.data.base import DATASETS, Dataset, ImageData, Split, to_image_data

__all__ = ["Digits"]


@DATASETS.register("digits")
class Digits(Dataset):
    """1,797 8x8 grayscale digits (values 0..16 scaled to [0, 1]), 10 classes.

    Ships inside scikit-learn, so scenarios and tests run anywhere without data.
    There is only a ``"train"`` split; evaluation data is carved out of it.
    """

    default_mean: ClassVar[tuple[float, ...]] = (0.3053,)
    default_std: ClassVar[tuple[float, ...]] = (0.3760,)
    downloadable: ClassVar[bool] = False

    def _load(self, split: Split) -> ImageData | None:
        if split != "train":
            return None
        from sklearn.datasets import load_digits  # lazy: sklearn imports in seconds

        bunch = load_digits()
        return to_image_data(bunch.images[:, None], bunch.target, num_classes=10,
                             name=self.name, split=split, scale=16.0,
                             classes=tuple(str(c) for c in range(10)))
