"""The seam to Flower: ServerApp, ClientApps and the transport between them.

Flower's Message API carries the protocol: the ServerApp (cloud side) sends ``train``
and ``evaluate`` messages holding a tier's edge weights to ClientApps, each a Flower node
carrying a same-tier cohort of devices. The cloud model and its observation log live in
a Ray actor (:mod:`simulator.engine.ray_cloud`) that devices call directly for each
split-learning step. The Workspace goes into Ray's object store once.

Failures: node actors are restartable (a dead one loses the job it was running, which
the coordinator records, and comes back for the next); a restarted cloud actor has a new
name, which the ServerApp's messages carry, so the ClientApps reach the new one.
Flower 1.42's Python entry point for simulations is the deprecated ``run_simulation``;
it is used here and nowhere else (pyproject bounds flwr to the versions tested).
"""

from __future__ import annotations

import gc
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import ray
import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp

from simulator import interrupt
from simulator.engine.coordinator import Delivery
from simulator.engine.device import (InferJob, InferResult, TrainJob, TrainResult,
                                     run_infer_job, run_train_job)
from simulator.engine.ray_cloud import RemoteCloud, init_ray
from simulator.engine.workspace import ModelKit, Workspace
from simulator.faults import mark_actor_process

__all__ = ["FlowerTransport", "run_on_flower"]

_WORKERS: dict[str, tuple[Workspace, ModelKit]] = {}
_CLOUDS: dict[str, Any] = {}


def _worker(ws_ref: Any, threads: int) -> tuple[Workspace, ModelKit]:
    """The workspace and model kit of this actor process (built once per run)."""
    key = ws_ref.hex()
    if key not in _WORKERS:
        mark_actor_process()
        torch.set_num_threads(threads)
        ws = ray.get(ws_ref)
        _WORKERS.clear()
        _WORKERS[key] = (ws, ModelKit(ws))
        gc.freeze()   # the workspace and models outlive every collection (long_lived)
    return _WORKERS[key]


def _cloud(name: str) -> Any:
    """The cloud actor the driver names in the message (a restart renames it)."""
    if name not in _CLOUDS:
        _CLOUDS.clear()
        _CLOUDS[name] = ray.get_actor(name)
    return _CLOUDS[name]


def _client_app(ws_ref: Any, threads: int) -> ClientApp:
    app = ClientApp()

    @app.query()
    def whoami(msg: Message, context: Context) -> Message:
        node = int(context.node_config["partition-id"])
        return Message(RecordDict({"m": MetricRecord({"node": node})}), reply_to=msg)

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        ws, kit = _worker(ws_ref, threads)
        cfg = msg.content["config"]
        cloud = _cloud(str(cfg["cloud"]))
        crash = int(cfg["crash_step"])
        job = TrainJob(int(cfg["rnd"]), int(cfg["node"]), str(cfg["tier"]),
                       tuple(int(d) for d in cfg["devices"]),
                       msg.content["arrays"].to_torch_state_dict(),
                       None if crash < 0 else crash, float(cfg["edge_loss_scale"]))
        res = run_train_job(job, ws, kit,
                            lambda *a: ray.get(cloud.exchange.remote(*a)))
        ids = sorted(res.per_device)
        metrics = MetricRecord({"weight": res.weight, "devices": ids,
                                **{k: [res.per_device[d][k] for d in ids]
                                   for k in ("loss", "samples", "failed")}})
        return Message(RecordDict({"arrays": ArrayRecord(res.edge_state),
                                   "metrics": metrics}), reply_to=msg)

    @app.evaluate()
    def evaluate(msg: Message, context: Context) -> Message:
        ws, kit = _worker(ws_ref, threads)
        cfg = msg.content["config"]
        cloud = _cloud(str(cfg["cloud"]))
        job = InferJob(int(cfg["node"]), str(cfg["tier"]),
                       tuple(int(d) for d in cfg["devices"]),
                       msg.content["arrays"].to_torch_state_dict())
        res = run_infer_job(job, ws, kit, lambda *a: ray.get(cloud.infer.remote(*a)))
        ids = sorted(res.per_device)
        cols = {k: [res.per_device[d][k] for d in ids] for k in ("correct", "n")}
        return Message(RecordDict({"metrics": MetricRecord({"devices": ids, **cols})}),
                       reply_to=msg)

    return app


class FlowerTransport:
    """Coordinator transport over a Flower Grid; node index <-> Flower node id."""

    def __init__(self, grid: Grid, node_ids: dict[int, int], cloud: RemoteCloud) -> None:
        self.grid, self.node_ids, self.cloud = grid, node_ids, cloud

    def _send(self, kind: str, jobs: list[Any],
              extra: Callable[[Any], dict]) -> tuple[list[Message], dict[int, str]]:
        msgs = [Message(RecordDict({"arrays": ArrayRecord(j.edge_state),
                                    "config": ConfigRecord({"node": j.node, "tier": j.tier,
                                                            "devices": list(j.device_ids),
                                                            "cloud": self.cloud.name,
                                                            **extra(j)})}),
                        dst_node_id=self.node_ids[j.node], message_type=kind) for j in jobs]
        replies = _exchange_messages(self.grid, msgs)
        failed = {self._node_of(r): _reason(r.error.reason) for r in replies if r.has_error()}
        return [r for r in replies if not r.has_error()], failed

    def train(self, jobs: list[TrainJob]) -> Delivery[TrainResult]:
        replies, failed = self._send("train", jobs, lambda j: {
            "rnd": j.rnd, "crash_step": -1 if j.crash_step is None else j.crash_step,
            "edge_loss_scale": j.edge_loss_scale})
        out = []
        for r in replies:
            m = r.content["metrics"]
            per = {int(d): {"loss": lo, "samples": s, "failed": f}
                   for d, lo, s, f in zip(m["devices"], m["loss"], m["samples"],
                                          m["failed"], strict=True)}
            out.append(TrainResult(self._node_of(r), r.content["arrays"].to_torch_state_dict(),
                                   float(m["weight"]), per))
        return Delivery(out, failed)

    def infer(self, jobs: list[InferJob]) -> Delivery[InferResult]:
        replies, failed = self._send("evaluate", jobs, lambda j: {})
        out = []
        for r in replies:
            m = r.content["metrics"]
            per = {int(d): {"correct": c, "n": n, "accuracy": c / n}
                   for d, c, n in zip(m["devices"], m["correct"], m["n"], strict=True)}
            out.append(InferResult(self._node_of(r), per))
        return Delivery(out, failed)

    def cloud_alive(self) -> bool:
        return self.cloud.alive()

    def restart_cloud(self, state: dict[str, torch.Tensor]) -> None:
        self.cloud.restart(state)

    def _node_of(self, reply: Message) -> int:
        src = reply.metadata.src_node_id
        return next(n for n, fid in self.node_ids.items() if fid == src)


def _reason(text: str) -> str:
    """One readable line from Flower's error text (which embeds a Ray traceback)."""
    for marker, says in (("ActorDiedError", "its actor process died"),
                         ("ActorUnavailableError", "its actor process died"),
                         ("RayActorError", "its actor process died"),
                         ("WorkerCrashedError", "its worker process died")):
        if marker in text:
            return says
    line = next((s for s in reversed(text.strip().splitlines()) if s.strip()), text)
    return line.strip()[:300]


def _exchange_messages(grid: Grid, msgs: list[Message]) -> list[Message]:
    """Push ``msgs`` and wait for every reply, giving way to a stop request."""
    waiting = set(grid.push_messages(msgs))
    replies: list[Message] = []
    while waiting:
        interrupt.check()
        got = list(grid.pull_messages(waiting))
        replies.extend(got)
        waiting.difference_update(m.metadata.reply_to_message_id for m in got)
        if waiting:
            time.sleep(0.02)
    return replies


def _discover(grid: Grid, expected: int, timeout: float = 600.0) -> dict[int, int]:
    """Wait for every node to register, then ask each which cohort it carries."""
    deadline, ids = time.monotonic() + timeout, []
    while len(ids) < expected:
        interrupt.check()
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(ids)} of {expected} Flower nodes registered")
        time.sleep(0.05)
        ids = list(grid.get_node_ids())
    queries = [Message(RecordDict({"c": ConfigRecord({})}), dst_node_id=i,
                       message_type="query") for i in ids]
    return {int(r.content["m"]["node"]): r.metadata.src_node_id
            for r in _exchange_messages(grid, queries)}


def run_on_flower(ws: Workspace, cloud_state: dict[str, torch.Tensor],
                  body: Callable[[FlowerTransport], Any], debug: bool = False) -> Any:
    """Run ``body(transport)`` inside a Flower ServerApp with one node per cohort."""
    from flwr.simulation import run_simulation
    cfg = ws.scenario.ray
    init_ray(cfg)
    # Node deaths are reported by the coordinator in one line each; Flower would log
    # each with a Ray traceback (and announce run_simulation's deprecation, which the
    # pin in pyproject covers): its log is for --debug.
    logging.getLogger("flwr").setLevel(logging.INFO if debug else logging.CRITICAL)
    threads = max(1, int(cfg.cpus_per_node))
    ws_ref = ray.put(ws)
    cloud = RemoteCloud(ws_ref, cloud_state,
                        max(1, (cfg.num_cpus or os.cpu_count() or 1) // 2))
    box: dict[str, Any] = {}
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        try:
            transport = FlowerTransport(grid, _discover(grid, len(ws.population.nodes)),
                                        cloud)
            box["result"] = body(transport)
        except BaseException as err:  # re-raised in the driver below
            box["error"] = err

    # A node actor that dies is restarted by Ray (Flower passes these resources to the
    # actor options as they are). One task retry: a job that Flower hands to the actor
    # while it restarts would otherwise fail too, losing a cohort that never died; the
    # job that was running when it died fails again (an injected fault strikes on its
    # retry as well) or, after a real crash, gets a second chance.
    resources = {"num_cpus": cfg.cpus_per_node, "num_gpus": 0.0, "max_restarts": -1,
                 "max_task_retries": 1}
    try:
        run_simulation(server, _client_app(ws_ref, threads),
                       num_supernodes=len(ws.population.nodes),
                       backend_config={"client_resources": resources})
    finally:
        # Flower shuts Ray down when its simulation ends; ray.kill would then start a
        # new local Ray just to find nothing (and take over SIGTERM).
        if ray.is_initialized():
            try:
                ray.kill(cloud.handle)
            except Exception:  # already gone
                pass
    if "error" in box:
        raise box["error"]
    if "result" not in box:
        raise RuntimeError("the Flower simulation ended without running the ServerApp")
    return box["result"]
