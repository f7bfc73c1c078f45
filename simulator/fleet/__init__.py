"""A fleet the way it exists: hardware drawn or read per device, encoders that follow
the budget, and rounds on a virtual clock.

Pure functions of their inputs and derived seeds; nothing here builds a model or
touches the engine. The schema sections they read live in :mod:`simulator.scenario`.
"""

from simulator.fleet.distributions import Dist, quantity, sample
from simulator.fleet.profile import DEFAULTS, FIELDS, Hardware, draw_hardware
from simulator.fleet.trace import DeviceTrace, TraceError, read_trace

__all__ = ["DEFAULTS", "FIELDS", "DeviceTrace", "Dist", "Hardware", "TraceError",
           "draw_hardware", "quantity", "read_trace", "sample"]
