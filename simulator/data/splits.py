"""Disjoint private / auxiliary / evaluation splits of a dataset.

* ``private``: the devices' data (partitioned over the fleet later);
* ``auxiliary``: what the curious cloud may hold to train its attack;
* ``evaluation``: held-out images on which accuracy and reconstruction are measured.

Every split keeps the source indices of its rows (``ImageData.index``, with
``ImageData.split`` naming the source split) so records can name samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.data.base import ImageData

__all__ = ["Splits", "make_splits", "stratified_order"]


@dataclass(frozen=True, eq=False)
class Splits:
    """The three disjoint splits of one dataset."""

    private: ImageData
    auxiliary: ImageData
    evaluation: ImageData

    def sizes(self) -> dict[str, int]:
        """Number of samples per split."""
        return {"private": len(self.private), "auxiliary": len(self.auxiliary),
                "evaluation": len(self.evaluation)}


def _size(value: int | float, pool: int, field: str) -> int:
    """A count (int >= 0) or a fraction of ``pool`` (float in [0, 1]) as a count."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer
                                                 | np.floating):
        raise TypeError(f"{field} must be an int count or a float fraction, "
                        f"got {value!r}")
    if isinstance(value, int | np.integer):
        if value < 0:
            raise ValueError(f"{field} must be a count >= 0, got {value}")
        return int(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{field} as a fraction must lie in [0, 1], got {value}")
    return int(round(value * pool))


def stratified_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of ``range(len(labels))`` whose prefixes are stratified.

    Each class's samples are shuffled and spread evenly over [0, 1) (the ``r``-th
    of ``n_c`` at ``(r + u) / n_c`` with one random ``u`` per class), then all are
    sorted by that key: any prefix holds each class in proportion to its size, to
    within one sample.
    """
    labels = np.asarray(labels)
    perm = rng.permutation(len(labels))
    _, inverse, counts = np.unique(labels[perm], return_inverse=True,
                                   return_counts=True)
    # Rank of each (shuffled) sample within its class.
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.empty(len(labels), dtype=np.int64)
    rank[order] = np.arange(len(labels)) - np.repeat(starts, counts)
    key = (rank + rng.random(len(counts))[inverse]) / counts[inverse]
    return perm[np.argsort(key, kind="stable")]


def make_splits(train: ImageData, test: ImageData | None, *, auxiliary: int | float,
                evaluation: int | float, seed: int) -> Splits:
    """Split a dataset into disjoint private, auxiliary and evaluation sets.

    Parameters
    ----------
    train, test
        The dataset's splits; ``test`` is ``None`` when the dataset has none.
    auxiliary
        Size of the cloud's auxiliary set, drawn from ``train``: an int count or a
        float fraction of ``len(train)``.
    evaluation
        Size of the evaluation set: drawn from ``test`` when it exists (a count
        capped at ``len(test)``, or a fraction of ``len(test)``), else from ``train``
        (a count or a fraction of ``len(train)``).
    seed
        Seed of the ``numpy.random.default_rng`` that draws the splits.

    Returns
    -------
    Splits
        ``private`` is everything of ``train`` not drawn for the other two. Each
        split is stratified by label (class proportions kept to within one sample).
    """
    rng = np.random.default_rng(seed)
    n = len(train)
    n_aux = _size(auxiliary, n, "auxiliary")
    n_eval_train = 0 if test is not None else _size(evaluation, n, "evaluation")
    if n_aux + n_eval_train >= n:
        raise ValueError(
            f"auxiliary ({n_aux}) + evaluation from train ({n_eval_train}) must leave "
            f"at least one private sample of the {n} training samples; lower "
            f"auxiliary or evaluation")
    labels = train.y.numpy()
    order = stratified_order(labels, rng)
    aux_idx, rest = np.sort(order[:n_aux]), order[n_aux:]
    if test is not None:
        n_eval = min(_size(evaluation, len(test), "evaluation"), len(test))
        eval_set = test.subset(np.sort(stratified_order(test.y.numpy(), rng)[:n_eval]))
    else:
        # Re-order what auxiliary left, so evaluation is stratified too.
        rest = rest[stratified_order(labels[rest], rng)]
        eval_set = train.subset(np.sort(rest[:n_eval_train]))
        rest = rest[n_eval_train:]
    return Splits(private=train.subset(np.sort(rest)), auxiliary=train.subset(aux_idx),
                  evaluation=eval_set)
