"""Injected faults: the scenario's ``faults:`` section, for tests and robustness studies.

Real fleets lose processes: a Flower node's actor (a device cohort), the cloud or an
adversary can die mid-run. A :class:`FaultPlan` says where the scenario wants such a
death; the code at that point calls :func:`die`, which really kills the process inside
a Ray actor (SIGKILL, exactly what an out-of-memory kill or a crash does) and raises
:class:`SimulatedCrash` in-process, so the local engine and the benchmark's bare loop
survive the same plan. Faults fire on the first attempt only: the retry or the restart
that the run makes after a death is not killed again.
"""

from __future__ import annotations

import os
import signal
from typing import NoReturn

from simulator.scenario import Faults
from simulator.seeding import rng

__all__ = ["FaultPlan", "SimulatedCrash", "die", "mark_actor_process"]

_IN_ACTOR = False


class SimulatedCrash(RuntimeError):
    """An injected death of an in-process component (the local engine)."""


def mark_actor_process() -> None:
    """Called by actor constructors: :func:`die` may now kill this process."""
    global _IN_ACTOR
    _IN_ACTOR = True


def die(where: str) -> NoReturn:
    """Kill this actor process (SIGKILL), or raise :class:`SimulatedCrash` in-process."""
    if _IN_ACTOR:
        os.kill(os.getpid(), signal.SIGKILL)
    raise SimulatedCrash(f"injected fault: {where}")


class FaultPlan:
    """Where the scenario's faults strike (all lookups are pure functions)."""

    def __init__(self, faults: Faults, seed: int) -> None:
        self.faults, self.seed = faults, seed

    def node_step(self, rnd: int, node: int, attempt: int) -> int | None:
        """Local step at which node ``node``'s actor dies in round ``rnd``, if any."""
        if attempt:
            return None
        hits = [f.step for f in self.faults.kill_node if f.round == rnd and f.node == node]
        return min(hits) if hits else None

    def cloud_exchange(self, rnd: int, attempt: int) -> int | None:
        """The cloud dies at this (0-based) exchange of round ``rnd``, if any."""
        if attempt:
            return None
        hits = [f.exchange for f in self.faults.kill_cloud if f.round == rnd]
        return min(hits) if hits else None

    def adversary_dies(self, tier: str, attack: str, attempt: int,
                       point: int = 0) -> bool:
        """Whether the adversary working on (``tier``, ``attack``, grid ``point``) dies
        on this attempt."""
        return any(f.tier == tier and f.attack == attack and attempt < f.times
                   and f.point in (None, point) for f in self.faults.kill_adversary)

    def device_crash_step(self, device_seed: int, rnd: int, steps: int) -> int | None:
        """Local step at which a device crashes in round ``rnd`` (None: it does not)."""
        p = self.faults.device_crash_probability
        if p <= 0:
            return None
        g = rng(device_seed, "crash", rnd)
        return int(g.integers(steps)) if g.random() < p else None
