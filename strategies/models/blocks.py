"""Building blocks of the SiftFunnel edge and cloud models, plus input normalisation.

Liu et al., "Information Sifting Funnel" (https://arxiv.org/abs/2501.00824):
squeeze-and-excitation, triplet attention and CBAM sit in the edge model; ``Up`` lifts
the transmitted channels back to the trunk's width on the cloud. Every block keeps the
spatial size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["SE", "TripletAttention", "CBAM", "Up", "Normalize"]


def _positive(name: str, value: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


class SE(nn.Module):
    """Squeeze-and-excitation (Hu et al., https://arxiv.org/abs/1709.01507).

    Global average pool -> Linear(c -> c // r, no bias) -> ReLU -> Linear(c // r -> c,
    no bias) -> Sigmoid -> scale the channels. The hidden width is at least 1.

    Parameters
    ----------
    c
        Number of channels.
    r
        Reduction ratio.
    """

    def __init__(self, c: int, r: int = 16) -> None:
        super().__init__()
        hidden = max(1, _positive("c", c) // _positive("r", r))
        self.fc = nn.Sequential(
            nn.Linear(c, hidden, bias=False), nn.ReLU(),
            nn.Linear(hidden, c, bias=False), nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights = self.fc(x.mean(dim=(2, 3)))
        return x * weights[:, :, None, None]


class _ZPoolGate(nn.Module):
    """One triplet-attention gate: Z-pool over dim 1, Conv7x7 (2 -> 1) + BN, sigmoid."""

    def __init__(self, kernel_size: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        # The reference code uses momentum 0.01; simulations train for far fewer steps,
        # and such slow running statistics leave eval-mode gates far from training ones.
        self.bn = nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat([x.amax(dim=1, keepdim=True), x.mean(dim=1, keepdim=True)],
                           dim=1)
        return x * torch.sigmoid(self.bn(self.conv(pooled)))


class TripletAttention(nn.Module):
    """Triplet attention (Misra et al., https://arxiv.org/abs/2010.03045).

    Three gates over the (C, W), (H, C) and (H, W) planes: each Z-pools ([max, mean])
    the remaining axis, applies Conv7x7 (2 -> 1, no bias) + BN and a sigmoid, and scales
    its view of the input; the output is the average of the three.
    """

    def __init__(self) -> None:
        super().__init__()
        self.cw = _ZPoolGate()
        self.hc = _ZPoolGate()
        self.hw = _ZPoolGate()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Permuting brings the pooled axis to dim 1; each permutation is self-inverse.
        out_cw = self.cw(x.permute(0, 2, 1, 3)).permute(0, 2, 1, 3)
        out_hc = self.hc(x.permute(0, 3, 2, 1)).permute(0, 3, 2, 1)
        return (out_cw + out_hc + self.hw(x)) / 3.0


class CBAM(nn.Module):
    """Convolutional block attention (Woo et al., https://arxiv.org/abs/1807.06521).

    Channel attention: a shared 1x1-conv MLP (c -> c // ratio -> c, no bias) on the
    average- and max-pooled input, summed, sigmoid; then spatial attention: [mean, max]
    over channels -> Conv7x7 (2 -> 1, no bias) -> sigmoid.

    Parameters
    ----------
    c
        Number of channels.
    ratio
        Reduction ratio of the channel MLP (hidden width at least 1).
    kernel_size
        Spatial-attention kernel size (odd).
    """

    def __init__(self, c: int, ratio: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        hidden = max(1, _positive("c", c) // _positive("ratio", ratio))
        if _positive("kernel_size", kernel_size) % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size!r}")
        self.mlp = nn.Sequential(
            nn.Conv2d(c, hidden, 1, bias=False), nn.ReLU(),
            nn.Conv2d(hidden, c, 1, bias=False),
        )
        self.spatial = nn.Conv2d(2, 1, kernel_size, padding=kernel_size // 2,
                                 bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        avg = self.mlp(x.mean(dim=(2, 3), keepdim=True))
        mx = self.mlp(x.amax(dim=(2, 3), keepdim=True))
        x = x * torch.sigmoid(avg + mx)
        maps = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], 1)
        return x * torch.sigmoid(self.spatial(maps))


class Up(nn.Sequential):
    """The cloud's channel-lifting module: Conv3x3 -> Conv3x3 -> BN -> ReLU.

    Despite the name (kept from the reference code) it restores *channels*, not spatial
    size; the cloud follows it with :class:`TripletAttention`.
    """

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__(
            nn.Conv2d(_positive("c_in", c_in), _positive("c_out", c_out), 3, padding=1,
                      bias=False),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(),
        )


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std``: the first layer of every edge model.

    Keeping normalisation inside the model lets attacks reconstruct directly in [0, 1].
    ``mean`` and ``std`` are buffers, so they travel with the state dict.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t = torch.as_tensor(list(mean), dtype=torch.float32)
        std_t = torch.as_tensor(list(std), dtype=torch.float32)
        if mean_t.ndim != 1 or mean_t.numel() == 0 or mean_t.shape != std_t.shape:
            raise ValueError(f"mean and std must be equal-length non-empty sequences, "
                             f"got mean={list(mean)!r}, std={list(std)!r}")
        if not bool((std_t > 0).all()):
            raise ValueError(f"std must be positive, got {list(std)!r}")
        self.register_buffer("mean", mean_t[None, :, None, None])
        self.register_buffer("std", std_t[None, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"
