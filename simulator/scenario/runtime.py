"""Where and how a scenario runs: Ray and Flower settings, injected faults, sweeps."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from simulator.scenario.base import Section

__all__ = ["CloudFault", "AdversaryFault", "Faults", "FlowerConfig", "NodeFault",
           "RayConfig", "Sweep"]


class RayConfig(Section):
    address: str | None = Field(None, description="an existing cluster ('auto' or "
                                "host:port); None = local, or RAY_ADDRESS")
    num_cpus: int | None = Field(None, ge=1, description="local Ray only")
    cpus_per_node: float = Field(1.0, gt=0, description="CPUs one Flower node's actor uses")


class FlowerConfig(Section):
    devices_per_node: int = Field(25, ge=1, description="same-tier devices one Flower "
                                  "node carries (cohort)")


class NodeFault(Section):
    """Kill the actor of Flower node ``node`` (a device cohort) in round ``round``."""

    round: int = Field(ge=0, description="0-based training round")
    node: int = Field(ge=0, description="node index (cohorts are numbered tier by tier)")
    step: int = Field(0, ge=0, description="local step at which it dies")


class CloudFault(Section):
    """Kill the cloud's process during training round ``round``."""

    round: int = Field(ge=0, description="0-based training round")
    exchange: int = Field(0, ge=0, description="it dies at this (0-based) split-learning "
                          "exchange of the round")


class AdversaryFault(Section):
    """Kill the adversary process attacking (``tier``, ``attack``), ``times`` times."""

    tier: str
    attack: str = Field(description="an attack label, or 'information'")
    point: int | None = Field(None, ge=0, description="a searched attack: only this "
                              "grid point (0-based); None: every point")
    times: int = Field(1, ge=1, le=2, description="1: the retry succeeds; 2: the retry "
                       "dies too and the attack is recorded as failed")


class Faults(Section):
    """Injected faults, for tests and robustness studies (nothing by default).

    Each fires on the first attempt only: a round that the run repeats after a cloud
    restart, or an attack it retries, is not killed again.
    """

    kill_node: tuple[NodeFault, ...] = ()
    kill_cloud: tuple[CloudFault, ...] = ()
    kill_adversary: tuple[AdversaryFault, ...] = ()
    device_crash_probability: float = Field(0.0, ge=0, lt=1, description="chance that "
                                            "a training device crashes mid-round")


class Sweep(Section):
    """A grid of scenario variants, each axis a dotted override path and its values."""

    axes: dict[str, tuple[Any, ...]] = Field(default_factory=dict, description="e.g. "
                                             "{'tiers.0.defense.beta': [0.5, 2]}")
    mode: Literal["grid", "zip"] = "grid"
    parallel: int = Field(1, ge=1, description="points run at once (Ray tasks)")

    @field_validator("axes")
    @classmethod
    def _non_empty(cls, axes: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
        empty = [k for k, v in axes.items() if not v]
        if empty:
            raise ValueError(f"sweep axes need at least one value: {empty}")
        return axes
