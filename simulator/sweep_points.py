"""Running a sweep's points: one at a time in this process, or as Ray tasks.

Each point runs the local engine (:func:`run_point`): a Flower simulation cannot be
nested inside a Ray task, so with ``parallel > 1`` every point is one Ray task (one CPU)
and the driver relays the points' own progress lines. A point that raises is recorded
as failed and the others still run; an interrupt stops the sweep.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from simulator.loading import ScenarioError, validate_scenario
from simulator.scenario import Scenario
from simulator.sweep_folder import point_status

if TYPE_CHECKING:
    from simulator.sweep import SweepPoint

__all__ = ["RESUMABLE", "attempt", "labelled", "run_on_ray", "run_point"]

Progress = Callable[[str, int, int, str], None]
Runner = Callable[[Scenario, Path], Any]
Done = Callable[["SweepPoint", str, "str | None"], None]

# A point stopped on the way (the sweep was interrupted or killed) continues from its
# checkpoints and finished attack units; a failed one starts over (history/ keeps it).
RESUMABLE = ("running", "interrupted")


def run_point(scenario: Scenario, run_dir: Path,
              progress: Progress | None = None) -> Path:
    """The default runner: one point in-process with the local engine, continuing
    where an interrupted attempt stopped."""
    from simulator.engine.local import run_locally
    from simulator.run import run_scenario
    return run_scenario(scenario, run_dir, progress, transport_factory=run_locally,
                        resume=point_status(run_dir) in RESUMABLE)


def labelled(say: Progress, label: str) -> Progress:
    """A point's own progress (rounds, attack units), its lines named by the point:
    ``[p006 attack] 5/12 ...``."""
    return lambda phase, done, total, note="": say(f"{label} {phase}", done, total, note)


def attempt(runner: Runner, scenario: Scenario, run_dir: Path) -> tuple[str, str | None]:
    """Run one point: ``("complete", None)`` or ``("failed", "Type: message")``.

    Exceptions only: an interrupt stops the sweep (finished points are on disk).
    """
    try:
        runner(scenario, run_dir)
    except Exception as err:  # noqa: BLE001  (any failure of one point is recorded)
        return "failed", f"{type(err).__name__}: {err}"
    return "complete", None


def _ray_attempt(runner: Runner | None, raw: dict[str, Any], run_dir: str,
                 relay: Any = None) -> tuple[str, str | None]:
    """One point inside a Ray task: plain data travels, the scenario is rebuilt here;
    the default runner's progress goes to the driver through ``relay`` (a Ray queue)."""
    try:
        scenario = validate_scenario(raw)
    except ScenarioError as err:
        return "failed", f"ScenarioError: {err}"
    if runner is None:
        label = Path(run_dir).name

        def progress(phase: str, done: int, total: int, note: str = "") -> None:
            relay.put((label, phase, done, total, note))

        runner = functools.partial(run_point,
                                   progress=None if relay is None else progress)
    return attempt(runner, scenario, Path(run_dir))


_RELAY_S = 2.0   # how often the driver prints what the running points reported


def _relay(queue: Any, say: Progress) -> None:
    if queue is not None and queue.qsize():
        for label, *line in queue.get_nowait_batch(queue.qsize()):
            labelled(say, label)(*line)


def run_on_ray(todo: list[SweepPoint], folder: Path, workers: int, runner: Runner | None,
                done: Done, prepare: Callable[[SweepPoint], None], say: Progress) -> None:
    import ray
    started = not ray.is_initialized()
    if started:  # a fresh local instance, as in simulator.engine.ray_cloud.init_ray
        import logging
        path = os.pathsep.join(p for p in sys.path if p)
        # the behaviour Ray 2.55 announces in a FutureWarning on every start: set it
        quiet = {"RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO": "0"}
        os.environ.update(quiet)
        ray.init(address="local", num_cpus=workers, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING,
                 runtime_env={"env_vars": {"PYTHONPATH": path, **quiet}})
    relay = None
    try:
        if runner is None:   # the points' own progress lines, relayed to this console
            from ray.util.queue import Queue
            relay = Queue(actor_options={"num_cpus": 0})   # never waits for a CPU
        task = ray.remote(num_cpus=1)(_ray_attempt)
        queue, pending = list(todo), {}
        while queue or pending:
            while queue and len(pending) < workers:  # a running Ray may have more CPUs
                p = queue.pop(0)
                prepare(p)
                pending[task.remote(runner, p.raw, str(folder / p.label), relay)] = p
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=_RELAY_S)
            _relay(relay, say)
            for ref in ready:
                try:
                    status, error = ray.get(ref)
                except Exception as err:  # noqa: BLE001  (a crashed worker: one point)
                    status, error = "failed", f"{type(err).__name__}: {err}"
                done(pending.pop(ref), status, error)
    finally:
        if relay is not None:
            relay.shutdown()
        if started:
            ray.shutdown()
