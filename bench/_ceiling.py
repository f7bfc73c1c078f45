"""Models-only ceilings of bench/fleet.py: what cohorts of devices reach against the
limit (:mod:`_limit`) with nothing outside the models (``--cohort``, ``--ceiling``)."""

from __future__ import annotations

from _limit import BATCHES, timed, train_step


def _models(scenario: str, overrides: list[str]):
    """The scenario's workspace and model kit, with one torch thread."""
    import torch

    from simulator.engine.workspace import ModelKit
    from simulator.loading import load_scenario
    from simulator.run import build_workspace
    torch.set_num_threads(1)
    ws = build_workspace(load_scenario(scenario, overrides))
    return ws, ModelKit(ws)


def _steps(ws, kit, tier: str, cohorts: list[int]):
    """The limit's steps for ``tier`` (its edge + the cloud at each batch the limit
    tries, :data:`_limit.BATCHES`) and, per cohort size, one cohort step as the engine
    runs it: the cohort's edges (stacked or one module each, as :func:`cohort_edges`
    picks), the cloud on their concatenated features, backward through both,
    optimiser steps."""
    import torch
    import torch.nn.functional as F

    from simulator.engine.cohort_edges import cohort_edges
    from simulator.engine.workspace import make_optimizer
    b, opt_cfg = ws.scenario.training.batch_size, ws.scenario.training.optimizer
    idx = [i % len(ws.private_y) for i in range(max(*BATCHES["train"], b * max(cohorts)))]
    x, y = torch.from_numpy(ws.private_x[idx]), torch.from_numpy(ws.private_y[idx])
    train, edge, cloud = train_step(kit, tier)
    edge.train(), cloud.train()
    initial = kit.initial_states()[0][tier]

    def limit(batch: int):
        return lambda: train(x[:batch], y[:batch])

    def cohort_step(n: int):
        edges = cohort_edges(kit, tier, initial, dict.fromkeys(range(n), b), opt_cfg,
                             lambda *_: 0)
        copy = kit.cloud().train()
        copy_opt = make_optimizer(copy.parameters(), opt_cfg)
        xs = {d: x[b * d:b * (d + 1)] for d in range(n)}

        def step():
            zs = edges.forward(0, xs, list(xs))
            z = torch.cat(list(zs.values())).detach().requires_grad_()
            copy_opt.zero_grad(set_to_none=True)
            F.cross_entropy(copy(z, tier), y[:len(z)]).backward()
            copy_opt.step()
            edges.backward(0, xs, zs, dict(zip(zs, z.grad.split(b))), 1.0)
        return step, type(edges).__name__

    return ({batch: limit(batch) for batch in BATCHES["train"]},
            {n: cohort_step(n) for n in cohorts})


def _rates(limits: dict, steps: dict, b: int) -> tuple[float, dict[int, float]]:
    """Samples/s of the limit (its best batch) and of each cohort step, alternated
    three times (best of each: a shared machine's speed drifts)."""
    best_limit, best = 0.0, dict.fromkeys(steps, 0.0)
    for _ in range(3):
        for batch, limit in limits.items():
            best_limit = max(best_limit, timed(limit, batch))
        for n, (step, _) in steps.items():
            best[n] = max(best[n], timed(step, n * b))
    return best_limit, best


def cohort_ceiling(scenario: str, cohort: int, overrides: list[str]) -> None:
    """Per rung: one cohort step of ``cohort`` devices against the limit's step at a
    saturating batch, models only: the efficiency a cohort of that size could reach
    with nothing outside the models."""
    ws, kit = _models(scenario, [*overrides, "devices=200"])
    b = ws.scenario.training.batch_size
    print(f"cohort of {cohort} devices x {b} images, 1 torch thread (samples/s)")
    for tier in kit.tiers:
        limit, steps = _steps(ws, kit, tier, [cohort])
        best_limit, best = _rates(limit, steps, b)
        print(f"  {tier:<12} ({steps[cohort][1]}) limit {best_limit:5.0f}  cohort step "
              f"{best[cohort]:5.0f}  ceiling {best[cohort] / best_limit:.0%}", flush=True)


def planned_ceiling(scenario: str, sizes: list[int], overrides: list[str]) -> None:
    """The models-only ceiling of a fleet run at each size: the cohorts its rounds
    plan (every node-round's devices, :func:`planned_cohorts`), each rung's cohort
    steps at those sizes against its limit, weighted by the samples each cohort
    trains. What the training stage's efficiency could reach with nothing outside the
    models; what a run reaches below it is the engine's."""
    from simulator.engine.coordinator import planned_cohorts
    for n in sizes:
        ws, kit = _models(scenario, [*overrides, f"devices={n}"])
        b, steps_per_round = ws.scenario.training.batch_size, ws.scenario.training.local_steps
        sizes_of: dict[str, list[int]] = {}
        for rnd in planned_cohorts(ws, kit):
            for node, ids in rnd.items():
                sizes_of.setdefault(ws.population.node_tier(node), []).append(len(ids))
        print(f"{n} devices: cohort steps at the planned sizes x {b} images, 1 torch "
              "thread (samples/s)", flush=True)
        ideal = models = 0.0
        for tier, cohorts in sizes_of.items():
            limit, steps = _steps(ws, kit, tier, sorted(set(cohorts)))
            best_limit, best = _rates(limit, steps, b)
            samples = sum(cohorts) * b * steps_per_round
            ideal += samples / best_limit
            took = sum(c * b * steps_per_round / best[c] for c in cohorts)
            models += took
            layouts = sorted({layout for _, layout in steps.values()})
            print(f"  {tier:<12} cohorts {min(cohorts)}-{max(cohorts)} devices "
                  f"({', '.join(layouts)}), {samples} samples: limit {best_limit:5.0f}  "
                  f"cohort steps {samples / took:5.0f}  ceiling "
                  f"{samples / took / best_limit:.0%}", flush=True)
        print(f"  models-only ceiling of training at {n} devices: {ideal / models:.1%} "
              "of the limit", flush=True)
