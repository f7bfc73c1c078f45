"""Reference tests: per-image SSIM / PSNR / MSE against scikit-image, and hand cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio
from skimage.metrics import structural_similarity as sk_ssim
from torchmetrics.functional.image import structural_similarity_index_measure

import analysis.metrics as metrics
from analysis.metrics import (
    effective_volume,
    mean_ci,
    mse,
    mse_summed_channels_paper,
    nearest_neighbour_identification,
    psnr,
    recognisable_fraction,
    ssim,
    ssim_batch_paper,
)


def _sk_ssim(a: np.ndarray, b: np.ndarray) -> float:
    """Project definition in scikit-image terms; a, b are (C, H, W) in [0, 1]."""
    kwargs = dict(
        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=1
    )
    if a.shape[0] == 1:
        return sk_ssim(a[0], b[0], **kwargs)
    return sk_ssim(a, b, channel_axis=0, **kwargs)


Pair = tuple[torch.Tensor, torch.Tensor]


def _random_pair(shape: tuple[int, ...], seed: int) -> Pair:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=g)
    y = (x + 0.25 * torch.randn(shape, generator=g)).clamp(0, 1)
    return x, y


def _structured_pair(shape: tuple[int, ...]) -> Pair:
    """Smooth gradients/stripes vs. a shifted, contrast-reduced and offset copy."""
    n, c, h, w = shape
    yy, xx = torch.meshgrid(
        torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij"
    )
    base = torch.stack(
        [0.5 + 0.5 * torch.sin(6.0 * (k + 1) * xx + 3.0 * yy) for k in range(n * c)]
    ).reshape(n, c, h, w)
    other = 0.6 * torch.roll(base, shifts=2, dims=-1) + 0.2
    return base, other


SHAPES = [(3, 3, 16, 16), (2, 1, 11, 11), (2, 1, 28, 28), (2, 3, 32, 24)]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("kind", ["random", "structured"])
def test_metrics_match_scikit_image(shape: tuple[int, ...], kind: str) -> None:
    if kind == "random":
        x, y = _random_pair(shape, seed=sum(shape))
    else:
        x, y = _structured_pair(shape)
    got_ssim, got_psnr, got_mse = ssim(x, y), psnr(x, y), mse(x, y)
    assert got_ssim.shape == got_psnr.shape == got_mse.shape == (shape[0],)
    for i in range(shape[0]):
        a, b = x[i].double().numpy(), y[i].double().numpy()
        assert got_ssim[i].item() == pytest.approx(_sk_ssim(a, b), abs=1e-4)
        assert got_mse[i].item() == pytest.approx(mean_squared_error(a, b), abs=1e-6)
        ref_psnr = peak_signal_noise_ratio(a, b, data_range=1)
        assert got_psnr[i].item() == pytest.approx(ref_psnr, abs=1e-3)


def test_ssim_float64_is_exact_to_scikit_image() -> None:
    x, y = _random_pair((2, 3, 16, 20), seed=7)
    x, y = x.double(), y.double()
    got = ssim(x, y)
    for i in range(2):
        assert got[i].item() == pytest.approx(_sk_ssim(x[i].numpy(), y[i].numpy()),
                                              abs=1e-10)


def test_identical_images_hand_values() -> None:
    x, _ = _random_pair((4, 3, 16, 16), seed=1)
    assert torch.allclose(ssim(x, x), torch.ones(4), atol=1e-6)
    assert torch.equal(mse(x, x), torch.zeros(4))
    # MSE clamped at 1e-10: -10 log10(1e-10) = 100 dB exactly.
    assert torch.allclose(psnr(x, x), torch.full((4,), 100.0))


def test_hand_computed_mse_and_psnr() -> None:
    x = torch.zeros(1, 2, 16, 16)
    y = torch.full((1, 2, 16, 16), 0.1)
    y[:, 1] = 0.3  # per-element squared errors 0.01 and 0.09 -> mean 0.05
    assert mse(x, y).item() == pytest.approx(0.05, rel=1e-6)
    assert psnr(x, y).item() == pytest.approx(-10 * math.log10(0.05), rel=1e-6)
    assert mse_summed_channels_paper(x, y).item() == pytest.approx(0.10, rel=1e-6)


def test_inputs_are_clamped() -> None:
    x, y = _random_pair((2, 1, 16, 16), seed=3)
    wild = x * 3 - 1
    for fn in (ssim, psnr, mse):
        assert torch.allclose(fn(wild, y), fn(wild.clamp(0, 1), y))


def test_invalid_shapes_raise() -> None:
    with pytest.raises(ValueError, match="8x8"):
        ssim(torch.rand(1, 1, 8, 8), torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="same shape"):
        mse(torch.rand(1, 1, 16, 16), torch.rand(1, 1, 16, 15))
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        psnr(torch.rand(16, 16), torch.rand(16, 16))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        mse(np.zeros((1, 1, 16, 16)), torch.zeros(1, 1, 16, 16))


def test_recognisable_fraction() -> None:
    assert recognisable_fraction(torch.tensor([0.1, 0.3, 0.31, 0.9])) == 0.5
    assert recognisable_fraction(torch.tensor([0.1, 0.2]), threshold=0.15) == 0.5
    with pytest.raises(ValueError, match="non-empty"):
        recognisable_fraction(torch.tensor([]))


def test_nearest_neighbour_identification() -> None:
    g = torch.Generator().manual_seed(0)
    gallery = torch.rand(6, 1, 8, 8, generator=g)
    true_index = torch.tensor([4, 1, 2])
    recon = gallery[true_index] + 0.01 * torch.randn(3, 1, 8, 8, generator=g)
    recon[2] = gallery[5]  # the third reconstruction looks like someone else
    got = nearest_neighbour_identification(recon, gallery, true_index)
    assert got.dtype == torch.bool
    assert got.tolist() == [True, True, False]
    with pytest.raises(ValueError, match="true_index"):
        nearest_neighbour_identification(recon, gallery, torch.tensor([0, 1, 6]))


def test_paper_batch_ssim_is_torchmetrics_and_differs_from_valid_region() -> None:
    x, y = _random_pair((4, 3, 16, 16), seed=5)
    paper = ssim_batch_paper(x, y)
    assert paper.ndim == 0
    ref = structural_similarity_index_measure(x, y, data_range=1.0)
    assert paper.item() == pytest.approx(ref.item(), abs=1e-6)
    # The padded border is averaged in on small images: a different number.
    assert abs(paper.item() - ssim(x, y).mean().item()) > 1e-3


def test_mean_ci_hand_cases() -> None:
    mean, lo, hi = mean_ci([1.0, 2.0, 3.0])
    # s = 1, n = 3, t_{0.975, 2} = 4.302652729911275
    half = 4.302652729911275 / math.sqrt(3)
    assert (mean, lo, hi) == pytest.approx((2.0, 2.0 - half, 2.0 + half), abs=1e-9)
    m, lo, hi = mean_ci(torch.tensor([5.0, 5.0, 5.0, 5.0]))
    assert (m, lo, hi) == (5.0, 5.0, 5.0)
    single = mean_ci([0.7])
    assert single[0] == 0.7 and math.isnan(single[1]) and math.isnan(single[2])
    assert all(math.isnan(v) for v in mean_ci([]))
    wider = mean_ci([1.0, 2.0, 3.0], confidence=0.99)
    assert wider[2] - wider[1] > hi - lo
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0], confidence=1.5)


def test_effective_volume() -> None:
    z = torch.zeros(2, 3, 2, 2)
    z[0, 0, 0, 0] = 1.0
    z[0, 1, 1, 1] = -0.5
    z[1, 2] = 1e-4  # four tiny values
    vol = effective_volume(z)
    assert vol["per_sample"].tolist() == [2.0, 4.0]
    assert vol["mean_per_sample"] == 3.0
    assert vol["elements_per_sample"] == 12
    assert vol["fraction"] == pytest.approx(0.25)
    assert effective_volume(z, tol=1e-3)["per_sample"].tolist() == [2.0, 0.0]
    with pytest.raises(ValueError, match="tol"):
        effective_volume(z, tol=-1.0)


def test_public_api_imports() -> None:
    for name in metrics.__all__:
        assert getattr(metrics, name) is not None, name
    assert len(set(metrics.__all__)) == len(metrics.__all__)
