"""A fleet the way it exists: hardware drawn or read per device, encoders that follow
the budget, and rounds on a virtual clock.

Pure functions of their inputs and derived seeds; nothing here builds a model or
touches the engine. The schema sections they read live in :mod:`simulator.scenario`.
"""

from simulator.fleet.clock import (DeviceRound, RoundPlan, availability_factor,
                                   next_round_start, plan_round, tally)
from simulator.fleet.distributions import Dist, quantity, sample
from simulator.fleet.ladder import Fit, RungCost, assign_rungs
from simulator.fleet.profile import DEFAULTS, FIELDS, Hardware, draw_hardware
from simulator.fleet.trace import DeviceTrace, TraceError, read_trace

__all__ = ["DEFAULTS", "FIELDS", "DeviceRound", "DeviceTrace", "Dist", "Fit",
           "Hardware", "RoundPlan", "RungCost", "TraceError", "assign_rungs",
           "availability_factor", "draw_hardware", "next_round_start", "plan_round",
           "quantity", "read_trace", "sample", "tally"]
