"""How the split model trains and serves: optimiser, rounds on the virtual clock, the
edge-loss warm-up and the collapse policy."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from simulator.scenario.base import Section

__all__ = ["Collapse", "EdgeLossWarmup", "Inference", "Optimizer", "RoundTiming",
           "TimeOfDay", "Training"]


class Optimizer(Section):
    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = Field(0.0, ge=0)


class EdgeLossWarmup(Section):
    """When the defenses' device-side training terms switch on.

    Feature penalties that are minimised by constant features (dCor, NoPeek, L1) can
    drive a ReLU-ended encoder to all-zero output before the task has shaped it, and a
    dead ReLU never recovers. Holding them off for a few rounds, then ramping them in,
    lets the task loss shape the features first. Counted in rounds (split) or provider
    epochs (centralized); the default switches every term on from the start.
    """

    hold: int = Field(0, ge=0, description="rounds without the defense's edge loss")
    ramp: int = Field(0, ge=0, description="rounds over which its weight then rises "
                      "linearly to 1")

    def weight(self, rnd: int) -> float:
        """The edge loss's weight in round ``rnd`` (0-based): 0, then k/(ramp+1), then 1."""
        if rnd < self.hold:
            return 0.0
        return min(1.0, (rnd - self.hold + 1) / (self.ramp + 1))


class Collapse(Section):
    """Collapse detection per tier and round (split training), and what to do about it.

    A tier is *unhealthy* in a round when the features the cloud received hold NaN or
    infinities (training diverged; always tested), are dead
    (share of non-zero elements below ``min_nonzero``), constant (their variance over
    the batch below ``min_spread`` of their mean square, whatever the features' scale),
    or, from round ``accuracy_after``
    on, useless (the cloud's training accuracy does not beat the share of the round's
    most frequent label by ``accuracy_margin``). It is *collapsed* after ``patience``
    unhealthy rounds in a row (:mod:`simulator.engine.collapse`). Then ``action``:
    warn = a progress line and a record; stop = the run ends with status failed;
    rollback = the tier's edge goes back to the last one known healthy and its
    defense's edge-loss weight is multiplied by ``weight_factor`` (stop after
    ``max_rollbacks``). A threshold of 0 (or ``accuracy_margin: null``) disables a test.
    """

    action: Literal["warn", "stop", "rollback"] = "warn"
    min_nonzero: float = Field(
        1e-3, ge=0, lt=1,
        description="share of non-zero feature elements below which they are dead")
    min_spread: float = Field(
        1e-3, ge=0, lt=1,
        description="per-feature variance over the batch, relative to the features' "
        "mean square, below which the features are constant")
    accuracy_margin: float | None = Field(
        0.02, ge=0, lt=1,
        description="training accuracy must beat the majority label's share by this "
        "(None: no accuracy test)")
    accuracy_after: int = Field(
        3, ge=0,
        description="first (0-based) round of the accuracy test, counted again after "
        "a rollback: before it the task is still being learnt")
    patience: int = Field(
        1, ge=1, description="unhealthy rounds in a row before a tier is collapsed")
    weight_factor: float = Field(
        0.5, gt=0, lt=1, description="rollback: multiplies the tier's edge-loss weight")
    max_rollbacks: int = Field(
        3, ge=1, description="rollback: rollbacks per tier before the run stops")


class TimeOfDay(Section):
    """Availability that follows the virtual hour: a cosine over 24 hours.

    Every device's availability is multiplied by 1 at ``peak_hour`` and by
    ``1 - amplitude`` twelve hours away (:func:`simulator.fleet.availability_factor`).
    """

    amplitude: float = Field(0.5, ge=0, le=1)
    peak_hour: float = Field(20.0, ge=0, lt=24, description="hour of most devices "
                             "online (e.g. charging overnight)")
    start_hour: float = Field(0.0, ge=0, lt=24, description="virtual hour at which "
                              "round 0 starts")


class RoundTiming(Section):
    """Rounds on the virtual clock (split mode), as a real fleet runs them.

    A round selects ``ceil(over_selection x target)`` reachable devices and closes when
    ``target`` of them finish, when all have finished or dropped out, or at
    ``deadline_s`` (:func:`simulator.fleet.plan_round`). The defaults reproduce the
    plain sampling: no deadline, no over-selection, no dropouts.
    """

    deadline_s: float | None = Field(None, gt=0, description="virtual seconds after "
                                     "which a round stops waiting")
    over_selection: float = Field(1.0, ge=1, description="devices selected per wanted "
                                  "device (FedScale over-commits 1.3x)")
    stragglers: Literal["drop", "accept_late"] = Field(
        "drop", description="devices past the deadline: drop = their work is "
        "discarded; accept_late = the round waits and accepts them late")
    dropout_probability: float = Field(0.0, ge=0, lt=1, description="chance a selected "
                                       "device leaves mid-round")
    interval_s: float | None = Field(None, gt=0, description="virtual seconds between "
                                     "round starts (None: back to back)")
    time_of_day: TimeOfDay | None = None


class Training(Section):
    mode: Literal["split", "centralized"] = "split"
    rounds: int = Field(5, ge=0)
    local_steps: int = Field(5, ge=1, description="batches per device per round (split)")
    epochs: int = Field(5, ge=1, description="provider epochs (centralized)")
    batch_size: int = Field(32, ge=1)
    fraction: float = Field(1.0, gt=0, le=1, description="devices sampled per round")
    optimizer: Optimizer = Field(default_factory=Optimizer)
    edge_loss_warmup: EdgeLossWarmup = Field(default_factory=EdgeLossWarmup)
    timing: RoundTiming = Field(default_factory=RoundTiming)
    collapse: Collapse = Field(default_factory=Collapse)



class Inference(Section):
    samples_per_device: int | None = Field(None, ge=1, description="None = all of the "
                                           "device's private test samples")
