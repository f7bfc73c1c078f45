"""Bias-corrected BatchNorm running statistics for deployment.

A BatchNorm layer's running statistics are an exponential moving average started at
mean 0, variance 1. After a short simulated training (tens of steps, not thousands) that
start still dominates: a layer whose true activation variance is 1e-4 reports 1e-2, and
in eval mode the layer squashes its input to a constant. As Adam does for its moments
(Kingma and Ba 2015, arXiv 1412.6980), divide out the initial value's remaining weight
``(1 - momentum) ** num_batches_tracked``. FedAvg keeps this exact: copies that each
took the same number of steps from the same start average to the same form.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

__all__ = ["debias_batchnorm"]


@torch.no_grad()
def debias_batchnorm(module: nn.Module, negligible: float = 1e-6) -> int:
    """Correct every EMA BatchNorm of ``module`` in place; returns how many changed.

    Apply once, to the weights being deployed (not to weights that keep training).
    Layers that never trained, or whose initial weight is already negligible, are left.
    """
    changed = 0
    for m in module.modules():
        if not (isinstance(m, _BatchNorm) and m.track_running_stats
                and m.momentum is not None and m.num_batches_tracked is not None):
            continue
        left = (1.0 - m.momentum) ** int(m.num_batches_tracked)
        if int(m.num_batches_tracked) == 0 or left < negligible:
            continue
        m.running_mean.div_(1.0 - left)
        m.running_var.sub_(left).div_(1.0 - left).clamp_(min=0.0)
        changed += 1
    return changed
