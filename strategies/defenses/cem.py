"""CEM: conditional entropy maximisation with Gaussian noise on the feature."""

from __future__ import annotations

import torch
from pydantic import Field

from strategies.defenses._common import (NoiseUnits, gaussian_like, noise_unit,
                                        noise_units_field)
from strategies.defenses.base import DEFENSES, DefendedEdge, Defense
from strategies.registry import PluginParams

__all__ = ["CEM", "cluster_entropy_bound", "kmeans"]

_LOG_EPS = 1e-6  # inside the log, as in the authors' code
_LLOYD_STEPS = 10


@torch.no_grad()
def kmeans(z: torch.Tensor, k: int, steps: int = _LLOYD_STEPS) -> torch.Tensor:
    """Deterministic k-means on the rows of ``z`` (N, D); returns the labels (N,).

    Farthest-point initialisation from the row nearest the mean (no random draw: a
    training loss must not consume randomness), then ``steps`` Lloyd iterations; a
    centroid left without rows keeps its position.
    """
    centroids = z[(z - z.mean(0)).pow(2).sum(1).argmin()].unsqueeze(0)
    while centroids.shape[0] < k:
        far = torch.cdist(z, centroids).min(1).values.argmax()
        centroids = torch.cat([centroids, z[far].unsqueeze(0)])
    labels = torch.cdist(z, centroids).argmin(1)
    for _ in range(steps):
        counts = torch.bincount(labels, minlength=k).unsqueeze(1)
        sums = torch.zeros_like(centroids).index_add_(0, labels, z)
        centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
        new = torch.cdist(z, centroids).argmin(1)
        if torch.equal(new, labels):
            break
        labels = new
    return labels


def cluster_entropy_bound(z: torch.Tensor, clusters: int) -> torch.Tensor:
    """``sum_k pi_k * mean_d log(var_kd + 1e-6)`` over a k-means partition of the batch.

    ``var_kd`` is the variance of feature element ``d`` around the (detached) centroid
    of cluster ``k`` and ``pi_k`` its share of the rows. Up to constants this is the
    Gaussian-mixture upper bound on the entropy of the feature (half the mean
    log-determinant of the diagonal component covariances), hence on I(x; z) for a
    noisy z: minimising it raises H(x | z). Clusters of one row carry no variance
    estimate and are left out (their share too). Differentiable in ``z``.
    """
    flat = z.flatten(1)
    k = max(1, min(clusters, flat.shape[0] // 2))
    labels = kmeans(flat.detach(), k)
    terms, shares = [], []
    for c in range(k):
        rows = flat[labels == c]
        if rows.shape[0] < 2:
            continue
        var = (rows - rows.detach().mean(0)).pow(2).mean(0)
        terms.append(torch.log(var + _LOG_EPS).mean())
        shares.append(float(rows.shape[0]))
    if not terms:
        return flat.sum() * 0.0
    weights = torch.tensor(shares, dtype=flat.dtype, device=flat.device)
    return (torch.stack(terms) * weights).sum() / weights.sum()


@DEFENSES.register("cem")
class CEM(Defense):
    """Conditional entropy maximisation (Xia et al., "Theoretical Insights in Model
    Inversion Robustness and Conditional Entropy Maximization for Collaborative
    Inference Systems", CVPR 2025, https://arxiv.org/abs/2503.00383).

    The paper bounds every inversion attacker's MSE from below by a function of
    ``H(x | z~)`` for the noisy feature ``z~ = z + N(0, sigma^2)``, and raises that
    conditional entropy by lowering a Gaussian-mixture upper bound of
    ``I(x; z~)``: the features are clustered and the device minimises the mean
    log-variance of each cluster (:func:`cluster_entropy_bound`), which pulls each
    feature towards its cluster's centroid, where the noise hides what is left.

    * :meth:`transform` sends ``z + sigma * e``, ``e ~ N(0, 1)`` from the given
      generator, in training and at inference (as the authors' code does);
    * :meth:`edge_loss` returns ``lam * cluster_entropy_bound(z, clusters)`` on the
      transmitted (noisy) feature the hook receives, so ``sigma^2`` enters the cluster
      variances through the samples; the authors add it analytically to variances of
      the clean feature.

    Defaults: ``sigma = 0.05`` (middle of the authors' sweep 0.01..0.15) and
    ``lam = 0.1``. The authors weight the term by 8 or 16, but with SGD at lr 0.05 on
    sigmoid-bounded features; with Adam on ReLU features that scale pulls every feature
    into the noise: on the 16x16 test task, ``lam >= 0.3`` collapsed the features to
    the noise level (accuracy at chance) within 60 steps, while ``lam = 0.1`` kept the
    accuracy and raised a decoder's MSE about 4x. ``sigma`` is in the feature's own
    units by default, as in the paper, whose bound is about a fixed noise variance;
    ``units: relative`` makes it a noise-to-signal ratio per sample, but then the
    clustering term can no longer hide features in a noise of fixed size (on the test
    task it cost 30 accuracy points at equal ``sigma``). A fixed ``sigma`` means less
    on a tier whose features are larger; tune ``lam`` and ``sigma`` per scenario (the
    engine's edge-loss warm-up also helps).

    Simplified on purpose: the engine's ``edge_loss`` hook sees no labels and a
    defense holds no state, so the mixture is fitted per batch, without labels, by
    deterministic k-means with ``clusters`` components (the authors fit 10 clusters
    per class on all training features once per epoch and keep the centroids for the
    next one); the authors' optional bottleneck layer is the tier's encoder choice.
    """

    class Params(PluginParams):
        lam: float = Field(0.1, ge=0.0, le=1000.0,
                           description="weight of the entropy-bound term")
        sigma: float = Field(0.05, ge=0.0, le=100.0,
                             description="std of the Gaussian noise on the feature")
        units: NoiseUnits = noise_units_field("absolute")
        clusters: int = Field(4, ge=1, le=1024,
                              description="mixture components fitted per batch")

    params: Params

    def edge_loss(self, x: torch.Tensor, z: torch.Tensor,
                  edge: DefendedEdge) -> torch.Tensor | None:
        if self.params.lam == 0.0:
            return None
        return self.params.lam * cluster_entropy_bound(z, self.params.clusters)

    def transform(self, z: torch.Tensor, *, training: bool,
                  generator: torch.Generator | None = None) -> torch.Tensor:
        if self.params.sigma == 0.0:
            return z
        unit = noise_unit(z, self.params.units)
        return z + self.params.sigma * unit * gaussian_like(z, generator)
