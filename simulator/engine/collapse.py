"""Collapse of a tier's training, seen from the features the cloud receives.

A feature penalty minimised by constant features (dCor, NoPeek, L1) can kill an edge's
last ReLU: the tier then sends zeros (or a constant), the cloud learns the label prior
and nothing else, and the tier's "privacy" is that of sending nothing. This module
measures that per tier and round (:class:`FeatureStats`, filled in the cloud's
exchange), judges it (:func:`unhealthy`, pure) and applies the scenario's
``training.collapse`` policy in the round loop (:func:`police`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from simulator.scenario import Collapse

if TYPE_CHECKING:
    import torch

    from simulator.engine.coordinator import Progress, TrainState

__all__ = ["STAT_COLUMNS", "FeatureStats", "TrainingCollapsed", "police",
           "tier_verdicts", "unhealthy"]

STAT_COLUMNS = ("finite_share", "nonzero_share", "feature_variance", "feature_spread",
                "train_accuracy", "majority_share")


class TrainingCollapsed(RuntimeError):
    """``training.collapse.action`` said stop (or rollbacks ran out)."""


class FeatureStats:
    """Running sums over the batches a tier sent in a round (cheap, deterministic).

    Counts and sums only, so the per-node sums of a round merge exactly whatever
    order the nodes reached the cloud in.
    """

    def __init__(self) -> None:
        self.samples = self.nonzero = self.finite = self.elements = self.correct = 0
        self.var_sum = self.square_sum = 0.0
        self.var_samples = 0
        self.labels = np.zeros(0, dtype=np.int64)

    def add(self, z: np.ndarray, y: np.ndarray, pred: np.ndarray) -> None:
        """One exchange: features ``z`` (B, ...), labels and the cloud's predictions."""
        flat = z.reshape(len(z), -1).astype(np.float64)
        self.samples += len(z)
        self.nonzero += int(np.count_nonzero(flat))
        self.finite += int(np.isfinite(flat).sum())
        self.elements += flat.size
        if len(z) > 1:   # one sample has no spread: it says nothing about collapse
            with np.errstate(invalid="ignore", over="ignore"):   # diverged: NaN sums
                self.var_sum += float(flat.var(axis=0).mean()) * len(z)
                self.square_sum += float(np.square(flat).mean()) * len(z)
            self.var_samples += len(z)
        self.correct += int((pred == y).sum())
        counts = np.bincount(y, minlength=len(self.labels))
        self.labels = np.pad(self.labels, (0, len(counts) - len(self.labels))) + counts

    def merge(self, other: FeatureStats) -> None:
        for key in ("samples", "nonzero", "finite", "elements", "correct", "var_sum",
                    "square_sum", "var_samples"):
            setattr(self, key, getattr(self, key) + getattr(other, key))
        n = max(len(self.labels), len(other.labels))
        self.labels = np.pad(self.labels, (0, n - len(self.labels))) + \
            np.pad(other.labels, (0, n - len(other.labels)))

    def summary(self) -> dict[str, float]:
        """``finite_share`` (below 1: the features hold NaN or infinities);
        ``nonzero_share``; ``feature_variance``: the mean over features of their
        variance over the batch (sample-weighted over exchanges); ``feature_spread``:
        that variance over the features' mean square, in [0, 1], 0 for constant (or
        all-zero) features whatever their scale; ``train_accuracy``; ``majority_share``:
        the accuracy of always answering the round's most frequent label (what a cloud
        that ignores the features reaches). Variances are NaN without a batch of 2."""
        n, nan = max(self.samples, 1), float("nan")
        return {"finite_share": self.finite / self.elements if self.elements else 1.0,
                "nonzero_share": self.nonzero / max(self.elements, 1),
                "feature_variance": self.var_sum / self.var_samples
                if self.var_samples else nan,
                "feature_spread": self.var_sum / self.square_sum if self.square_sum
                else (0.0 if self.var_samples else nan),
                "train_accuracy": self.correct / n,
                "majority_share": float(self.labels.max(initial=0)) / n}


def unhealthy(stats: dict[str, float], age: int, cfg: Collapse) -> list[str]:
    """Why a tier's round looks collapsed (empty: healthy).

    Parameters
    ----------
    stats
        :meth:`FeatureStats.summary` of the tier's round.
    age
        Rounds the tier's edge has trained before this one: the round, or the rounds
        since its last rollback (the accuracy test waits for ``cfg.accuracy_after``).
    cfg
        The thresholds (``training.collapse``).
    """
    reasons = []
    if stats["finite_share"] < 1.0:   # diverged: no threshold to tune
        reasons.append(f"non-finite features ({1 - stats['finite_share']:.2g} of "
                       "the values)")
    if stats["nonzero_share"] < cfg.min_nonzero:
        reasons.append(f"non-zero share {stats['nonzero_share']:.2g} < "
                       f"{cfg.min_nonzero:g}")
    spread = stats["feature_spread"]
    if not np.isnan(spread) and spread < cfg.min_spread:
        reasons.append(f"feature spread {spread:.2g} < {cfg.min_spread:g}")
    if cfg.accuracy_margin is not None and age >= cfg.accuracy_after and \
            stats["train_accuracy"] <= stats["majority_share"] + cfg.accuracy_margin:
        reasons.append(f"training accuracy {stats['train_accuracy']:.3f} not above the "
                       f"majority label's {stats['majority_share']:.3f} + "
                       f"{cfg.accuracy_margin:g}")
    return reasons


def police(cfg: Collapse, state: TrainState, rnd: int,
           started: dict[str, dict[str, torch.Tensor]], progress: Progress,
           rounds: int) -> str | None:
    """Judge round ``rnd``'s rows in ``state.rounds`` and act; the message to stop
    with, if the run must stop (after its checkpoint is written).

    ``started`` holds the edges the round started from: a healthy round proves its
    starting edge healthy (its end state is proven only by the next round), so that
    is what a rollback returns to. A rolled-back edge is as untrained as it was then:
    the accuracy test gives it ``accuracy_after`` rounds again.
    """
    stop = []
    for row in (r for r in state.rounds if r["round"] == rnd and r["tier"] in started):
        tier = row["tier"]
        back = [c["round"] for c in state.collapses
                if c["tier"] == tier and c["action"] == "rollback"]
        reasons = unhealthy(row, rnd - (back[-1] + 1 if back else 0), cfg)
        if reasons:
            state.unhealthy_streak[tier] = state.unhealthy_streak.get(tier, 0) + 1
        else:
            state.unhealthy_streak[tier] = 0
            state.healthy_edges[tier] = started[tier]
        row.update(collapsed=state.unhealthy_streak[tier] >= cfg.patience,
                   collapse_action="")
        if row["collapsed"]:
            note = _act(cfg, state, row, reasons, progress, rounds)
            stop += [note] if note else []
    if not stop:
        return None
    hint = "" if cfg.action == "rollback" else \
        ", or set training.collapse.action: rollback"
    return ("; ".join(stop) + ". Lower the learning rate or the defense's feature-"
            f"penalty weights, or add training.edge_loss_warmup{hint}")


def _act(cfg: Collapse, state: TrainState, row: dict[str, Any], reasons: list[str],
         progress: Progress, rounds: int) -> str | None:
    """Apply the action to a collapsed tier's row; the note to stop with, if any."""
    tier, rnd = row["tier"], row["round"]
    first = state.unhealthy_streak[tier] == cfg.patience   # a new episode
    action = cfg.action
    note = f"tier {tier} collapsed in round {rnd} ({'; '.join(reasons)})"
    if action == "rollback" and state.rollbacks.get(tier, 0) >= cfg.max_rollbacks:
        action = "stop"
        note += f" after {cfg.max_rollbacks} rollbacks"
    row["collapse_action"] = action
    if first or action != "warn":   # a warning once per episode, the rest each time
        state.collapses.append({"round": rnd, "tier": tier, "action": action,
                                "reasons": reasons})
    if action == "stop":
        return note
    if action == "rollback":
        state.edge_states[tier] = {k: v.clone()
                                   for k, v in state.healthy_edges[tier].items()}
        state.edge_loss_scale[tier] = \
            state.edge_loss_scale.get(tier, 1.0) * cfg.weight_factor
        state.rollbacks[tier] = state.rollbacks.get(tier, 0) + 1
        state.unhealthy_streak[tier] = 0
        progress("collapse", rnd + 1, rounds, f"{note}: rolled back to its last "
                 f"healthy edge, edge-loss weight x{state.edge_loss_scale[tier]:g}")
    elif first:
        progress("collapse", rnd + 1, rounds, f"{note}: its leakage is not privacy")
    return None


def tier_verdicts(rounds: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per tier: ``collapsed`` (the verdict of its last training round, where a
    rollback's restored edge counts as healthy), ``rounds_collapsed`` and
    ``rollbacks``. Tiers without detector rows (centralized training) are absent."""
    out: dict[str, dict[str, Any]] = {}
    for row in rounds:
        if "collapsed" not in row:
            continue
        v = out.setdefault(row["tier"], {"rounds_collapsed": 0, "rollbacks": 0})
        v["rounds_collapsed"] += int(row["collapsed"])
        v["rollbacks"] += int(row["collapse_action"] == "rollback")
        v["collapsed"] = bool(row["collapsed"]) and row["collapse_action"] != "rollback"
    return out
