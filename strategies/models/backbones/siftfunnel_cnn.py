"""The 4-block CNN that SiftFunnel's CNN variant is built on (unprotected form)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import nn

from strategies.models.backbone import BACKBONES, Backbone, LayerSpec
from strategies.registry import PluginParams

__all__ = ["SiftFunnelCNN"]


def _conv_block(c_in: int, c_out: int) -> Callable[[], nn.Module]:
    """Conv3x3 + BN + MaxPool2 + ReLU, the reference block (pool before ReLU)."""
    return lambda: nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out),
        nn.MaxPool2d(2), nn.ReLU(),
    )


@BACKBONES.register("siftfunnel_cnn")
class SiftFunnelCNN(Backbone):
    """Reference CNN of SiftFunnel (https://arxiv.org/abs/2501.00824), cut at block 2.

    block1 Conv3x3 (nc -> 64) + BN + MaxPool2 + ReLU, block2 Conv3x3 (64 -> 128) + BN +
    MaxPool2 + ReLU  = the cut, 128 x H/4 x W/4; trunk: block3 (128 -> 256), block4
    (256 -> 512), flatten, fc1 (512 * h * w -> 5K), dropout 0.5, fc2 (5K -> K), where
    h, w are H, W after four floor halvings (4 x 4 for 64 x 64). Needs H, W >= 16.
    """

    class Params(PluginParams):
        cut: Literal["block2"] = "block2"

    example_shape = (3, 64, 64)

    def check_image(self, image_shape: tuple[int, int, int]) -> None:
        if min(image_shape[1:]) < 16:
            raise ValueError(f"siftfunnel_cnn needs H, W >= 16 (four 2x poolings), "
                             f"got image_shape={image_shape!r}")

    def layers(self) -> list[LayerSpec]:
        nc, height, width = self.image_shape
        k = self.num_classes
        flat = 512 * (height // 16) * (width // 16)
        return [
            ("block1", _conv_block(nc, 64)),
            ("block2", _conv_block(64, 128)),
            ("block3", _conv_block(128, 256)),
            ("block4", _conv_block(256, 512)),
            ("flatten", nn.Flatten),
            ("fc1", lambda: nn.Linear(flat, 5 * k)),
            ("dropout", lambda: nn.Dropout(0.5)),
            ("fc2", lambda: nn.Linear(5 * k, k)),
        ]
