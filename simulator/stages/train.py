"""Stage ``train``: split training through Flower, or the provider's centralized training.

Every round end writes a checkpoint (``stages/train/checkpoint.pt``: tier edges, the
cloud, per-device counters, the round table, failures; for centralized training also
the optimiser state; split training writes it beside the next round) and the round's
share of the cloud's observation log (``stages/train/observations``). A run killed
mid-training resumes from the last round end and continues bit for bit: every random
draw derives from (seed, round, device, step), and optimisers live for one round only
(centralized: saved).
"""

from __future__ import annotations

import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from simulator.engine.centralized import train_centralized
from simulator.engine.collapse import TrainingCollapsed
from simulator.engine.coordinator import (Transport, TrainState, round_plans,
                                          run_split_training)
from simulator.engine.observations import (TierObservations, load_chunk, merge_observations,
                                           save_chunk)
from simulator.records import write_atomic
from simulator.stages.context import RunContext

__all__ = ["load_state", "participation_table", "run_centralized", "run_split",
           "training_observations"]

_COMPACT_AFTER = 8   # round files before they are merged into one (bounds the disk)


def load_state(ctx: RunContext) -> tuple[TrainState, dict[str, Any]]:
    """The last checkpoint (state, extras), or the initial weights of a fresh run."""
    path = ctx.folder("train") / "checkpoint.pt"
    if path.is_file():
        data = torch.load(path, weights_only=True)
        return TrainState(**data["state"]), data["extra"]
    edges, cloud = ctx.kit.initial_states()
    return TrainState.initial(ctx.ws, edges, cloud), {"seconds": 0.0}


class _Checkpoints:
    """Round checkpoints written on one background thread, one at a time, in order.

    The next round starts while the last one's checkpoint is written (pickling the
    state and writing the cloud took 43 ms a round at 1,000 devices, 4% of training).
    A split-training state is safe to write beside the next round: its tensors are
    fresh each round (cloud ``state_of`` copies, edge averages) and :meth:`save` copies
    the containers the next round changes. :meth:`flush` waits for the write in flight
    (and raises its error): before observation files are compacted, when the stage
    ends and when it stops early, so the checkpoint on disk is always a finished one.
    """

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="checkpoint")
        self._pending: Future | None = None

    def save(self, state: TrainState, extra: dict[str, Any], *, wait: bool = False) -> None:
        self.flush()
        # the fields themselves (one level of containers copied), not dataclasses.asdict:
        # that deep-copies every tensor and per-device dict first
        data = {"state": {f.name: _shallow(getattr(state, f.name)) for f in fields(state)},
                "extra": extra}
        self._pending = self._pool.submit(
            write_atomic, self.ctx.folder("train") / "checkpoint.pt",
            lambda p: torch.save(data, p))
        self.ctx.recorder.record_failures(state.failures)
        self.ctx.recorder.record_collapses(state.collapses)
        if wait:
            self.flush()

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> _Checkpoints:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.flush()
        finally:
            self._pool.shutdown()


def _shallow(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else \
        list(value) if isinstance(value, list) else value


def run_split(ctx: RunContext, transport: Transport, state: TrainState,
              extra: dict[str, Any]) -> TrainState:
    """SplitFed rounds from the checkpoint on; marks the stage done.

    A collapse that stops the run (``training.collapse.action: stop``) still leaves the
    rounds table, so the statistics that triggered it can be read.
    """
    t0, before = time.perf_counter(), extra.get("seconds", 0.0)
    cap = ctx.ws.scenario.observation.training_per_device

    with _Checkpoints(ctx) as checkpoints:
        def round_end(st: TrainState, observed: dict[str, TierObservations]) -> None:
            _keep_observations(ctx, st.next_round - 1, merge_observations([observed], cap))
            checkpoints.save(st, {"seconds": before + time.perf_counter() - t0})
            _compact(ctx, st.next_round - 1, cap, checkpoints)

        try:
            state = run_split_training(ctx.ws, ctx.kit, transport, state, ctx.progress,
                                       round_end)
        except TrainingCollapsed:
            ctx.recorder.table("rounds", pd.DataFrame(state.rounds))
            raise
    _finish(ctx, state, before + time.perf_counter() - t0)
    return state


def run_centralized(ctx: RunContext, state: TrainState, extra: dict[str, Any]) -> TrainState:
    """The provider trains every tier with the cloud (epochs are its rounds)."""
    t0, before = time.perf_counter(), extra.get("seconds", 0.0)

    # written before the next epoch: the optimiser state holds the live tensors
    with _Checkpoints(ctx) as checkpoints:
        def epoch_end(epoch: int, edges: dict, cloud: dict, opt: dict, rows: list) -> None:
            st = TrainState(epoch + 1, edges, cloud, list(rows), state.participation,
                            state.rounds_failed, {}, [])
            checkpoints.save(st, {"seconds": before + time.perf_counter() - t0,
                                  "optimizer": opt}, wait=True)

        edges, cloud, rows = train_centralized(
            ctx.ws, ctx.kit, state.edge_states, state.cloud_state, ctx.progress,
            start_epoch=state.next_round, optimizer_state=extra.get("optimizer"),
            rows=state.rounds, on_epoch_end=epoch_end)
        done = TrainState(ctx.ws.scenario.training.epochs, edges, cloud, rows,
                          state.participation, state.rounds_failed, {}, [])
        checkpoints.save(done, {"seconds": before + time.perf_counter() - t0}, wait=True)
    _finish(ctx, done, before + time.perf_counter() - t0)
    return done


def _finish(ctx: RunContext, state: TrainState, seconds: float) -> None:
    ctx.recorder.table("rounds", pd.DataFrame(state.rounds))
    ctx.recorder.table("participation", participation_table(state))
    lost = sum(state.rounds_failed.values())
    ctx.recorder.mark_stage("train", seconds, rounds=state.next_round,
                            device_rounds_lost=lost)


_PARTICIPATION = ("round", "tier", "device_id", "status", "work_fraction", "busy_s",
                  "bytes_sent", "round_start_s", "round_seconds", "target",
                  "devices_available")


def participation_table(state: TrainState) -> pd.DataFrame:
    """One row per (round, selected device) on the virtual clock: its status
    (completed, late, dropped, straggled, cancelled), work done, busy seconds and
    bytes sent, with its tier's round (start, length, target, reachable devices).
    Empty (with these columns) for centralized training."""
    frames = [pd.DataFrame({
        "round": plan.rnd, "tier": tier,
        "device_id": pd.Series([d.device_id for d in plan.devices], dtype="int64"),
        "status": [d.status for d in plan.devices],
        "work_fraction": pd.Series([d.work_fraction for d in plan.devices], dtype=float),
        "busy_s": pd.Series([d.busy_s for d in plan.devices], dtype=float),
        "bytes_sent": pd.Series([d.bytes_sent for d in plan.devices], dtype="int64"),
        "round_start_s": plan.start_s, "round_seconds": plan.duration_s,
        "target": plan.target, "devices_available": len(plan.available)})
        for tier, plan in round_plans(state)]
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=object if c in ("tier", "status")
                                          else float) for c in _PARTICIPATION})
    return pd.concat(frames, ignore_index=True)[list(_PARTICIPATION)]


# The observation log of training: one file per round end, merged every few rounds.
# Files are named by the last round they cover: r<k> holds round k alone, m<k> every
# round up to k. Only files up to the checkpoint's round are valid: a file written
# after the last checkpoint (a kill in between) is ignored and replaced.

def _files(ctx: RunContext) -> list[tuple[str, int, Path]]:
    out = []
    for p in ctx.folder("train", "observations").glob("[rm]*.npz"):
        out.append((p.name[0], int(p.stem[1:]), p))
    return sorted(out, key=lambda f: (f[1], f[0] == "r"))


def _valid(ctx: RunContext, upto: int) -> list[Path]:
    files = [f for f in _files(ctx) if f[1] <= upto]
    merged = [f for f in files if f[0] == "m"]
    start = merged[-1][1] if merged else -1
    return ([merged[-1][2]] if merged else []) + [p for k, r, p in files
                                                  if k == "r" and r > start]


def _keep_observations(ctx: RunContext, rnd: int,
                       observed: dict[str, TierObservations]) -> None:
    save_chunk(ctx.folder("train", "observations") / f"r{rnd:05d}.npz", observed)


def _compact(ctx: RunContext, rnd: int, cap: int, checkpoints: _Checkpoints) -> None:
    files = _valid(ctx, rnd)
    if len(files) < _COMPACT_AFTER:
        return
    checkpoints.flush()   # the merged file is valid only once round ``rnd``'s checkpoint is
    merged = merge_observations([load_chunk(p) for p in files], cap)
    save_chunk(ctx.folder("train", "observations") / f"m{rnd:05d}.npz", merged)
    for _, _, p in _files(ctx):
        if p.name != f"m{rnd:05d}.npz":
            p.unlink()


def training_observations(ctx: RunContext, rounds_done: int) -> list[dict[str, TierObservations]]:
    """The logged training features of rounds ``0 .. rounds_done - 1``, in order."""
    return [load_chunk(p) for p in _valid(ctx, rounds_done - 1)]
