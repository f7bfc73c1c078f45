"""The attacker's auxiliary images, as the scenario's ``adversary.auxiliary`` declares
them: the auxiliary split of the victims' dataset, uniform noise, or another dataset
(its channels matched to the victims')."""

from __future__ import annotations

import numpy as np

from simulator.engine.workspace import Workspace
from simulator.scenario import plugin_params
from simulator.seeding import rng

__all__ = ["auxiliary_data"]


def auxiliary_data(ws: Workspace) -> tuple[np.ndarray, np.ndarray]:
    """The attacker's auxiliary images (and labels) as the scenario declares them."""
    aux = ws.scenario.adversary.auxiliary
    if aux.source == "same":
        x, y = ws.aux_x, ws.aux_y
    elif aux.source == "noise":
        n = aux.size or len(ws.aux_y)
        g = rng(ws.scenario.seed, "aux-noise")
        x = g.random((n, *ws.image_shape), dtype=np.float32)
        y = g.integers(0, ws.num_classes, n)
    else:
        from simulator.data import DATASETS
        spec = aux.dataset
        params = {**plugin_params(spec), "image_size": ws.image_shape[-1]}
        data = DATASETS.create(spec.name, params).load("train")
        x, y = data.x.numpy(), data.y.numpy() % ws.num_classes
        if x.shape[1:] != ws.image_shape:
            x = _match_channels(x, ws.image_shape[0])
    if aux.size is not None:
        x, y = x[:aux.size], y[:aux.size]
    return x.astype(np.float32), y.astype(np.int64)


def _match_channels(x: np.ndarray, channels: int) -> np.ndarray:
    if x.shape[1] == 3 and channels == 1:
        return (x * np.array([0.299, 0.587, 0.114], np.float32)[:, None, None]).sum(
            1, keepdims=True)
    if x.shape[1] == 1 and channels == 3:
        return np.repeat(x, 3, axis=1)
    raise ValueError(f"auxiliary images have {x.shape[1]} channels, victims {channels}")
