"""Leakage, information and utility metrics: pure functions with pinned definitions.

See ``/work/shared/reference/metrics.md``. Image metrics score each image on [0, 1]
(per-image tensors of shape (N,)); reductions are the caller's (:func:`mean_ci`).
``paper_conventions`` holds SiftFunnel's batch-level variants for comparison only.
"""

from analysis.metrics.distance_correlation import (
    bias_corrected_dcor2,
    distance_correlation,
    pearson_redundancy,
    u_distance_correlation_sqr,
)
from analysis.metrics.image import (
    SSIM_SIGMA,
    SSIM_WINDOW,
    mse,
    nearest_neighbour_identification,
    psnr,
    recognisable_fraction,
    ssim,
)
from analysis.metrics.intervals import mean_ci
from analysis.metrics.mutual_information import (
    ConvCritic,
    MIEstimate,
    MlpCritic,
    estimate_mutual_information,
    make_critic,
)
from analysis.metrics.paper_conventions import (
    mse_summed_channels_paper,
    ssim_batch_paper,
)
from analysis.metrics.volume import effective_volume

__all__ = [
    "SSIM_SIGMA",
    "SSIM_WINDOW",
    "ConvCritic",
    "MIEstimate",
    "MlpCritic",
    "bias_corrected_dcor2",
    "distance_correlation",
    "effective_volume",
    "estimate_mutual_information",
    "make_critic",
    "mean_ci",
    "mse",
    "mse_summed_channels_paper",
    "nearest_neighbour_identification",
    "pearson_redundancy",
    "psnr",
    "recognisable_fraction",
    "ssim",
    "ssim_batch_paper",
    "u_distance_correlation_sqr",
]
