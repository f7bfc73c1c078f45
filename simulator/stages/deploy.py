"""Stage ``deploy``: the trained weights made ready to serve, written to ``checkpoints/``.

BatchNorm statistics of every tier edge and of the cloud are de-biased for their (0, 1)
start (which dominates after short simulated training); the result is what devices and
the cloud run at inference, and what the adversary holds.
"""

from __future__ import annotations

import time

from simulator.engine.coordinator import TrainState
from simulator.records import read_checkpoints
from simulator.stages.context import RunContext

__all__ = ["deploy", "deployed"]


def deploy(ctx: RunContext, state: TrainState) -> tuple[dict, dict]:
    """Write the deployed edges and cloud; returns them (edges per tier, cloud)."""
    t0 = time.perf_counter()
    edges = {t: ctx.kit.deployed(t, s) for t, s in state.edge_states.items()}
    cloud = ctx.kit.deployed_cloud(state.cloud_state)
    ctx.recorder.checkpoints(edges, cloud)
    ctx.recorder.mark_stage("deploy", time.perf_counter() - t0)
    return edges, cloud


def deployed(ctx: RunContext) -> tuple[dict, dict]:
    """The deployed weights of a run whose deploy stage is done."""
    return read_checkpoints(ctx.path)
