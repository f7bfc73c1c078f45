"""Run a scenario end to end, as the stages of :mod:`simulator.stages` over its run
directory: train -> deploy -> infer -> attack -> records."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from simulator.data import DATASETS, make_splits
from simulator.engine.coordinator import Transport
from simulator.engine.workspace import ModelKit, Workspace, long_lived
from simulator.population import Population, expand_population
from simulator.records import RunRecorder, new_run_dir
from simulator.scenario import Scenario, plugin_params
from simulator.seeding import derive_seed, rng
from simulator.stages import STAGES, RunContext, attack, deploy, infer, records, train

__all__ = ["attack_run", "build_workspace", "resume_run", "run_scenario"]

Progress = Callable[[str, int, int, str], None]


def build_workspace(scenario: Scenario) -> Workspace:
    """Load the dataset, make disjoint splits and expand the device population."""
    spec = scenario.dataset
    dataset = DATASETS.create(spec.name, plugin_params(spec))
    train, test = dataset.load("train"), dataset.load("test")
    s = scenario.splits
    splits = make_splits(train, test, auxiliary=s.auxiliary, evaluation=s.evaluation,
                         seed=derive_seed(scenario.seed, "splits"))
    private, provider = _carve_provider(splits.private, s.provider, scenario.seed)
    index = private.index if private.index is not None else np.arange(len(private))
    ws = Workspace(scenario, private.num_classes, dataset.normalization(),
                   private.x.numpy(), private.y.numpy(), np.asarray(index),
                   provider.x.numpy(), provider.y.numpy(), Population((), ()),
                   splits.auxiliary.x.numpy(), splits.auxiliary.y.numpy(),
                   splits.evaluation.x.numpy(), splits.evaluation.y.numpy())
    # With `assignment` the budgets pick each device's rung: the rungs' costs need
    # only the models and the image shape, not the devices.
    costs = ModelKit(ws).rung_costs() if scenario.assignment is not None else None
    return replace(ws, population=expand_population(scenario, ws.private_y, costs))


def _carve_provider(private, share: float | int, seed: int):
    n = len(private)
    k = int(round(share * n)) if isinstance(share, float) else int(share)
    if k >= n:
        raise ValueError(f"splits.provider takes {k} of the {n} private samples; "
                         "leave some for the devices")
    order = rng(seed, "provider-split").permutation(n)
    return private.subset(np.sort(order[k:])), private.subset(np.sort(order[:k]))


def run_scenario(scenario: Scenario, out: str | Path | None = None,
                 progress: Progress | None = None,
                 transport_factory: Callable[..., Any] | None = None,
                 resume: bool = False, debug: bool = False) -> Path:
    """Run ``scenario`` stage by stage and return its run directory.

    Parameters
    ----------
    out
        The run directory; default ``<output_dir>/<name>`` (never overwriting a run).
    transport_factory
        ``factory(ws, cloud_state, body, debug=...)`` replacing Flower + Ray (the local
        engine of tests and benchmarks; attacks then run in this process too).
    resume
        ``out`` is an interrupted run: skip its finished stages, continue the rest.
    debug
        Keep Flower's and Ray's own logs (tracebacks of dead processes).
    """
    progress = progress or (lambda *a: None)
    if resume:
        path = Path(out)
        if json.loads((path / "manifest.json").read_text()).get("status") == "complete":
            progress("run", len(STAGES), len(STAGES), "already complete: nothing to do")
            return path
    else:
        path = Path(out) if out else new_run_dir(scenario.output_dir, scenario.name)
    recorder = RunRecorder(path, scenario, resume=resume)
    if resume:
        from simulator.reaper import reap_orphans
        ended = reap_orphans(recorder.manifest.get("ray_sessions", []))
        if ended:
            progress("run", 0, len(STAGES), f"ended {ended} Ray processes left behind by "
                     "the killed run")
    try:
        _run(scenario, recorder, progress, transport_factory, debug)
    except (KeyboardInterrupt, SystemExit) as err:
        # RunInterrupted, what Ray's waits turn it into, or the process told to exit (a
        # sweep's Ray worker when its driver stops): an interruption, so the run resumes
        recorder.finish("interrupted", error=_exit_reason(err))
        raise
    except BaseException as err:
        recorder.finish("failed", error=f"{type(err).__name__}: {err}")
        raise
    recorder.finish()
    return path


def _exit_reason(err: BaseException) -> str | None:
    """What an interrupted manifest notes: a SystemExit's code (a signal says nothing)."""
    return f"SystemExit: {err}" if isinstance(err, SystemExit) else None


def resume_run(path: str | Path, progress: Progress | None = None,
               debug: bool = False) -> Path:
    """Continue the run in ``path`` (killed, interrupted or failed) with its own scenario."""
    from simulator.loading import validate_scenario
    path = Path(path)
    if not (path / "manifest.json").is_file() or not (path / "scenario.yaml").is_file():
        raise FileNotFoundError(f"{path} is not a run directory (no manifest.json and "
                                "scenario.yaml): give a directory written by `siftsim run`")
    raw = yaml.safe_load((path / "scenario.yaml").read_text())
    scenario = validate_scenario(raw, source=str(path / "scenario.yaml"))
    return run_scenario(scenario, path, progress, resume=True, debug=debug)


def _run(scenario: Scenario, recorder: RunRecorder, progress: Progress,
         transport_factory: Callable[..., Any] | None, debug: bool) -> None:
    t0 = time.perf_counter()
    ws = build_workspace(scenario)
    ctx = RunContext(ws, ModelKit(ws), recorder, progress, debug)
    recorder.mark_stage("setup", time.perf_counter() - t0, devices=len(ws.population.devices),
                        nodes=len(ws.population.nodes), private_samples=len(ws.private_y))
    with long_lived():   # the workspace and models: no garbage collector scans them
        _stages(ctx, transport_factory, debug)


def _stages(ctx: RunContext, transport_factory: Callable[..., Any] | None,
            debug: bool) -> None:
    ws, recorder, progress, scenario = ctx.ws, ctx.recorder, ctx.progress, ctx.ws.scenario
    state, extra = train.load_state(ctx)
    if not recorder.stage_done("train") and state.next_round:
        progress("run", 1, len(STAGES), f"resuming training after round {state.next_round}")
    if scenario.training.mode == "centralized" and not recorder.stage_done("train"):
        state = train.run_centralized(ctx, state, extra)

    def body(transport: Transport) -> None:
        nonlocal state
        recorder.note_ray_session()
        if not recorder.stage_done("train"):
            state = train.run_split(ctx, transport, state, extra)
        if recorder.stage_done("deploy"):
            edges, cloud = deploy.deployed(ctx)
        else:
            edges, cloud = deploy.deploy(ctx, state)
        infer.infer(ctx, transport, state, edges, cloud)

    if not recorder.stage_done("infer"):
        if transport_factory is None:
            from simulator.engine.flower import run_on_flower
            factory: Callable[..., Any] = run_on_flower
        else:
            factory = transport_factory
        factory(ws, state.cloud_state, body, debug=debug)
    if scenario.adversary.enabled and scenario.adversary.attacks:
        if not recorder.stage_done("attack"):
            attack.attack(ctx, executor="ray" if transport_factory is None else "local")
        if not recorder.stage_done("records"):
            records.records(ctx)


def attack_run(path: str | Path, overrides: list[str] | None = None,
               progress: Progress | None = None, executor: str = "ray") -> Path:
    """Rerun the curious cloud on a finished run directory (nothing is retrained).

    ``overrides`` (``adversary.attacks=[...]``, ...) change the resolved scenario; the
    previous attack units and leakage outputs move to ``history/``. This is the run's
    own attack stage, started again.
    """
    from simulator.loading import apply_override, validate_scenario
    path = Path(path)
    if not (path / "observations" / "index.parquet").is_file():
        raise FileNotFoundError(f"{path} holds no observation log (observations/"
                                "index.parquet): give a directory written by `siftsim run`")
    raw = yaml.safe_load((path / "scenario.yaml").read_text())
    for item in overrides or []:
        apply_override(raw, item)
    raw.setdefault("adversary", {})["enabled"] = True
    raw.pop("faults", None)   # injected faults belong to the original run
    scenario = validate_scenario(raw, source=str(path / "scenario.yaml"))
    recorder = RunRecorder(path, scenario, resume=True)
    units = path / "stages" / "attack"
    if units.is_dir():
        folder = path / "history" / time.strftime("%Y%m%d-%H%M%S")
        folder.mkdir(parents=True, exist_ok=True)
        units.rename(folder / "attack-units")
    for stage in ("attack", "records"):
        recorder.forget_stage(stage)
    ws = build_workspace(scenario)
    ctx = RunContext(ws, ModelKit(ws), recorder, progress or (lambda *a: None))
    try:
        attack.attack(ctx, executor=executor)
        records.records(ctx)
    except (KeyboardInterrupt, SystemExit) as err:   # see run_scenario
        recorder.finish("interrupted", error=_exit_reason(err))
        raise
    recorder.finish()
    return path
