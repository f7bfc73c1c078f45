"""Pieces shared by several defenses: label smoothing, dCor loss, noise, proxy attacker.

Private module (leading underscore): the defense registry does not import it as a
plug-in, and nothing here is registered.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import nn

from analysis.metrics import (distance_correlation, pearson_redundancy,
                              u_distance_correlation_sqr)
from strategies.registry import PluginParams

__all__ = [
    "PROXY_KEY", "DcorEstimator", "PearsonEstimator", "ProxyDecoder", "ProxyParams",
    "Standardize",
    "adversarial_term", "attach_scale", "attached_scale", "build_proxy", "dcor_loss",
    "NoiseUnits", "gaussian_like", "image_channels", "laplace_like", "noise_unit",
    "noise_units_field", "pearson_loss", "proxy_error",
    "proxy_step", "smooth_labels", "smoothed_kl",
]

_SCALE_ATTR = "_defense_noise_scale"


# -- label smoothing -------------------------------------------------------------------
def smooth_labels(labels: torch.Tensor, num_classes: int, eps: float) -> torch.Tensor:
    """Smoothed one-hot targets: true class ``1 - eps``, others ``eps / (K - 1)``.

    This is the SiftFunnel convention (the off-classes share ``eps``), not PyTorch's
    ``label_smoothing`` (which spreads ``eps`` over all ``K`` classes).
    """
    if num_classes < 2:
        raise ValueError(
            f"num_classes must be >= 2 for label smoothing, got {num_classes}")
    if not 0.0 <= eps < 1.0:
        raise ValueError(f"eps must be in [0, 1), got {eps!r}")
    off = eps / (num_classes - 1)
    target = torch.full((labels.shape[0], num_classes), off, dtype=torch.float32,
                        device=labels.device)
    return target.scatter_(1, labels.long().unsqueeze(1), 1.0 - eps)


def smoothed_kl(logits: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    """``KL(y_smooth || softmax(logits))`` of each sample, shape ``(B,)``.

    Its mean is ``kl_div(..., reduction="batchmean")``.
    """
    target = smooth_labels(labels, logits.shape[1], eps).to(logits.dtype)
    # kl_div uses xlogy, so zero targets (eps = 0) contribute exactly 0.
    return F.kl_div(F.log_softmax(logits, dim=1), target, reduction="none").sum(dim=1)


# -- distance correlation loss ---------------------------------------------------------
DcorEstimator = Literal["v", "u"]
"""dCor^2 estimator of a loss term: ``"v"`` the plain V-statistic, ``"u"`` U-centred."""


def dcor_loss(x: torch.Tensor, z: torch.Tensor,
              estimator: DcorEstimator) -> torch.Tensor:
    """Differentiable dCor^2(x, z) on the batch with the chosen estimator.

    ``"v"``: :func:`analysis.metrics.distance_correlation` (biased towards 1 for
    high-dimensional batches, N >= 2). ``"u"``: the bias-corrected
    :func:`analysis.metrics.u_distance_correlation_sqr` clamped at 0; 0 (without
    gradient) for batches of fewer than 4 samples, which it cannot estimate from.
    """
    if estimator == "v":
        return distance_correlation(x, z)
    if estimator == "u":
        if x.shape[0] < 4:
            # U-centring needs 4 samples; a device batch of 2-3 carries no usable
            # estimate (the V-statistic is ~1 there whatever z is): no term, no gradient.
            return (z * 0.0).sum()
        # The U-statistic dips below 0 only by sampling noise around independence (the
        # population dCor^2 is >= 0); pushing it further down would fit that noise,
        # not remove dependence, so the term stops at 0 (no gradient below).
        return u_distance_correlation_sqr(x, z).clamp_min(0.0)
    raise ValueError(f"estimator must be 'v' or 'u', got {estimator!r}")


# -- inter-channel Pearson loss -------------------------------------------------------
PearsonEstimator = Literal["plain", "adjusted"]
"""Squared-correlation estimator of a Pearson term: ``"plain"`` r^2, ``"adjusted"``
the bias-corrected r^2 (zero under independence), clamped at 0 per channel pair."""


def pearson_loss(z: torch.Tensor, estimator: PearsonEstimator,
                 eps: float = 1e-8) -> torch.Tensor:
    """Mean squared inter-channel correlation of ``z`` (N, C, H, W), per sample.

    ``"plain"``: :func:`analysis.metrics.pearson_redundancy` (off-diagonal r^2). Over
    ``m = H*W`` positions, two *independent* channels still have ``E[r^2] = 1/(m - 1)``
    (1/15 on a 4 x 4 map, 1/255 on the paper's 16 x 16), and the only way below that
    floor is a constant channel, which counts as r = 0: the term rewards dead channels.
    ``"adjusted"``: per pair ``((m - 1) r^2 - 1) / (m - 2)`` (the adjusted r^2, unbiased
    0 under independence), clamped at 0 before the mean, so pairs already at noise
    level, and constant channels, get no gradient. With ``m < 3`` positions r is +-1
    or undefined whatever the features are; the adjusted term is 0 there.
    """
    if estimator == "plain":
        return pearson_redundancy(z, eps)
    if estimator != "adjusted":
        raise ValueError(f"estimator must be 'plain' or 'adjusted', got {estimator!r}")
    if z.ndim < 3:
        raise ValueError(f"z must have shape (N, C, H, W), got {tuple(z.shape)}")
    n, c = z.shape[:2]
    v = z.reshape(n, c, -1)
    m = v.shape[2]
    if c == 1 or m < 3:
        return (z * 0.0).sum()
    v = v - v.mean(dim=2, keepdim=True)
    v = v / torch.sqrt(v.pow(2).sum(dim=2, keepdim=True) + eps)
    r2 = (v @ v.transpose(1, 2)).pow(2)
    adjusted = ((m - 1) * r2 - 1.0) / (m - 2)
    off = ~torch.eye(c, dtype=torch.bool, device=z.device)
    return adjusted.clamp_min(0.0)[:, off].mean()


# -- noise -----------------------------------------------------------------------------
NoiseUnits = Literal["relative", "absolute"]
"""What a noise scale of 1 means: ``"relative"``, each sample's feature RMS;
``"absolute"``, one unit of the feature."""


def noise_units_field(default: NoiseUnits = "relative") -> Any:
    """The ``units`` parameter of a noise defense (see :func:`noise_unit`)."""
    return Field(default, description="noise scale unit: 'relative' (each sample's "
                 "feature RMS) or 'absolute' (the feature's own)")


def noise_unit(z: torch.Tensor, units: NoiseUnits) -> torch.Tensor | float:
    """The size of one noise unit for each sample of ``z`` (N, ...), broadcastable.

    ``"relative"``: the RMS of the sample's clean feature, detached, so a scale is a
    noise-to-signal ratio whatever the encoder's output scale (on the quickstart a
    funnel's feature RMS is ~0.01 and the plain cut's ~1: absolute noise of 0.8 drowns
    one and barely touches the other), and the edge cannot outgrow the noise by scaling
    its output up. ``"absolute"``: 1, the noise of the papers that tune it per network.
    """
    if units == "absolute":
        return 1.0
    if units != "relative":
        raise ValueError(f"units must be 'relative' or 'absolute', got {units!r}")
    rms = z.detach().flatten(1).pow(2).mean(1).sqrt()
    return rms.view(-1, *([1] * (z.ndim - 1)))


def gaussian_like(z: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like ``z``, drawn from ``generator``."""
    return torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)


def laplace_like(z: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard Laplace(0, 1) noise shaped like ``z``, drawn from ``generator``.

    ``torch.distributions.Laplace`` takes no generator; the difference of two
    Exp(1) variables is Laplace(0, 1) and ``exponential_`` accepts one.
    """
    e1 = torch.empty_like(z, requires_grad=False).exponential_(generator=generator)
    e2 = torch.empty_like(z, requires_grad=False).exponential_(generator=generator)
    return e1 - e2


def attach_scale(z: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Return a view of ``z`` carrying a learned per-element noise ``scale``.

    ``DefendedEdge.forward`` receives no generator, so learned-noise heads (VIB,
    Shredder) leave the sampling to :meth:`Defense.transform`, which has one; the scale
    travels on the feature tensor from the head to the transform.
    """
    out = z.view_as(z)
    setattr(out, _SCALE_ATTR, scale)
    return out


def attached_scale(z: torch.Tensor, defense: str) -> torch.Tensor:
    """The scale :func:`attach_scale` put on ``z``; ``ValueError`` if there is none."""
    scale = getattr(z, _SCALE_ATTR, None)
    if scale is None:
        raise ValueError(
            f"{defense}.transform needs the feature returned by its own edge head "
            "(edge(x)), which carries the learned noise scale; got a tensor without it "
            "(was it detached, copied or moved between edge(x) and transform?)")
    return scale


# -- proxy inversion attacker ----------------------------------------------------------
def image_channels(encoder: nn.Module) -> int:
    """Number of input image channels of an edge encoder.

    ``wrap_edge`` is told the feature shape but not the image shape; the edge starts
    with ``Normalize`` (one mean per channel) or, failing that, a convolution.
    """
    for module in encoder.modules():
        mean = getattr(module, "mean", None)
        if isinstance(mean, torch.Tensor) and mean.ndim == 4:
            return int(mean.shape[1])
        if isinstance(module, nn.Conv2d):
            return int(module.in_channels)
    raise ValueError(f"cannot infer the image channels of encoder "
                     f"{type(encoder).__name__}: it has neither a Normalize layer nor "
                     "a Conv2d")


class Standardize(nn.Module):
    """Each channel of each sample to zero mean and unit variance over its positions.

    No learned parameters and no running statistics: the input of a proxy decoder that
    the edge cannot fool by rescaling its feature (a channel that is constant stays 0).
    """

    def __init__(self, eps: float = 1e-12) -> None:
        super().__init__()
        self.eps = eps  # on the variance; far below a real feature's (~1e-6 at least)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        centred = z - z.mean(dim=(2, 3), keepdim=True)
        return centred * torch.rsqrt(centred.pow(2).mean(dim=(2, 3), keepdim=True)
                                     + self.eps)


class ProxyDecoder(nn.Sequential):
    """A simulated inversion attacker: transposed convolutions, sigmoid output.

    Conv3x3 (C -> width) + LeakyReLU, then ``upsamples`` stride-2 ConvT 4x4 stages
    (each doubles H and W, undoing one pooling as in He et al.'s inverse network),
    Conv3x3 (width -> image channels). The output is resized to the target image size
    if the stages do not land on it exactly, then squashed to [0, 1]. No batch norm, so
    the functional evaluation in :func:`proxy_error` touches no running statistics.
    With ``standardize`` the feature first goes through :class:`Standardize`.
    """

    def __init__(self, feature_channels: int, image_channels: int, width: int = 32,
                 upsamples: int = 2, standardize: bool = False) -> None:
        layers: list[nn.Module] = [Standardize()] if standardize else []
        layers += [nn.Conv2d(feature_channels, width, 3, padding=1), nn.LeakyReLU(0.2)]
        for _ in range(upsamples):
            layers += [nn.ConvTranspose2d(width, width, 4, stride=2, padding=1),
                       nn.LeakyReLU(0.2)]
        layers.append(nn.Conv2d(width, image_channels, 3, padding=1))
        super().__init__(*layers)

    def reconstruct(self, z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return _to_image(self(z), tuple(size))


def proxy_step(decoder: ProxyDecoder, z: torch.Tensor, x: torch.Tensor,
               lr: float) -> float:
    """One Adam step of the proxy decoder on ``(z.detach(), x)``; returns its MSE.

    The optimiser is created on first use and kept as an attribute of the decoder
    module, so it pickles and deep-copies with the edge (defenses hold no state).
    Gradients are computed with ``autograd.grad`` and the decoder's ``.grad`` fields are
    restored afterwards, so the engine's edge optimiser never sees the proxy's update.
    """
    params = [p for p in decoder.parameters() if p.requires_grad]
    opt = getattr(decoder, "proxy_optimizer", None)
    if opt is None:
        opt = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))
        decoder.proxy_optimizer = opt
    with torch.enable_grad():
        loss = F.mse_loss(decoder.reconstruct(z.detach(), x.shape[-2:]), x.detach())
        grads = torch.autograd.grad(loss, params)
    saved = [p.grad for p in params]
    for p, g in zip(params, grads):
        p.grad = g
    opt.step()
    for p, g in zip(params, saved):
        p.grad = g
    return float(loss.detach())


def proxy_error(decoder: ProxyDecoder, z: torch.Tensor,
                x: torch.Tensor) -> torch.Tensor:
    """MSE of the proxy's reconstruction of ``x`` from ``z``, differentiable in ``z``.

    The decoder runs with detached copies of its parameters, so a term that *maximises*
    this error moves the edge and never un-trains the proxy attacker.
    """
    frozen = {name: p.detach() for name, p in decoder.named_parameters()}
    out = torch.func.functional_call(decoder, frozen, (z,))
    return F.mse_loss(_to_image(out, tuple(x.shape[-2:])), x)


def _to_image(out: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    if tuple(out.shape[-2:]) != size:
        out = F.interpolate(out, size=size, mode="bilinear", align_corners=False)
    return torch.sigmoid(out)


# -- attacker-aware training (adversarial, disco) --------------------------------------
PROXY_KEY = "proxy_decoder"
"""Key of the proxy decoder in ``DefendedEdge.training_only``."""


class ProxyParams(PluginParams):
    """Parameters shared by defenses trained against a proxy inversion decoder."""

    lam: float = Field(1.0, ge=0.0, le=100.0,
                       description="weight of the (negated) proxy reconstruction error")
    decoder_width: int = Field(32, ge=1, le=512, description="proxy decoder channels")
    decoder_upsamples: int = Field(
        2, ge=0, le=6, description="stride-2 ConvT stages (2 undoes a cut at H/4)")
    decoder_lr: float = Field(1e-3, gt=0.0, le=1.0,
                              description="proxy Adam learning rate")
    # The papers' proxy reads the raw feature, and an edge can beat it by shrinking its
    # output: on the MNIST frontier the feature variance fell 7-19x from lam 0 to 100,
    # accuracy held and the offline inverse network still reached SSIM 0.49-0.70.
    # Standardised, lam 10 cut mid's SSIM from 0.66 to 0.51 at no accuracy cost (README).
    decoder_standardize: bool = Field(
        False, description="standardise each feature channel per sample before the "
        "proxy decodes it, so the edge must remove information rather than rescale")
    # One proxy step per edge step (the papers') lets an edge under Adam outrun the proxy
    # instead of removing information: from lam 10 to 100 (standardised) mid's and high's
    # SSIM rose 0.51 -> 0.75 and 0.59 -> 0.71. More steps keep the proxy near its best
    # response to the current features, as ResSFL's attacker pre-training does.
    decoder_steps: int = Field(
        1, ge=1, le=20, description="proxy Adam steps on each batch before the edge's step")


def build_proxy(encoder: nn.Module, feature_shape: tuple[int, int, int],
                params: ProxyParams) -> ProxyDecoder:
    """A fresh proxy decoder from ``feature_shape`` to the encoder's image channels."""
    return ProxyDecoder(feature_shape[0], image_channels(encoder), params.decoder_width,
                        params.decoder_upsamples, params.decoder_standardize)


def adversarial_term(edge: nn.Module, x: torch.Tensor, z: torch.Tensor,
                     params: ProxyParams) -> torch.Tensor | None:
    """Train the proxy ``decoder_steps`` steps, then return ``-lam * MSE(proxy(z), x)``
    (or ``None`` at lam 0).

    The edge minimising this term maximises the error of an attacker that keeps
    adapting to it (ResSFL / DeepObfuscator / DISCO style min-max training).
    """
    decoder = edge.training_only[PROXY_KEY]
    for _ in range(params.decoder_steps):
        proxy_step(decoder, z, x, params.decoder_lr)
    if params.lam == 0.0:
        return None
    return -params.lam * proxy_error(decoder, z, x)
