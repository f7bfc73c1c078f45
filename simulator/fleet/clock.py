"""Rounds on the virtual clock, as a real fleet runs them (nothing sleeps).

:func:`plan_round` decides, before any training, what happens to each device in one
round, from derived seeds alone:

1. Availability: a device is reachable with its profile's availability, scaled by the
   time of day at the round's start when ``time_of_day`` is set.
2. Selection: ``ceil(over_selection x target)`` of the reachable devices (all if fewer);
   over-committing lets the round close on the fastest ``target`` (FedScale, Lai et al.
   OSDI 2021, over-commits by 1.3x).
3. Work: each selected device needs its training seconds; with ``dropout_probability``
   it leaves mid-round at a uniform fraction of its work.
4. Close: when ``target`` devices have finished, when every selected device has
   finished or dropped out, or at the deadline, whichever is first. Under
   ``stragglers: accept_late`` the deadline does not close the round: devices that
   finish past it are accepted late.

Each selected device ends in one status: ``completed`` (finished by the deadline),
``late`` (finished past the deadline, accepted), ``dropped`` (left before the round
closed), ``straggled`` (still running at the deadline when the round closed; its work
is discarded) or ``cancelled`` (cut because the round had its target). With the default
timing (no deadline, no over-selection, no dropout) the selection is exactly the
engine's historical per-tier sampling and every selected device completes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pandas as pd

from simulator.seeding import rng

if TYPE_CHECKING:
    from simulator.scenario import RoundTiming, TimeOfDay

__all__ = ["DeviceRound", "RoundPlan", "availability_factor", "next_round_start",
           "plan_round", "tally"]

ACCEPTED = ("completed", "late")
STRAGGLED = ("late", "straggled")
_DEVICE_FIELDS = ("device_id", "status", "work_fraction", "busy_s", "bytes_sent")


@dataclass(frozen=True)
class DeviceRound:
    """What one selected device did in a round.

    Attributes
    ----------
    device_id
        The device.
    status
        ``completed``, ``late``, ``dropped``, ``straggled`` or ``cancelled``.
    work_fraction
        Share of its round's work it did (1 when accepted).
    busy_s
        Virtual seconds it worked.
    bytes_sent
        Feature bytes it uploaded (pro rata to its work).
    """

    device_id: int
    status: str
    work_fraction: float
    busy_s: float
    bytes_sent: int

    @property
    def accepted(self) -> bool:
        return self.status in ACCEPTED

    @property
    def straggled(self) -> bool:
        return self.status in STRAGGLED


@dataclass(frozen=True)
class RoundPlan:
    """One round, decided on the virtual clock.

    Attributes
    ----------
    rnd
        Round index.
    start_s, duration_s
        Virtual start and length of the round (it closes at ``start_s + duration_s``).
    target
        Devices the round wanted.
    available
        Reachable devices.
    devices
        Every selected device's outcome, by device id.
    """

    rnd: int
    start_s: float
    duration_s: float
    target: int
    available: tuple[int, ...]
    devices: tuple[DeviceRound, ...]

    def ids(self, *statuses: str) -> tuple[int, ...]:
        """Devices in any of ``statuses``."""
        return tuple(d.device_id for d in self.devices if d.status in statuses)

    @property
    def selected(self) -> tuple[int, ...]:
        return tuple(d.device_id for d in self.devices)

    @property
    def accepted(self) -> tuple[int, ...]:
        """Devices whose update the round uses."""
        return self.ids(*ACCEPTED)

    @property
    def dropped(self) -> tuple[int, ...]:
        return self.ids("dropped")

    @property
    def straggled(self) -> tuple[int, ...]:
        return self.ids(*STRAGGLED)

    def rows(self) -> list[dict[str, Any]]:
        """Tidy rows: one per selected device."""
        return [{"round": self.rnd, "device_id": d.device_id, "status": d.status,
                 "work_fraction": d.work_fraction, "busy_s": d.busy_s,
                 "bytes_sent": d.bytes_sent} for d in self.devices]

    def record(self) -> dict[str, Any]:
        """The plan as plain containers (a checkpoint loads it with ``weights_only``);
        :meth:`from_record` rebuilds it exactly."""
        return {"rnd": self.rnd, "start_s": self.start_s, "duration_s": self.duration_s,
                "target": self.target, "available": list(self.available),
                **{k: [getattr(d, k) for d in self.devices] for k in _DEVICE_FIELDS}}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> RoundPlan:
        columns = zip(*(record[k] for k in _DEVICE_FIELDS), strict=True)
        devices = tuple(DeviceRound(int(i), str(s), float(w), float(b), int(n))
                        for i, s, w, b, n in columns)
        return cls(int(record["rnd"]), float(record["start_s"]),
                   float(record["duration_s"]), int(record["target"]),
                   tuple(int(d) for d in record["available"]), devices)


def availability_factor(t_s: float, time_of_day: TimeOfDay | None) -> float:
    """Multiplier of every availability at virtual time ``t_s``: 1 at the peak hour,
    ``1 - amplitude`` twelve hours away, a cosine in between."""
    if time_of_day is None:
        return 1.0
    hour = (time_of_day.start_hour + t_s / 3600.0) % 24.0
    phase = 2.0 * math.pi * (hour - time_of_day.peak_hour) / 24.0
    return 1.0 - time_of_day.amplitude * (1.0 - math.cos(phase)) / 2.0


def next_round_start(start_s: float, duration_s: float, timing: RoundTiming) -> float:
    """When the next round starts: when this one closes, or ``interval_s`` after it
    started if that is later."""
    return start_s + max(duration_s, timing.interval_s or 0.0)


def plan_round(rnd: int, seed: int, device_ids: Sequence[int],
               availability: Sequence[float], work_s: Sequence[float],
               bytes_per_round: Sequence[int], target: int, timing: RoundTiming, *,
               start_s: float = 0.0, group: int | str = "fleet") -> RoundPlan:
    """Who is reachable, selected, finishes, drops out or straggles in round ``rnd``.

    Parameters
    ----------
    rnd
        Round index.
    seed
        The scenario's root seed; every draw is derived from it, the round and the
        device (or ``group`` for the selection).
    device_ids
        Devices that may take part (e.g. one tier's, or the whole fleet's).
    availability
        Each device's profile availability.
    work_s
        Each device's virtual seconds for a full round (``training_seconds``).
    bytes_per_round
        Each device's uploaded bytes for a full round (``training_bytes``).
    target
        Devices the round wants (e.g. ``ceil(fraction x devices)``).
    timing
        The scenario's ``training.timing``.
    start_s
        Virtual time at which the round starts (for the time of day).
    group
        Key of the selection stream (the engine samples per tier with the tier name).
    """
    if not len(device_ids) == len(availability) == len(work_s) == len(bytes_per_round):
        raise ValueError("device_ids, availability, work_s and bytes_per_round need "
                         "one entry per device")
    factor = availability_factor(start_s, timing.time_of_day)
    reachable = [k for k, d in enumerate(device_ids)
                 if rng(seed, "availability", rnd, int(d)).random()
                 < availability[k] * factor]
    # a hair below the product, so 1.1 x 10 selects 11, not 12
    want = min(len(reachable), math.ceil(timing.over_selection * target - 1e-9))
    picked = sorted(rng(seed, "sample", rnd, group).permutation(len(reachable))[:want])
    chosen = [reachable[i] for i in picked]
    drop_at = [_drop_time(seed, rnd, int(device_ids[k]), float(work_s[k]),
                          timing.dropout_probability) for k in chosen]
    ends = [float(work_s[k]) if t is None else t for k, t in zip(chosen, drop_at)]
    close = _close(ends, [t is None for t in drop_at], target, timing)
    deadline = math.inf if timing.deadline_s is None else timing.deadline_s
    outcomes = [_outcome(int(device_ids[k]), float(work_s[k]), int(bytes_per_round[k]),
                         end, t is not None, close, deadline)
                for k, end, t in zip(chosen, ends, drop_at)]
    return RoundPlan(rnd, float(start_s), close, int(target),
                     tuple(int(device_ids[k]) for k in reachable),
                     tuple(sorted(outcomes, key=lambda o: o.device_id)))


def _drop_time(seed: int, rnd: int, device: int, work: float,
               probability: float) -> float | None:
    """When the device leaves the round, or ``None`` if it stays."""
    if probability <= 0:
        return None
    gen = rng(seed, "dropout", rnd, device)
    leaves, fraction = gen.random() < probability, gen.random()
    return fraction * work if leaves else None


def _close(ends: list[float], finishes: list[bool], target: int,
           timing: RoundTiming) -> float:
    """The round's virtual duration (see the module docstring, step 4)."""
    if not ends:
        return 0.0
    done = sorted(e for e, f in zip(ends, finishes) if f)
    close = max(ends)
    if 0 < target <= len(done):
        close = min(close, done[target - 1])
    if timing.deadline_s is not None and timing.stragglers == "drop":
        close = min(close, timing.deadline_s)
    return float(close)


def _outcome(device: int, work: float, nbytes: int, end: float, drops: bool,
             close: float, deadline: float) -> DeviceRound:
    if end <= close:
        status = "dropped" if drops else "completed" if end <= deadline else "late"
        busy = end
    else:  # cut when the round closed
        status = "straggled" if end > deadline else "cancelled"
        busy = close
    fraction = 1.0 if work <= 0 else min(1.0, busy / work)
    return DeviceRound(device, status, fraction, float(busy), int(nbytes * fraction))


def tally(plans: Iterable[RoundPlan], device_ids: Iterable[int] = ()) -> pd.DataFrame:
    """Per device, over ``plans``: rounds selected, completed (accepted), dropped,
    straggled and cancelled, virtual seconds busy and bytes sent.

    ``device_ids`` adds rows of zeros for devices never selected.
    """
    cols = ("rounds_selected", "rounds_completed", "rounds_dropped", "rounds_straggled",
            "rounds_cancelled", "busy_s", "bytes_sent")
    totals: dict[int, list[float]] = {int(d): [0.0] * len(cols) for d in device_ids}
    for plan in plans:
        for d in plan.devices:
            row = totals.setdefault(d.device_id, [0.0] * len(cols))
            for i, add in enumerate((1, d.accepted, d.status == "dropped", d.straggled,
                                     d.status == "cancelled", d.busy_s, d.bytes_sent)):
                row[i] += float(add)
    frame = pd.DataFrame([[d, *v] for d, v in sorted(totals.items())],
                         columns=["device_id", *cols])
    ints = [c for c in cols if c != "busy_s"]
    return frame.astype({"device_id": "int64", **{c: "int64" for c in ints}})
