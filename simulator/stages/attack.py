"""Stage ``attack``: the curious cloud attacks what it logged, one unit at a time.

A unit is one attack (or the information metrics) against one tier; an attack with a
``search`` grid (:mod:`simulator.search`) gives one unit per grid point. Units run on
Ray workers that each reserve one CPU and use one torch thread, so attacks never fight
for a core and give the same numbers wherever they run; each finished unit is written
to ``stages/attack/<tier>/<attack>.npz`` (a grid point: ``<attack>-<key>.npz``, the
key a short hash of its setting) at once, with what the attacker spent, so a resumed
run redoes only unfinished units. A unit whose worker dies or that raises is retried
once (on Ray, on a fresh worker); a unit that fails twice is recorded as failed
(``<attack>.failed.json`` and the manifest) and the others complete.
``siftsim attack RUN_DIR`` runs this same stage.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simulator.adversary import Adversary, AttackResult
from simulator.engine.observations import TierObservations
from simulator.engine.workspace import Workspace
from simulator.evaluator import train_evaluator
from simulator.faults import FaultPlan, SimulatedCrash, die, mark_actor_process
from simulator.records import read_checkpoints, read_observations, write_atomic
from simulator.search import grid, point_spec, setting_key, setting_text
from simulator.stages.context import RunContext

__all__ = ["INFORMATION", "Unit", "attack", "evaluator_path", "load_unit", "units"]

INFORMATION = "information"   # the unit of a tier's information metrics


@dataclass(frozen=True)
class Unit:
    tier: str
    label: str   # an attack label, or INFORMATION
    setting: tuple[tuple[str, Any], ...] = ()   # a grid point's values; () unsearched
    point: int = 0                              # its index in the attack's grid

    @property
    def stem(self) -> str:
        """The unit's file name without suffix (unsearched: the label, as always)."""
        return f"{self.label}-{setting_key(dict(self.setting))}" if self.setting \
            else self.label

    def __str__(self) -> str:
        at = f" [{setting_text(dict(self.setting))}]" if self.setting else ""
        return f"{self.label}{at} on tier {self.tier}"


def units(ws: Workspace, tiers: list[str]) -> list[Unit]:
    """Every unit of the scenario's adversary, tier by tier (grid points in order)."""
    adv = ws.scenario.adversary
    per_tier = [(a.label or a.name, tuple(s.items()), i)
                for a in adv.attacks for i, s in enumerate(grid(a))]
    if adv.information.enabled:
        per_tier.append((INFORMATION, (), 0))
    return [Unit(t, label, setting, point) for t in tiers
            for label, setting, point in per_tier]


def _spec(ws: Workspace, unit: Unit) -> Any:
    """The unit's attack spec; a grid point's has the point's values set."""
    spec = next(a for a in ws.scenario.adversary.attacks
                if (a.label or a.name) == unit.label)
    return point_spec(spec, dict(unit.setting)) if unit.setting else spec


def _run_unit(ws: Workspace, edges: dict, cloud: dict, evaluator: Any, unit: Unit,
              obs: TierObservations, attempt: int) -> AttackResult | dict[str, Any]:
    """One unit, in whichever process runs it (the injected fault strikes here).

    An attack's result carries the worker's CPU-seconds for the whole unit (building
    the adversary, the attack, scoring): what this point of the grid cost.
    """
    if FaultPlan(ws.scenario.faults, ws.scenario.seed).adversary_dies(
            unit.tier, unit.label, attempt, unit.point):
        die(f"adversary ({unit})")
    cpu = time.process_time()
    adversary = Adversary(ws, edges, cloud, evaluator)
    if unit.label == INFORMATION:
        return adversary.information(unit.tier, obs)
    result = adversary.attack(unit.tier, _spec(ws, unit), obs)
    result.budget["cpu_seconds"] = time.process_time() - cpu
    return result


def _ray_unit(ws: Workspace, edges: dict, cloud: dict, evaluator: list, *rest: Any) -> Any:
    """A unit in a Ray worker; ``evaluator`` holds the classifier's ref, fetched when
    the unit first scores."""
    import ray
    mark_actor_process()
    torch.set_num_threads(1)
    return _run_unit(ws, edges, cloud, lambda: ray.get(evaluator[0]), *rest)


def _ray_evaluator(ws: Workspace) -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    return train_evaluator(ws)


# -- unit files ---------------------------------------------------------------------

def _unit_path(ctx: RunContext, unit: Unit, suffix: str) -> Path:
    return ctx.folder("attack", unit.tier) / f"{unit.stem}{suffix}"


def _save_unit(ctx: RunContext, unit: Unit, result: AttackResult | dict) -> None:
    if isinstance(result, dict):
        text = json.dumps(result, default=float)
        write_atomic(_unit_path(ctx, unit, ".json"), lambda p: p.write_text(text))
        return
    arrays = {**{f"images::{k}": v for k, v in result.images.items()},
              **{f"recon::{k}": v for k, v in result.reconstructions.items()},
              **{f"budget::{k}": np.float64(v) for k, v in result.budget.items()}}

    def write(p: Path) -> None:
        with open(p, "wb") as fh:
            np.savez(fh, **arrays)
    write_atomic(_unit_path(ctx, unit, ".npz"), write)


def load_unit(ctx: RunContext, unit: Unit) -> AttackResult | dict | None:
    """A finished unit's result; None if it did not finish (or failed)."""
    if unit.label == INFORMATION:
        path = _unit_path(ctx, unit, ".json")
        return json.loads(path.read_text()) if path.is_file() else None
    path = _unit_path(ctx, unit, ".npz")
    if not path.is_file():
        return None
    with np.load(path, allow_pickle=False) as data:
        part = {k.split("::")[0]: {} for k in data.files}
        for k in data.files:
            group, name = k.split("::")
            part[group][name] = data[k]
    budget = {k: float(v) for k, v in part.get("budget", {}).items()}
    return AttackResult(unit.label, part.get("images", {}), part.get("recon", {}),
                        budget)


def failed_reason(ctx: RunContext, unit: Unit) -> str | None:
    path = _unit_path(ctx, unit, ".failed.json")
    return json.loads(path.read_text())["reason"] if path.is_file() else None


# -- the stage ----------------------------------------------------------------------

def attack(ctx: RunContext, executor: str = "ray") -> None:
    """Run every unit not yet finished (or failed); marks the stage done."""
    t0 = time.perf_counter()
    edges, cloud = read_checkpoints(ctx.path)
    observations = read_observations(ctx.path)
    todo = [u for u in units(ctx.ws, sorted(observations))
            if load_unit(ctx, u) is None and failed_reason(ctx, u) is None]
    total = len(units(ctx.ws, sorted(observations)))
    done = total - len(todo)
    ctx.progress("attack", done, total, f"{len(todo)} units to run "
                 f"({len(observations)} tiers)" if todo else "nothing left to run")
    if todo:
        run = _run_on_ray if executor == "ray" else _run_here
        run(ctx, todo, edges, cloud, observations, done, total)
    ctx.recorder.mark_stage("attack", time.perf_counter() - t0, units=total,
                            units_failed=sum(failed_reason(ctx, u) is not None
                                             for u in units(ctx.ws, sorted(observations))))


# The independent evaluation classifier is trained once per run and kept for resumes
# (and for a sweep's later points: simulator.sweep copies it where it would be the same).

def evaluator_path(run_dir: Path) -> Path:
    """Where a run directory keeps its evaluation classifier."""
    return run_dir / "stages" / "attack" / "evaluator.pt"


def _saved_evaluator(ctx: RunContext) -> dict[str, torch.Tensor] | None:
    path = evaluator_path(ctx.path)
    return torch.load(path, weights_only=True) if path.is_file() else None


def _keep_evaluator(ctx: RunContext, state: dict[str, torch.Tensor]) -> None:
    path = evaluator_path(ctx.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda p: torch.save(state, p))


def _finished(ctx: RunContext, unit: Unit, result: Any, done: int, total: int) -> None:
    _save_unit(ctx, unit, result)
    ctx.progress("attack", done, total, str(unit))


def _give_up(ctx: RunContext, unit: Unit, reason: str, done: int, total: int) -> None:
    # a grid point's failure names its setting; an unsearched one is recorded as before
    point = {"setting": setting_text(dict(unit.setting))} if unit.setting else {}
    text = json.dumps({"tier": unit.tier, "attack": unit.label, **point,
                       "reason": reason})
    write_atomic(_unit_path(ctx, unit, ".failed.json"), lambda p: p.write_text(text))
    ctx.recorder.record_failures([{"stage": "attack", "kind": "adversary",
                                   "tier": unit.tier, "attack": unit.label, **point,
                                   "reason": reason}])
    ctx.progress("fault", done, total, f"{unit} failed twice ({reason}): recorded as "
                 "failed; the other attacks continue")


def _run_here(ctx: RunContext, todo: list[Unit], edges: dict, cloud: dict,
              observations: dict, done: int, total: int) -> None:
    """In this process, one unit after another (the local engine)."""
    evaluator = _saved_evaluator(ctx)
    if evaluator is None:
        evaluator = train_evaluator(ctx.ws)
        _keep_evaluator(ctx, evaluator)
    for unit in todo:
        for attempt in range(2):
            try:
                result = _run_unit(ctx.ws, edges, cloud, evaluator, unit,
                                   observations[unit.tier], attempt)
            except Exception as err:   # as a Ray task's error: retried once, then failed
                reason = str(err) if isinstance(err, SimulatedCrash) else _line(err)
                if attempt == 0:
                    ctx.progress("fault", done, total, f"{unit}: {reason}; retrying")
                    continue
                _give_up(ctx, unit, reason, done, total)
                break
            done += 1
            _finished(ctx, unit, result, done, total)
            break


def _run_on_ray(ctx: RunContext, todo: list[Unit], edges: dict, cloud: dict,
                observations: dict, done: int, total: int) -> None:
    """Units as Ray tasks of one CPU each; finished units are saved as they arrive.

    The evaluation classifier trains as a task of its own while the first units run
    (they need it only to score what they reconstructed); the information units, short
    and the first to need it, go last, where they fill the cores the long units leave.
    """
    import ray

    from simulator.engine.ray_cloud import init_ray
    init_ray(ctx.ws.scenario.ray)
    ctx.recorder.note_ray_session()
    ws_ref = ray.put(ctx.ws)
    saved = _saved_evaluator(ctx)
    evaluating = None
    if saved is not None:
        evaluator_ref = ray.put(saved)
    else:
        evaluating = evaluator_ref = ray.remote(num_cpus=1, max_retries=1)(
            _ray_evaluator).remote(ws_ref)
    refs = {k: ray.put(v) for k, v in (("edges", edges), ("cloud", cloud))}
    obs_refs = {t: ray.put(o) for t, o in observations.items()}
    task = ray.remote(num_cpus=1, max_retries=0)(_ray_unit)

    def submit(unit: Unit, attempt: int) -> Any:
        # the evaluator's ref travels in a list, so Ray does not wait for it to start
        return task.remote(ws_ref, refs["edges"], refs["cloud"], [evaluator_ref], unit,
                           obs_refs[unit.tier], attempt)

    order = sorted(todo, key=lambda u: u.label == INFORMATION)
    pending = {submit(u, 0): (u, 0) for u in order}
    while pending:
        if evaluating is not None and ray.wait([evaluating], timeout=0)[0]:
            _keep_evaluator(ctx, ray.get(evaluating))   # a failure fails the stage
            evaluating = None
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        for ref in ready:
            unit, attempt = pending.pop(ref)
            try:
                result = ray.get(ref)
            except (ray.exceptions.WorkerCrashedError, ray.exceptions.RayTaskError,
                    ray.exceptions.RayActorError) as err:
                reason = _why(err)
                if attempt == 0:
                    ctx.progress("fault", done, total, f"{unit}: {reason}; retrying on "
                                 "a fresh worker")
                    pending[submit(unit, 1)] = (unit, 1)
                else:
                    _give_up(ctx, unit, reason, done, total)
                continue
            done += 1
            _finished(ctx, unit, result, done, total)


def _why(err: BaseException) -> str:
    """One line for a failed unit (Ray's own text carries a traceback)."""
    import ray
    if isinstance(err, ray.exceptions.WorkerCrashedError):
        return "its worker process died"
    cause = getattr(err, "cause", None)
    if cause is not None:
        return _line(cause)
    return str(err).strip().splitlines()[-1][:300]


def _line(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".splitlines()[0][:300]
