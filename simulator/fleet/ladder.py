"""The encoder follows the budget: each device gets the largest rung it can run.

Rungs are edge encoders (each with its defense) listed smallest first. Under the
``largest_fit`` rule a device takes the last rung whose simulated per-sample inference
latency (edge compute + feature upload, :func:`simulator.latency.inference_latency`)
meets ``deadline_ms`` and whose weights and activations fit the device's ``memory_mb``.
A device that fits no rung is unable to serve (``unfit: drop``) or given the smallest
rung anyway (``unfit: smallest``). Every device gets a reason it can be shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from simulator.fleet.profile import Hardware
from simulator.latency import inference_latency

__all__ = ["Fit", "RungCost", "assign_rungs"]


@dataclass(frozen=True)
class RungCost:
    """What running one rung's edge model costs a device, per sample.

    Attributes
    ----------
    params
        Deployed parameters (float32 weights: 4 bytes each).
    macs
        Multiply-accumulates of one forward pass.
    bytes
        Transmitted feature bytes.
    activation_bytes
        Peak activation memory of one forward pass; the transmitted feature is a
        lower bound when nothing better is measured.
    """

    params: int
    macs: int
    bytes: int
    activation_bytes: int

    @classmethod
    def of(cls, cost: Any, activation_bytes: int | None = None) -> RungCost:
        """From an ``EdgeCost`` (params, macs, bytes); activations default to the
        transmitted feature."""
        nbytes = int(cost.bytes)
        return cls(int(cost.params), int(cost.macs), nbytes,
                   nbytes if activation_bytes is None else int(activation_bytes))

    @property
    def memory_mb(self) -> float:
        return (4 * self.params + self.activation_bytes) / 1e6


@dataclass(frozen=True)
class Fit:
    """One device's rung (``None``: unable to serve) and why."""

    rung: str | None
    reason: str


def assign_rungs(devices: Sequence[Hardware], rungs: Mapping[str, RungCost], *,
                 deadline_ms: float | None = None, memory: bool = True,
                 unfit: Literal["drop", "smallest"] = "drop") -> list[Fit]:
    """The largest fitting rung of each device.

    Parameters
    ----------
    devices
        Each device's hardware.
    rungs
        Rung name -> cost, smallest rung first (the ladder's order).
    deadline_ms
        Per-sample inference latency a rung must meet (``None``: no latency limit).
    memory
        Whether weights and activations must fit ``memory_mb``.
    unfit
        ``drop``: a device that fits no rung gets ``None``; ``smallest``: the first
        rung.

    Returns
    -------
    list[Fit]
        One per device, in order.
    """
    if not rungs:
        raise ValueError("the ladder needs at least one rung")
    if deadline_ms is None and not memory:
        raise ValueError("largest_fit needs a limit: deadline_ms, memory or both")
    return [_fit(hw, rungs, deadline_ms, memory, unfit) for hw in devices]


def _fit(hw: Hardware, rungs: Mapping[str, RungCost], deadline_ms: float | None,
         memory: bool, unfit: str) -> Fit:
    names = list(rungs)
    misses = {name: _misses(hw, rungs[name], deadline_ms, memory) for name in names}
    fitting = [name for name in names if not misses[name]]
    if fitting:
        best = fitting[-1]
        above = names[names.index(best) + 1:]
        why = f"{best!r} fits {_within(hw, rungs[best], deadline_ms, memory)}"
        if above:
            why += f"; {above[0]!r} needs {' and '.join(misses[above[0]])}"
        return Fit(best, why)
    smallest = names[0]
    short = " and ".join(misses[smallest])
    if unfit == "smallest":
        return Fit(smallest, f"smallest rung {smallest!r} by rule (unfit: smallest), "
                             f"though it needs {short}")
    return Fit(None, f"unable: smallest rung {smallest!r} needs {short}")


def _misses(hw: Hardware, cost: RungCost, deadline_ms: float | None,
            memory: bool) -> list[str]:
    """What ``cost`` exceeds on ``hw`` (empty: it fits)."""
    out = []
    latency = inference_latency(cost, hw)["latency_ms"]
    if deadline_ms is not None and latency > deadline_ms:
        out.append(f"{latency:.1f} ms > deadline {deadline_ms:g} ms")
    if memory and cost.memory_mb > hw.memory_mb:
        out.append(f"{cost.memory_mb:.2f} MB > memory {hw.memory_mb:g} MB")
    return out


def _within(hw: Hardware, cost: RungCost, deadline_ms: float | None,
            memory: bool) -> str:
    parts = []
    if deadline_ms is not None:
        latency = inference_latency(cost, hw)["latency_ms"]
        parts.append(f"deadline {deadline_ms:g} ms ({latency:.1f} ms)")
    if memory:
        parts.append(f"memory {hw.memory_mb:g} MB ({cost.memory_mb:.2f} MB)")
    return " and ".join(parts)
