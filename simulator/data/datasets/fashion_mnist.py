"""Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017) through torchvision."""

from __future__ import annotations

from typing import ClassVar

from simulator.data.base import DATASETS
from simulator.data.datasets.mnist import MNIST

__all__ = ["FashionMNIST"]


@DATASETS.register("fashion_mnist")
class FashionMNIST(MNIST):
    """Fashion-MNIST: 60,000 / 10,000 28x28 grayscale clothing images, 10 classes.

    https://arxiv.org/abs/1708.07747. Files: ``<root>/FashionMNIST/raw/*-ubyte``.
    """

    default_mean: ClassVar[tuple[float, ...]] = (0.2860,)
    default_std: ClassVar[tuple[float, ...]] = (0.3530,)
    torchvision_class: ClassVar[str] = "FashionMNIST"
    folder: ClassVar[str] = "FashionMNIST"
