"""The Ray side of the engine: the cluster, and the cloud as a restartable actor.

The cloud model and its observation log live in a Ray actor that devices call
directly for each split-learning step (:class:`RemoteCloud` is the driver's handle).
It is a named actor with a generation number, so that after a restart the ClientApps
(:mod:`simulator.engine.flower`) reach the new one.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import uuid
from typing import Any

import ray
import torch

from simulator import interrupt
from simulator.engine.cloud import Cloud
from simulator.engine.observations import TierObservations
from simulator.engine.workspace import Workspace
from simulator.faults import mark_actor_process
from simulator.scenario import RayConfig

__all__ = ["CloudActor", "RemoteCloud", "init_ray"]


def init_ray(cfg: RayConfig) -> None:
    """Connect to the scenario's (or ``RAY_ADDRESS``'s) cluster, or start a local one."""
    if ray.is_initialized():
        interrupt.reclaim_signals()
        return
    # Ray 2.55 prints a FutureWarning on every start about the accelerator variables
    # of zero-GPU workers; we set the behaviour it announces, so it has nothing to say.
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    pythonpath = os.pathsep.join(p for p in sys.path if p)
    env = {"RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}
    if address:
        import analysis
        import simulator
        import strategies
        # The cluster may not have siftsim installed: ship our packages with the job.
        ray.init(address=address, runtime_env={"py_modules": [simulator, strategies,
                                                              analysis], "env_vars": env},
                 log_to_driver=False, logging_level=logging.WARNING)
    else:
        # address="local": a fresh local instance, even if `ray start` left a cluster
        # running on this machine (without it, ray.init would join that cluster).
        ray.init(address="local", num_cpus=cfg.num_cpus or os.cpu_count(),
                 include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING,
                 runtime_env={"env_vars": {"PYTHONPATH": pythonpath, **env}})
    interrupt.reclaim_signals()


@ray.remote(num_cpus=0)
class CloudActor(Cloud):
    """The cloud in its own process (reserves no CPU: Flower's node actors hold the
    cluster's CPUs for the whole simulation; the cloud works while they wait on it)."""

    def __init__(self, ws: Workspace, state: dict[str, torch.Tensor], threads: int) -> None:
        mark_actor_process()
        torch.set_num_threads(threads)
        super().__init__(ws, state)
        gc.freeze()   # the workspace and models outlive every collection (long_lived)

    def ping(self) -> bool:
        return True


class RemoteCloud:
    """:class:`~simulator.engine.cloud.CloudService` over the cloud actor; restartable."""

    def __init__(self, ws_ref: Any, state: dict[str, torch.Tensor], threads: int) -> None:
        self.ws_ref, self.threads = ws_ref, threads
        self.prefix, self.generation = f"siftsim-cloud-{uuid.uuid4().hex[:8]}", 0
        self.handle = self._start(state)

    @property
    def name(self) -> str:
        return f"{self.prefix}-{self.generation}"

    def _start(self, state: dict[str, torch.Tensor]) -> Any:
        return CloudActor.options(name=self.name, max_restarts=0).remote(
            self.ws_ref, state, self.threads)

    def restart(self, state: dict[str, torch.Tensor]) -> None:
        try:
            ray.kill(self.handle)
        except Exception:  # already dead: that is why it is restarted
            pass
        self.generation += 1
        self.handle = self._start(state)

    def alive(self) -> bool:
        try:
            return ray.get(self.handle.ping.remote(), timeout=60)
        except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
            return False

    def exchange(self, *args: Any) -> Any:
        return ray.get(self.handle.exchange.remote(*args))

    def infer(self, *args: Any) -> Any:
        return ray.get(self.handle.infer.remote(*args))

    def aggregate(self, weights: dict[int, float]) -> dict[str, dict[str, float]]:
        return ray.get(self.handle.aggregate.remote(weights))

    def discard_round(self) -> None:
        ray.get(self.handle.discard_round.remote())

    def arm_crash(self, rnd: int, exchange: int | None) -> None:
        ray.get(self.handle.arm_crash.remote(rnd, exchange))

    def drain(self) -> dict[str, TierObservations]:
        return ray.get(self.handle.drain.remote())

    def load(self, state: dict[str, torch.Tensor]) -> None:
        ray.get(self.handle.load.remote(state))

    def state(self) -> dict[str, torch.Tensor]:
        return ray.get(self.handle.state.remote())
