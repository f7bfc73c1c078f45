"""In-process transport: the same jobs as Flower, called directly.

Used by the benchmark's bare single-process loop to measure the arithmetic alone.
"""

from __future__ import annotations

from typing import Any

from simulator.adversary import run_adversary
from simulator.engine.cloud import Cloud
from simulator.engine.device import (InferJob, InferResult, TrainJob, TrainResult,
                                     run_infer_job, run_train_job)
from simulator.engine.workspace import ModelKit, Workspace

__all__ = ["LocalTransport", "run_locally"]


class LocalTransport:
    """Runs device jobs and cloud calls in this process, in node order."""

    def __init__(self, ws: Workspace, cloud: Cloud) -> None:
        self.ws, self._cloud, self.kit = ws, cloud, ModelKit(ws)

    def train(self, jobs: list[TrainJob]) -> list[TrainResult]:
        return [run_train_job(j, self.ws, self.kit, self._cloud.exchange) for j in jobs]

    def infer(self, jobs: list[InferJob]) -> list[InferResult]:
        return [run_infer_job(j, self.ws, self.kit, self._cloud.infer) for j in jobs]

    def cloud(self, method: str, *args: Any) -> Any:
        return getattr(self._cloud, method)(*args)

    def attack(self, edge_states: dict, cloud_state: dict, observations: dict) -> list:
        return run_adversary(self.ws, edge_states, cloud_state, observations)


def run_locally(ws: Workspace, cloud_state: dict, body) -> None:
    """Drop-in for :func:`simulator.engine.flower.run_on_flower`, without Flower or Ray."""
    body(LocalTransport(ws, Cloud(ws, cloud_state)))
