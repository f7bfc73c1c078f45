"""The one seam to Flower and Ray.

Flower's Message API carries the protocol: the ServerApp (cloud side) sends ``train``
and ``evaluate`` messages holding a tier's edge weights to ClientApps, each a Flower node
carrying a same-tier cohort of devices. The cloud model and its observation log live in
a Ray actor that devices call directly for each split-learning step. The Workspace goes
into Ray's object store once. Flower 1.42's Python entry point for simulations is the
deprecated ``run_simulation``; it is used here and nowhere else.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import ray
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.simulation import run_simulation

from simulator.adversary import Adversary, TierLeakage, train_evaluator
from simulator.engine.cloud import Cloud
from simulator.engine.device import (InferJob, InferResult, TrainJob, TrainResult,
                                     run_infer_job, run_train_job)
from simulator.engine.workspace import ModelKit, Workspace
from simulator.scenario import RayConfig

__all__ = ["FlowerTransport", "init_ray", "run_on_flower"]

_WORKERS: dict[str, tuple[Workspace, ModelKit]] = {}


def init_ray(cfg: RayConfig) -> None:
    """Connect to the scenario's (or ``RAY_ADDRESS``'s) cluster, or start a local one."""
    if ray.is_initialized():
        return
    address = cfg.address or os.environ.get("RAY_ADDRESS")
    pythonpath = os.pathsep.join(p for p in sys.path if p)
    if address:
        import analysis
        import simulator
        import strategies
        # The cluster may not have siftsim installed: ship our packages with the job.
        ray.init(address=address, runtime_env={"py_modules": [simulator, strategies,
                                                              analysis]},
                 log_to_driver=False)
    else:
        # address="local": a fresh local instance, even if `ray start` left a cluster
        # running on this machine (without it, ray.init would join that cluster).
        ray.init(address="local", num_cpus=cfg.num_cpus or os.cpu_count(),
                 include_dashboard=False,
                 log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": pythonpath}})


@ray.remote(num_cpus=0)
class CloudActor(Cloud):
    """The cloud in its own process; ``call`` dispatches the coordinator's requests."""

    def __init__(self, ws: Workspace, state: dict[str, torch.Tensor], threads: int) -> None:
        torch.set_num_threads(threads)
        super().__init__(ws, state)

    def call(self, method: str, *args: Any) -> Any:
        return getattr(self, method)(*args)


@ray.remote(num_cpus=0)
class AdversaryActor(Adversary):
    """The curious cloud's attacker for one tier, in its own process.

    Like the cloud it reserves no CPU: Flower's node actors hold the cluster's CPUs for
    the whole simulation, and a reservation here would wait for them forever.
    """


def _worker(ws_ref: Any, threads: int) -> tuple[Workspace, ModelKit]:
    """The workspace and model kit of this actor process (built once per run)."""
    key = ws_ref.hex()
    if key not in _WORKERS:
        torch.set_num_threads(threads)
        ws = ray.get(ws_ref)
        _WORKERS.clear()
        _WORKERS[key] = (ws, ModelKit(ws))
    return _WORKERS[key]


def _client_app(ws_ref: Any, cloud: Any, threads: int) -> ClientApp:
    app = ClientApp()

    def exchange(*args: Any) -> Any:
        return ray.get(cloud.exchange.remote(*args))

    def predict(*args: Any) -> Any:
        return ray.get(cloud.infer.remote(*args))

    @app.query()
    def whoami(msg: Message, context: Context) -> Message:
        node = int(context.node_config["partition-id"])
        return Message(RecordDict({"m": MetricRecord({"node": node})}), reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        ws, kit = _worker(ws_ref, threads)
        cfg = msg.content["config"]
        job = TrainJob(int(cfg["rnd"]), int(cfg["node"]), str(cfg["tier"]),
                       tuple(int(d) for d in cfg["devices"]),
                       msg.content["arrays"].to_torch_state_dict())
        res = run_train_job(job, ws, kit, exchange)
        ids = sorted(res.per_device)
        metrics = MetricRecord({"weight": res.weight, "devices": ids,
                                "loss": [res.per_device[d]["loss"] for d in ids],
                                "samples": [res.per_device[d]["samples"] for d in ids]})
        return Message(RecordDict({"arrays": ArrayRecord(res.edge_state),
                                   "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        ws, kit = _worker(ws_ref, threads)
        cfg = msg.content["config"]
        job = InferJob(int(cfg["node"]), str(cfg["tier"]),
                       tuple(int(d) for d in cfg["devices"]),
                       msg.content["arrays"].to_torch_state_dict())
        res = run_infer_job(job, ws, kit, predict)
        ids = sorted(res.per_device)
        cols = {k: [res.per_device[d][k] for d in ids] for k in ("correct", "n")}
        return Message(RecordDict({"metrics": MetricRecord({"devices": ids, **cols})}),
                       reply_to=msg)

    return app


class FlowerTransport:
    """Coordinator transport over a Flower Grid; node index <-> Flower node id."""

    def __init__(self, grid: Grid, node_ids: dict[int, int], cloud: Any, ws_ref: Any) -> None:
        self.grid, self.node_ids, self._cloud, self.ws_ref = grid, node_ids, cloud, ws_ref

    def _send(self, kind: str, jobs: list[Any], extra: Callable[[Any], dict]) -> list[Message]:
        msgs = [Message(RecordDict({"arrays": ArrayRecord(j.edge_state),
                                    "config": ConfigRecord({"node": j.node, "tier": j.tier,
                                                            "devices": list(j.device_ids),
                                                            **extra(j)})}),
                        dst_node_id=self.node_ids[j.node], message_type=kind) for j in jobs]
        replies = list(self.grid.send_and_receive(msgs))
        failed = [r.error.reason for r in replies if r.has_error()]
        if failed:
            raise RuntimeError(f"{len(failed)} Flower node(s) failed; first error:\n{failed[0]}")
        return replies

    def train(self, jobs: list[TrainJob]) -> list[TrainResult]:
        out = []
        for r in self._send("train", jobs, lambda j: {"rnd": j.rnd}):
            m = r.content["metrics"]
            node = self._node_of(r)
            per = {int(d): {"loss": lo, "samples": s}
                   for d, lo, s in zip(m["devices"], m["loss"], m["samples"], strict=True)}
            out.append(TrainResult(node, r.content["arrays"].to_torch_state_dict(),
                                   float(m["weight"]), per))
        return out

    def infer(self, jobs: list[InferJob]) -> list[InferResult]:
        out = []
        for r in self._send("evaluate", jobs, lambda j: {}):
            m = r.content["metrics"]
            per = {int(d): {"correct": c, "n": n, "accuracy": c / n}
                   for d, c, n in zip(m["devices"], m["correct"], m["n"], strict=True)}
            out.append(InferResult(self._node_of(r), per))
        return out

    def _node_of(self, reply: Message) -> int:
        src = reply.metadata.src_node_id
        return next(n for n, fid in self.node_ids.items() if fid == src)

    def cloud(self, method: str, *args: Any) -> Any:
        return ray.get(self._cloud.call.remote(method, *args))

    def attack(self, edge_states: dict, cloud_state: dict,
               observations: dict) -> list[TierLeakage]:
        """One adversary actor per tier; Ray runs as many at once as CPUs allow."""
        evaluator = ray.get(ray.remote(num_cpus=0)(train_evaluator).remote(self.ws_ref))
        tiers = sorted(observations)
        actors = {t: AdversaryActor.remote(self.ws_ref, edge_states, cloud_state, evaluator)
                  for t in tiers}
        return ray.get([actors[t].attack_tier.remote(t, observations[t]) for t in tiers])


def _discover(grid: Grid, expected: int, timeout: float = 600.0) -> dict[int, int]:
    """Wait for every node to register, then ask each which cohort it carries."""
    deadline, ids = time.monotonic() + timeout, []
    while len(ids) < expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(ids)} of {expected} Flower nodes registered")
        time.sleep(0.05)
        ids = list(grid.get_node_ids())
    queries = [Message(RecordDict({"c": ConfigRecord({})}), dst_node_id=i,
                       message_type="query") for i in ids]
    return {int(r.content["m"]["node"]): r.metadata.src_node_id
            for r in grid.send_and_receive(queries)}


def run_on_flower(ws: Workspace, cloud_state: dict[str, torch.Tensor],
                  body: Callable[[FlowerTransport], Any]) -> Any:
    """Run ``body(transport)`` inside a Flower ServerApp with one node per cohort."""
    cfg = ws.scenario.ray
    init_ray(cfg)
    logging.getLogger("flwr").setLevel(logging.WARNING)
    threads = max(1, int(cfg.cpus_per_node))
    ws_ref = ray.put(ws)
    cloud = CloudActor.remote(ws_ref, cloud_state, max(1, (cfg.num_cpus or os.cpu_count() or 1) // 2))
    box: dict[str, Any] = {}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            transport = FlowerTransport(grid, _discover(grid, len(ws.population.nodes)), cloud,
                                        ws_ref)
            box["result"] = body(transport)
        except BaseException as err:  # re-raised in the driver below
            box["error"] = err

    run_simulation(server, _client_app(ws_ref, cloud, threads),
                   num_supernodes=len(ws.population.nodes),
                   backend_config={"client_resources": {"num_cpus": cfg.cpus_per_node,
                                                        "num_gpus": 0.0}})
    if "error" in box:
        raise box["error"]
    if "result" not in box:
        raise RuntimeError("the Flower simulation ended without running the ServerApp")
    return box["result"]
