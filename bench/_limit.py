"""The limit bench/fleet.py holds runs against: the scenario's own edge + cloud models
of each rung trained and served at a saturating batch in one process, and a run's
efficiency against it (samples/s it reached over samples/s the limit allows)."""

from __future__ import annotations

import time

# the batches the limit tries per phase: training at 1,024 never beat 256 on one thread
# and took 10 s a pass (three calls of 2.5 s)
BATCHES = {"train": (64, 256), "infer": (64, 256, 1024)}


def reference(sc, seconds: float = 1.0, repeats: int = 2) -> dict:
    """Per rung: samples/s of its edge + the cloud, trained and served, at the best of
    :data:`BATCHES` (the saturating batch), in this one process. Each setting's
    rate is the fastest of ``repeats`` passes over every rung, so a short slow spell
    lowers one pass, not one rung's limit."""
    import torch

    from simulator.engine.workspace import ModelKit
    from simulator.run import build_workspace
    if sc.assignment is not None:   # the models do not depend on the fleet's size
        sc = sc.model_copy(update={"devices": min(sc.devices, 200)})
    ws = build_workspace(sc)
    kit = ModelKit(ws)
    steps = {tier: rung_steps(kit, tier) for tier in kit.tiers}
    best: dict[str, dict[str, tuple[float, int]]] = {t: {} for t in steps}
    for _ in range(repeats):
        for tier, phases in steps.items():
            for phase, (step, training, *models) in phases.items():
                for m in models:   # the mode once per setting, not inside the timed step
                    m.train(training)
                for b in BATCHES[phase]:
                    best[tier][phase] = max(best[tier].get(phase, (0.0, b)),
                                            rate(step, ws, b, seconds))
    return {"threads": torch.get_num_threads(), "rates": best}


def rung_steps(kit, tier: str) -> dict:
    """Per phase, ``(step(x, y), training, edge, cloud)`` of one rung's fresh models:
    a training step (:func:`train_step`) and serving (edge + cloud forward)."""
    import torch
    train, edge, cloud = train_step(kit, tier)

    def serve(x, y):
        with torch.no_grad():
            cloud(edge(x), tier)
    return {"train": (train, True, edge, cloud), "infer": (serve, False, edge, cloud)}


class PairedLimit:
    """The limit measured inside a run's own process, between its rounds.

    Held against a limit from other processes, a run pays for the machine's drift
    twice: the limit's best window comes from the fastest minute and the fastest
    process. Here every window runs in the run's process, just before each training
    round, when training ends, and before and after inference: each rung's fresh
    models at its saturating batch (``batches``, from :func:`reference`), one warm-up
    call and then ``seconds`` of calls. The windows' own time is recorded per stage
    (``paused``) and taken out of the stage's seconds. A rung's paired rate is the
    harmonic mean over its windows (samples over summed seconds per sample), so a
    run is held against the limit of the minutes it ran in.
    """

    def __init__(self, batches: dict[str, dict[str, int]], seconds: float = 0.3) -> None:
        self.batches, self.seconds = batches, seconds
        self.windows: dict[str, list[dict[str, float]]] = {"train": [], "infer": []}
        self.paused = {"train": 0.0, "infer": 0.0}

    def window(self, phase: str, stage: str, ws, kit) -> None:
        """One window of ``phase`` (every rung), its time charged to ``stage``."""
        t0, rates = time.perf_counter(), {}
        for tier in kit.tiers:
            step, training, *models = rung_steps(kit, tier)[phase]
            for m in models:
                m.train(training)
            rates[tier] = rate(step, ws, self.batches[tier][phase], self.seconds)[0]
        self.windows[phase].append(rates)
        self.paused[stage] += time.perf_counter() - t0

    def transport(self):
        """A ``run_scenario`` transport factory: the in-process engine, windowed."""
        from simulator.engine.local import run_locally
        from simulator.engine.workspace import ModelKit

        def factory(ws, cloud_state, body, debug: bool = False):
            kit = ModelKit(ws)

            def windowed(transport) -> None:
                train, infer = transport.train, transport.infer

                def paired_train(jobs):
                    self.window("train", "train", ws, kit)
                    return train(jobs)

                def paired_infer(jobs):
                    if not self.windows["infer"]:      # training is over
                        self.window("train", "infer", ws, kit)
                    self.window("infer", "infer", ws, kit)
                    out = infer(jobs)
                    self.window("infer", "infer", ws, kit)
                    return out
                transport.train, transport.infer = paired_train, paired_infer
                body(transport)
            return run_locally(ws, cloud_state, windowed, debug)
        return factory

    def summary(self) -> dict:
        """``{"rates": {tier: {phase: (samples/s, batch)}}, "paused": ..., "windows":
        ...}``: the rates in :func:`reference`'s layout, for :func:`efficiency`."""
        rates: dict[str, dict[str, tuple[float, int]]] = {}
        for phase, windows in self.windows.items():
            for tier in windows[0] if windows else ():
                mean = len(windows) / sum(1.0 / w[tier] for w in windows)
                rates.setdefault(tier, {})[phase] = (mean, self.batches[tier][phase])
        return {"rates": rates, "paused": self.paused,
                "windows": {p: len(w) for p, w in self.windows.items()}}


def train_step(kit, tier: str):
    """``(train(x, y), edge, cloud)``: one training step of the tier's edge + the cloud
    (forward, cross-entropy, backward, the scenario's optimiser), fresh models."""
    import torch.nn.functional as F

    from simulator.engine.workspace import make_optimizer
    edge, cloud = kit.edge(tier), kit.cloud()
    opt = make_optimizer([*edge.parameters(), *cloud.parameters()],
                         kit.ws.scenario.training.optimizer)

    def train(x, y):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(cloud(edge(x), tier), y).backward()
        opt.step()
    return train, edge, cloud


def fastest(references: list[dict]) -> dict:
    """Per rung and phase, the fastest of several reference processes' rates."""
    rates = {t: {p: max(r["rates"][t][p] for r in references) for p in phases}
             for t, phases in references[0]["rates"].items()}
    return {"threads": references[0]["threads"], "rates": rates}


def rate(step, ws, batch: int, seconds: float) -> tuple[float, int]:
    """(samples/s, batch) of ``step`` on real images, after one warm-up call."""
    import numpy as np
    import torch
    idx = np.arange(batch) % len(ws.private_y)
    x, y = torch.from_numpy(ws.private_x[idx]), torch.from_numpy(ws.private_y[idx])
    return timed(lambda: step(x, y), batch, seconds), batch


def efficiency(row: dict, reference: dict, phase: str) -> float:
    """Useful samples/s of ``phase`` over the reference's samples/s for the same mix
    of rungs (time the reference would need / time the phase took)."""
    samples = row[f"{phase}_samples"]
    ideal = sum(n / reference["rates"][t][phase][0] for t, n in samples.items()
                if t and n)
    return ideal / row[f"{phase}_s"]


def timed(step, batch: int, seconds: float = 1.0) -> float:
    """Samples/s of ``step()`` (``batch`` samples a call) after one warm-up call."""
    step()
    calls, t0 = 0, time.perf_counter()
    while calls < 3 or time.perf_counter() - t0 < seconds:
        step()
        calls += 1
    return calls * batch / (time.perf_counter() - t0)
