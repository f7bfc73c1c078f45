"""Dry runs: one forward pass of a zero sample to learn a module's output shape."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["check_image_shape", "dry_run", "eval_mode", "feature_shape", "zero_input"]


def check_image_shape(image_shape: Sequence[int], name: str = "image_shape"
                      ) -> tuple[int, int, int]:
    """Validate a (C, H, W) shape of positive ints and return it as a tuple."""
    shape = tuple(image_shape)
    if len(shape) != 3 or not all(isinstance(s, int) and not isinstance(s, bool)
                                  and s > 0 for s in shape):
        raise ValueError(f"{name} must be three positive ints (C, H, W), "
                         f"got {image_shape!r}")
    return shape  # type: ignore[return-value]


@contextmanager
def eval_mode(module: nn.Module) -> Iterator[nn.Module]:
    """Put every submodule in eval mode, restoring each one's own flag afterwards."""
    # Restoring per submodule keeps deliberately frozen parts (e.g. BN in eval) as set.
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield module
    finally:
        for m, flag in flags:
            m.training = flag


def _device_dtype(module: nn.Module) -> tuple[torch.device, torch.dtype]:
    for tensor in list(module.parameters()) + list(module.buffers()):
        if tensor.is_floating_point():
            return tensor.device, tensor.dtype
    return torch.device("cpu"), torch.float32


def zero_input(module: nn.Module, image_shape: Sequence[int]) -> torch.Tensor:
    """A (1, C, H, W) zero batch on the module's device and dtype."""
    device, dtype = _device_dtype(module)
    return torch.zeros((1, *check_image_shape(image_shape)), device=device, dtype=dtype)


def dry_run(module: nn.Module, image_shape: Sequence[int]) -> torch.Tensor:
    """Output of ``module`` on one zero sample, in eval mode and without gradients."""
    with eval_mode(module), torch.no_grad():
        return module(zero_input(module, image_shape))


def feature_shape(module: nn.Module, image_shape: Sequence[int]) -> tuple[int, ...]:
    """Per-sample output shape of ``module`` for inputs of ``image_shape`` (C, H, W)."""
    return tuple(int(s) for s in dry_run(module, image_shape).shape[1:])
