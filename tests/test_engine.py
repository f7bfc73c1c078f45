"""Split training and inference: the same arithmetic in-process and through Flower + Ray."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from simulator.engine.cloud import Cloud, _group
from simulator.engine.coordinator import TrainState, run_split_training, sample_round
from simulator.engine.local import LocalTransport, run_locally
from simulator.engine.workspace import ModelKit
from simulator.loading import validate_scenario
from simulator.run import build_workspace, run_scenario
from simulator.seeding import derive_seed, seeded
from strategies.defenses import DEFENSES


def _quiet(*_args):
    return None


def test_split_rounds_lower_the_loss(smoke_raw):
    smoke_raw["training"].update(rounds=6, fraction=1.0)
    ws = build_workspace(validate_scenario(smoke_raw))
    kit = ModelKit(ws)
    edges, cloud_state = kit.initial_states()
    transport = LocalTransport(ws, Cloud(ws, cloud_state))
    outcome = run_split_training(ws, kit, transport, TrainState.initial(ws, edges, cloud_state),
                                 _quiet)
    rounds = pd.DataFrame(outcome.rounds).groupby("round")["loss"].mean()
    assert rounds.iloc[-1] < 0.8 * rounds.iloc[0]
    assert all(outcome.participation[d] == 6 for d in outcome.participation)
    # the tier edges really changed, and each tier has its own
    fresh, _ = kit.initial_states()
    for tier, state in outcome.edge_states.items():
        changed = [not torch.equal(state[k], fresh[tier][k]) for k in state]
        assert any(changed), tier


def test_round_sampling_respects_fraction_and_availability(smoke_raw):
    smoke_raw["training"]["fraction"] = 0.5
    smoke_raw["tiers"][0]["profile"] = {"availability": 0.5}
    ws = build_workspace(validate_scenario(smoke_raw))
    sizes = {"small": [], "large": []}
    for rnd in range(40):
        chosen = sample_round(ws, rnd)
        for node, ids in chosen.items():
            sizes[ws.population.node_tier(node)].append(len(ids))
    per_round_large = np.mean([sum(v for v in sizes["large"])]) / 40
    assert per_round_large == pytest.approx(2.0)  # ceil(0.5 * 3), always available
    assert 0 < np.sum(sizes["small"]) / 40 <= 2.0


def test_local_runs_are_deterministic(smoke_raw, tmp_path):
    sc = validate_scenario(smoke_raw)
    a = run_scenario(sc, tmp_path / "a", transport_factory=run_locally)
    b = run_scenario(sc, tmp_path / "b", transport_factory=run_locally)
    pd.testing.assert_frame_equal(pd.read_parquet(a / "devices.parquet"),
                                  pd.read_parquet(b / "devices.parquet"))
    np.testing.assert_array_equal(np.load(a / "observations" / "small.npy"),
                                  np.load(b / "observations" / "small.npy"))


@pytest.mark.slow
def test_flower_run_matches_local_and_writes_the_run_directory(smoke_raw, tmp_path):
    sc = validate_scenario(smoke_raw)
    local = run_scenario(sc, tmp_path / "local", transport_factory=run_locally)
    flower = run_scenario(sc, tmp_path / "flower")
    for name in ("manifest.json", "scenario.yaml", "devices.parquet", "devices.csv",
                 "tiers.parquet", "tiers.csv", "rounds.parquet", "checkpoints/cloud.pt",
                 "checkpoints/edge_small.pt", "observations/index.parquet"):
        assert (flower / name).is_file(), name
    manifest = json.loads((flower / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["seed"] == 3
    assert set(manifest["stages"]) == {"setup", "train", "deploy", "infer"}
    devices = pd.read_parquet(flower / "devices.parquet")
    pd.testing.assert_frame_equal(devices, pd.read_parquet(local / "devices.parquet"))
    assert devices["accuracy"].mean() > 0.5  # 4 classes: chance is 0.25
    state = torch.load(flower / "checkpoints" / "edge_small.pt", weights_only=True)
    assert isinstance(state, dict) and state
    index = pd.read_parquet(flower / "observations" / "index.parquet")
    assert set(index["phase"]) == {"training", "inference"}
    inference = index[index["phase"] == "inference"]
    assert len(inference) == devices["n_test"].sum()


def test_a_run_keeps_its_setup_out_of_the_collector_and_gives_it_back(smoke_raw, tmp_path):
    import gc

    from simulator.stages import train
    seen = []
    real = train.run_split

    def watched(ctx, *args):
        # the workspace built in setup is frozen: full collections no longer scan it
        devices = ctx.ws.population.devices
        seen.append((gc.get_freeze_count(),
                     not any(o is devices for o in gc.get_objects())))   # frozen
        return real(ctx, *args)

    smoke_raw["training"]["rounds"] = 1
    before = gc.get_freeze_count()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "run_split", watched)
        run_scenario(validate_scenario(smoke_raw), tmp_path / "r",
                     transport_factory=run_locally)
    assert seen and seen[0][0] > before and seen[0][1]
    assert gc.get_freeze_count() == 0   # a later run (a sweep's next point) frees it all


def test_centralized_provider_training_deploys_to_every_tier(smoke_raw, tmp_path):
    smoke_raw["splits"]["provider"] = 0.4
    smoke_raw["training"].update(mode="centralized", epochs=6)
    path = run_scenario(validate_scenario(smoke_raw), tmp_path / "c",
                        transport_factory=run_locally)
    devices = pd.read_parquet(path / "devices.parquet")
    assert (devices["rounds_trained"] == 0).all()  # devices never trained
    assert devices.groupby("tier")["accuracy"].mean().min() > 0.5  # chance 0.25
    rounds = pd.read_parquet(path / "rounds.parquet")
    assert len(rounds) == 6 and rounds["loss"].iloc[-1] < rounds["loss"].iloc[0]


def test_centralized_without_provider_data_is_a_clear_error(smoke_raw, tmp_path):
    smoke_raw["training"]["mode"] = "centralized"
    with pytest.raises(ValueError, match="splits.provider"):
        run_scenario(validate_scenario(smoke_raw), tmp_path / "c",
                     transport_factory=run_locally)
    assert '"status": "failed"' in (tmp_path / "c" / "manifest.json").read_text()


class _CountingPenalty:
    """A defense stand-in whose edge loss is sum(z^2) and counts its calls."""

    calls = 0

    def edge_loss(self, x, z, edge):
        self.calls += 1
        return z.pow(2).sum()


@pytest.mark.parametrize("weight", [0.0, 0.5, 1.0])
def test_device_step_scales_the_edge_loss_by_the_warmup_weight(weight):
    from simulator.engine.cohort_edges import device_step
    torch.manual_seed(0)
    edge = torch.nn.Linear(3, 2)
    x = torch.randn(4, 3)
    grad_z = torch.randn(4, 2)
    penalty = _CountingPenalty()
    opt = torch.optim.SGD(edge.parameters(), lr=0.0)  # keep the weights: compare grads
    z = edge(x)
    device_step(penalty, edge, opt, x, z, grad_z, weight)
    got = edge.weight.grad.clone()
    expected = torch.autograd.grad(edge(x), edge.weight, grad_z)[0]
    if weight > 0:
        z2 = edge(x)
        expected = expected + weight * torch.autograd.grad(z2.pow(2).sum(), edge.weight)[0]
    assert torch.allclose(got, expected, atol=1e-6)
    assert penalty.calls == (1 if weight > 0 else 0)  # held-off terms are not computed


def test_edge_loss_warmup_schedule_is_recorded_per_round(smoke_raw):
    smoke_raw["training"].update(rounds=4, edge_loss_warmup={"hold": 1, "ramp": 1})
    smoke_raw["tiers"][0]["defense"] = {"name": "nopeek"}
    ws = build_workspace(validate_scenario(smoke_raw))
    kit = ModelKit(ws)
    edges, cloud_state = kit.initial_states()
    outcome = run_split_training(ws, kit, LocalTransport(ws, Cloud(ws, cloud_state)),
                                 TrainState.initial(ws, edges, cloud_state), _quiet)
    weights = pd.DataFrame(outcome.rounds).groupby("round")["edge_loss_weight"].first()
    assert weights.tolist() == [0.0, 0.5, 1.0, 1.0]


# -- cohort speed paths: the same arithmetic as one device at a time ----------------------

def _cohort(smoke_raw, defense="none", optimizer=None, batch_size=16):
    from simulator.engine.device import TrainJob
    smoke_raw["tiers"][0].update(count=6, defense={"name": defense})
    smoke_raw["training"].update(batch_size=batch_size, local_steps=3)
    smoke_raw["partition"] = {"scheme": "dirichlet", "alpha": 1.0, "min_samples": 4}
    if optimizer:
        smoke_raw["training"]["optimizer"] = optimizer
    ws = build_workspace(validate_scenario(smoke_raw))
    kit = ModelKit(ws)
    edges, _ = kit.initial_states()
    ids = tuple(d.device_id for d in ws.population.devices if d.tier == "small")
    return ws, kit, TrainJob(rnd=1, node=0, tier="small", device_ids=ids,
                             edge_state=edges["small"])


def test_cloud_exchange_gives_each_device_its_own_mean_loss_and_gradient(smoke_raw):
    """One loss call over a cohort's batch (segment sums) equals a call per device slice."""
    smoke_raw["tiers"][0]["defense"] = {"name": "siftfunnel", "eps": 0.1}
    ws = build_workspace(validate_scenario(smoke_raw))
    kit = ModelKit(ws)
    _, cloud_state = kit.initial_states()
    sizes = [3, 1, 5, 2]
    x, y = ws.batch(np.arange(sum(sizes)))
    with torch.no_grad():
        z = kit.edge("small")(x)
    grads, losses = Cloud(ws, cloud_state).exchange(
        0, 0, "small", z.numpy(), y.numpy(), np.arange(4), np.arange(sum(sizes)), sizes)

    model = kit.cloud()
    model.load_state_dict(cloud_state)
    model.train()
    zt = z.clone().requires_grad_(True)
    with seeded(derive_seed(ws.scenario.seed, "cloud", 0, 0, 0)):   # the same dropout draw
        logits = model(zt, "small")
    bounds = np.cumsum([0, *sizes])
    defense = kit.defenses["small"]
    expected = torch.stack([defense.task_loss(logits[a:b], y[a:b])
                            for a, b in zip(bounds, bounds[1:])])
    (expected.mean() * len(sizes)).backward()
    np.testing.assert_allclose(losses, expected.detach().numpy(), rtol=1e-5)
    np.testing.assert_allclose(grads, zt.grad.numpy(), rtol=1e-4, atol=1e-7)


def test_each_round_starts_every_node_copy_from_the_averaged_cloud(smoke_raw):
    """After a round's average, a node's kept copy is refilled with the new trunk and its
    own tier's adapter: what it trains and what the next average reads of it."""
    ws = build_workspace(validate_scenario(smoke_raw))
    kit = ModelKit(ws)
    _, cloud_state = kit.initial_states()
    cloud = Cloud(ws, cloud_state)
    nodes = {n: ws.population.node_tier(n) for n in range(len(ws.population.nodes))}
    assert len(nodes) > len(set(nodes.values()))   # tiers of several nodes
    for rnd in range(2):
        for node, tier in nodes.items():
            x, y = ws.batch(np.arange(6))
            with torch.no_grad():
                z = kit.edge(tier)(x)
            cloud.exchange(rnd, node, tier, z.numpy(), y.numpy(), np.zeros(6, np.int64),
                           np.arange(6), [6])
        cloud.aggregate(dict.fromkeys(nodes, 1.0))
    averaged = cloud.model.state_dict()
    for node, tier in nodes.items():
        copy = cloud._copy_for(node).state_dict()
        mine = [k for k in averaged if _group(k) in (None, tier)]
        assert mine and len(mine) < len(averaged)
        for k in mine:
            torch.testing.assert_close(copy[k], averaged[k], rtol=0, atol=0, msg=k)


def _square_loss_exchange(rnd, node, tier, z, y, device_ids, samples, sizes):
    """A stand-in cloud: each device's loss is mean(z^2) over its batch."""
    bounds = np.cumsum([0, *sizes])
    grads = np.concatenate([2 * z[a:b] / (b - a) for a, b in zip(bounds, bounds[1:])])
    return grads, np.array([np.mean(z[a:b] ** 2) for a, b in zip(bounds, bounds[1:])])


@pytest.mark.parametrize("layout", ["grouped", "vmap"])
@pytest.mark.parametrize("batch_size", [64, 4])   # 64: each device's whole data
def test_stacked_cohort_trains_like_one_module_per_device(smoke_raw, monkeypatch,
                                                          batch_size, layout):
    from simulator.engine import cohort_edges
    from simulator.engine.device import run_train_job
    ws, kit, job = _cohort(smoke_raw, optimizer={"name": "sgd", "lr": 0.05,
                                                 "momentum": 0.9},
                           batch_size=batch_size)
    monkeypatch.setattr(cohort_edges, "MIN_STACK", {"grouped": 1, "vmap": 1})   # even 1
    if layout == "vmap":   # as for an edge with a layer the grouped layout lacks
        monkeypatch.setattr(cohort_edges, "supports", lambda module: False)
    built = []
    real = cohort_edges.cohort_edges
    monkeypatch.setattr("simulator.engine.device.cohort_edges",
                        lambda *a: built.append(real(*a)) or built[-1])
    stacked = run_train_job(job, ws, kit, _square_loss_exchange)
    monkeypatch.setattr(cohort_edges, "stackable", lambda defense: False)
    alone = run_train_job(job, ws, kit, _square_loss_exchange)
    assert [type(e).__name__ for e in built] == ["StackedEdges", "DeviceEdges"]
    assert built[0].layout == layout
    sizes = {min(batch_size, len(ws.population.devices[d].train_idx)) for d in job.device_ids}
    assert len(built[0].groups) == len(sizes)   # one stack per batch size
    assert len(sizes) > 1 if batch_size == 64 else len(sizes) == 1
    for key, value in alone.edge_state.items():
        assert torch.allclose(stacked.edge_state[key].double(), value.double(),
                              rtol=1e-4, atol=1e-6), key
    for d, row in alone.per_device.items():
        assert stacked.per_device[d]["loss"] == pytest.approx(row["loss"], rel=1e-4)
    # the round really trained: the state moved away from the round's start
    assert any(not torch.allclose(alone.edge_state[k], job.edge_state[k])
               for k in job.edge_state if job.edge_state[k].is_floating_point())


def test_cohorts_stack_only_without_an_edge_loss_and_with_enough_devices(smoke_raw):
    from simulator.engine.cohort_edges import DeviceEdges, StackedEdges, cohort_edges
    same = lambda ids: {d: 8 for d in ids}                       # noqa: E731
    spread = lambda ids: {d: 8 + i for i, d in enumerate(ids)}   # noqa: E731
    pairs = lambda ids: {d: 8 + i // 2 for i, d in enumerate(ids)}   # noqa: E731
    for defense, sizes, kind in (("nopeek", same, DeviceEdges),
                                 ("gaussian_noise", same, StackedEdges),
                                 ("none", spread, DeviceEdges),    # 1 device per size
                                 ("none", pairs, StackedEdges)):   # 2: grouped pays
        ws, kit, job = _cohort(copy_of(smoke_raw), defense)
        edges = cohort_edges(kit, "small", job.edge_state, sizes(job.device_ids),
                             ws.scenario.training.optimizer, lambda d, k, s: 0)
        assert isinstance(edges, kind), defense


def test_an_edge_that_draws_global_randomness_trains_one_module_per_device(smoke_raw):
    from simulator.engine.cohort_edges import DeviceEdges, cohort_edges
    ws, kit, job = _cohort(smoke_raw)
    kit.edge_copies("small", job.edge_state, 1)[0].head = torch.nn.Dropout(0.5)
    edges = cohort_edges(kit, "small", job.edge_state, {d: 8 for d in job.device_ids},
                         ws.scenario.training.optimizer, lambda d, k, s: 0)
    assert isinstance(edges, DeviceEdges)


def test_kept_edges_start_every_job_from_its_state(smoke_raw):
    from simulator.engine.device import run_train_job
    ws, kit, job = _cohort(smoke_raw, defense="nopeek")   # one module per device
    first = run_train_job(job, ws, kit, _square_loss_exchange)
    again = run_train_job(job, ws, kit, _square_loss_exchange)   # reuses the modules
    fresh = run_train_job(job, ws, ModelKit(ws), _square_loss_exchange)
    for key in first.edge_state:
        assert torch.equal(first.edge_state[key], again.edge_state[key]), key
        assert torch.equal(first.edge_state[key], fresh.edge_state[key]), key


_TRANSFORMING = [n for n, cls in DEFENSES.items() if cls.transforms()]


@pytest.mark.parametrize("defense", ["none", *_TRANSFORMING])
def test_cohort_inference_equals_device_by_device(smoke_raw, defense):
    # every defense with a random transform: Shredder's and VIB's read the noise scale
    # their edge head attaches to its output (a batched inference once dropped it)
    from simulator.engine.device import InferJob, run_infer_job
    ws, kit, job = _cohort(smoke_raw, defense=defense)
    seen = {}

    def predict(tier, z, device_ids, samples):
        seen["z"] = z
        return np.zeros(len(z), dtype=np.int64)

    run_infer_job(InferJob(0, "small", job.device_ids, job.edge_state), ws, kit, predict)
    edge = kit.edge("small")
    edge.load_state_dict(job.edge_state)
    edge.eval()
    from simulator.seeding import generator
    alone = []
    with torch.no_grad():
        for d in job.device_ids:
            dev = ws.population.devices[d]
            z = edge(ws.batch(dev.test_idx)[0])
            alone.append(kit.defenses["small"].transform(
                z, training=False, generator=generator(dev.seed, "transform", "inference")))
    np.testing.assert_allclose(seen["z"], torch.cat(alone).numpy(), rtol=1e-5, atol=1e-6)


def test_seeded_draws_like_manual_seed_and_restores_the_global_state():
    from simulator.seeding import seeded
    torch.manual_seed(11)
    expected_after = torch.rand(3)
    torch.manual_seed(11)
    with seeded(5):
        inside = torch.rand(4)
    assert torch.equal(torch.rand(3), expected_after)
    torch.manual_seed(5)
    assert torch.equal(inside, torch.rand(4))


def copy_of(raw):
    import copy
    return copy.deepcopy(raw)
