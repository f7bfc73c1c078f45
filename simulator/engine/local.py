"""In-process transport: the same jobs as Flower, called directly.

Used by the benchmark's bare single-process loop to measure the arithmetic alone, and
by tests. Injected faults raise :class:`~simulator.faults.SimulatedCrash` here instead
of killing a process, and are absorbed the way the Flower transport absorbs a death.
"""

from __future__ import annotations

from typing import Any

import torch

from simulator.engine.cloud import Cloud
from simulator.engine.coordinator import Delivery
from simulator.engine.device import (InferJob, InferResult, TrainJob, TrainResult,
                                     run_infer_job, run_train_job)
from simulator.engine.workspace import ModelKit, Workspace
from simulator.faults import SimulatedCrash

__all__ = ["LocalTransport", "run_locally"]


class LocalTransport:
    """Runs device jobs and cloud calls in this process, in node order."""

    def __init__(self, ws: Workspace, cloud: Cloud) -> None:
        self.ws, self.cloud, self.kit = ws, cloud, ModelKit(ws)
        self._cloud_dead = False

    def _call_cloud(self, method: str) -> Any:
        def call(*args: Any) -> Any:
            if self._cloud_dead:
                raise SimulatedCrash("the cloud is dead")
            try:
                return getattr(self.cloud, method)(*args)
            except SimulatedCrash:
                self._cloud_dead = True
                raise
        return call

    def _run(self, jobs: list, fn: Any, method: str) -> Delivery:
        out, failed = [], {}
        for job in jobs:
            try:
                out.append(fn(job, self.ws, self.kit, self._call_cloud(method)))
            except SimulatedCrash as err:
                failed[job.node] = str(err)
        return Delivery(out, failed)

    def train(self, jobs: list[TrainJob]) -> Delivery[TrainResult]:
        return self._run(jobs, run_train_job, "exchange")

    def infer(self, jobs: list[InferJob]) -> Delivery[InferResult]:
        return self._run(jobs, run_infer_job, "infer")

    def cloud_alive(self) -> bool:
        return not self._cloud_dead

    def restart_cloud(self, state: dict[str, torch.Tensor]) -> None:
        self.cloud, self._cloud_dead = Cloud(self.ws, state), False


def run_locally(ws: Workspace, cloud_state: dict, body, debug: bool = False) -> Any:
    """Drop-in for :func:`simulator.engine.flower.run_on_flower`, without Flower or Ray."""
    return body(LocalTransport(ws, Cloud(ws, cloud_state)))
