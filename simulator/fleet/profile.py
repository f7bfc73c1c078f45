"""A device's own hardware: profile layers resolved and drawn from its derived seed.

A device's numbers come from layers, general to specific (for a tier's device:
built-in defaults, the fleet's trace row, the fleet's profile, the tier's trace row,
the tier's profile). Each field takes the most specific layer that sets it; a
distribution is drawn from ``rng(device_seed, "profile", field)``, one stream per
field, so changing one field's distribution leaves the other fields' draws alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from simulator.fleet.distributions import Dist, sample
from simulator.seeding import rng

__all__ = ["DEFAULTS", "FIELDS", "Hardware", "draw_hardware"]

FIELDS = ("compute_gflops", "uplink_mbps", "memory_mb", "availability")
# Built-in defaults: a profile field that no layer sets.
DEFAULTS: dict[str, float] = {"compute_gflops": 10.0, "uplink_mbps": 10.0,
                              "memory_mb": 512.0, "availability": 1.0}


@dataclass(frozen=True)
class Hardware:
    """One device's concrete profile: plain numbers, what latency and the clock read.

    Attributes
    ----------
    compute_gflops
        Sustained GFLOP/s.
    uplink_mbps
        Uplink Mbit/s.
    memory_mb
        Memory available to the edge model.
    availability
        Probability to be reachable in a round.
    origin
        Where the numbers came from (``profile``, or a trace file and row).
    """

    compute_gflops: float
    uplink_mbps: float
    memory_mb: float
    availability: float
    origin: str = "profile"


Layer = Mapping[str, "Dist | float"]


def draw_hardware(layers: Sequence[Layer], device_seed: int,
                  origin: str = "profile") -> Hardware:
    """Resolve ``layers`` (general first) and draw the device's numbers.

    Parameters
    ----------
    layers
        Mappings of field -> number or :class:`Dist`; later layers win. Fields no
        layer sets take :data:`DEFAULTS`.
    device_seed
        The device's derived seed.
    origin
        Recorded on the result (e.g. the trace row the device read).
    """
    values = {}
    for field in FIELDS:
        spec: Dist | float = DEFAULTS[field]
        for layer in layers:
            if layer.get(field) is not None:
                spec = layer[field]
        values[field] = spec if not isinstance(spec, Dist) else \
            sample(spec, rng(device_seed, "profile", field))
    return Hardware(**{k: float(v) for k, v in values.items()}, origin=origin)
