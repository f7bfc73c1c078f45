"""A small MNIST CNN, the second target network of He et al. (ACSAC 2019)."""

from __future__ import annotations

from typing import Literal

from torch import nn

from strategies.models.backbone import BACKBONES, Backbone, LayerSpec
from strategies.registry import PluginParams

__all__ = ["MnistCNN"]


@BACKBONES.register("mnist_cnn")
class MnistCNN(Backbone):
    """A small LeNet-style CNN of our own design, standing in for He et al.'s MNIST CNN.

    conv1 (nc -> 8, 5x5, pad 2), relu1, pool1 (2x2), conv2 (8 -> 16, 5x5, pad 2), relu2,
    pool2 (2x2), flatten, fc1 (16 * h * w -> 128), relu3, fc2 (128 -> K), with h, w the
    input size after two floor halvings (7 x 7 for 28 x 28). Cuts: ``conv1``
    (8 x H x W, before its ReLU) and ``relu2`` (16 x H/2 x W/2). Needs H, W >= 4.
    """

    class Params(PluginParams):
        cut: Literal["conv1", "relu2"] = "relu2"

    example_shape = (1, 28, 28)

    def check_image(self, image_shape: tuple[int, int, int]) -> None:
        if min(image_shape[1:]) < 4:
            raise ValueError(f"mnist_cnn needs H, W >= 4 (two 2x poolings), "
                             f"got image_shape={image_shape!r}")

    def layers(self) -> list[LayerSpec]:
        nc, height, width = self.image_shape
        flat = 16 * (height // 4) * (width // 4)
        return [
            ("conv1", lambda: nn.Conv2d(nc, 8, 5, padding=2)), ("relu1", nn.ReLU),
            ("pool1", lambda: nn.MaxPool2d(2)),
            ("conv2", lambda: nn.Conv2d(8, 16, 5, padding=2)), ("relu2", nn.ReLU),
            ("pool2", lambda: nn.MaxPool2d(2)),
            ("flatten", nn.Flatten),
            ("fc1", lambda: nn.Linear(flat, 128)), ("relu3", nn.ReLU),
            ("fc2", lambda: nn.Linear(128, self.num_classes)),
        ]
