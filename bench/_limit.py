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
    kit, steps = ModelKit(ws), {}
    for tier in kit.tiers:
        train, edge, cloud = train_step(kit, tier)

        def serve(x, y, tier=tier, edge=edge, cloud=cloud):
            with torch.no_grad():
                cloud(edge(x), tier)

        steps[tier] = {"train": (train, True, edge, cloud),
                       "infer": (serve, False, edge, cloud)}
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
