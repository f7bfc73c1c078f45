"""The CIFAR-10 CNN attacked by He, Zhang and Lee (ACSAC 2019)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import nn

from strategies.models.backbone import BACKBONES, Backbone, LayerSpec
from strategies.registry import PluginParams

__all__ = ["HeCifarCNN"]


def _conv(c_in: int, c_out: int) -> Callable[[], nn.Module]:
    return lambda: nn.Conv2d(c_in, c_out, 3, padding=1)


@BACKBONES.register("he_cifar")
class HeCifarCNN(Backbone):
    """He et al.'s target CNN ("Model Inversion Attacks Against Collaborative
    Inference", https://doi.org/10.1145/3359789.3359824).

    conv11 (nc -> 64) ReLU, conv12 (64 -> 64) ReLU, pool1, conv21 (64 -> 128) ReLU,
    conv22 (128 -> 128) ReLU, pool2, conv31, conv32 (128 -> 128) ReLU, pool3,
    fc1 (128 * H/8 * W/8 -> 512) Sigmoid, fc2 (512 -> K); all convs 3x3 pad 1. The
    cuts studied there: ``conv11`` (64 x H x W, before its ReLU), ``relu22``
    (128 x H/2 x W/2) and ``relu32`` (128 x H/4 x W/4). H and W must be divisible by 8.
    """

    class Params(PluginParams):
        cut: Literal["conv11", "relu22", "relu32"] = "relu22"

    example_shape = (3, 32, 32)

    def check_image(self, image_shape: tuple[int, int, int]) -> None:
        if image_shape[1] % 8 or image_shape[2] % 8:
            raise ValueError(f"he_cifar needs H and W divisible by 8, "
                             f"got image_shape={image_shape!r}")

    def layers(self) -> list[LayerSpec]:
        nc, height, width = self.image_shape
        flat = 128 * (height // 8) * (width // 8)
        return [
            ("conv11", _conv(nc, 64)), ("relu11", nn.ReLU),
            ("conv12", _conv(64, 64)), ("relu12", nn.ReLU),
            ("pool1", lambda: nn.MaxPool2d(2)),
            ("conv21", _conv(64, 128)), ("relu21", nn.ReLU),
            ("conv22", _conv(128, 128)), ("relu22", nn.ReLU),
            ("pool2", lambda: nn.MaxPool2d(2)),
            ("conv31", _conv(128, 128)), ("relu31", nn.ReLU),
            ("conv32", _conv(128, 128)), ("relu32", nn.ReLU),
            ("pool3", lambda: nn.MaxPool2d(2)),
            ("flatten", nn.Flatten),
            ("fc1", lambda: nn.Linear(flat, 512)), ("sigmoid1", nn.Sigmoid),
            ("fc2", lambda: nn.Linear(512, self.num_classes)),
        ]
