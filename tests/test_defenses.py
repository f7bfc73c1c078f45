"""Contract tests for every registered defense, plus the properties of the noise,
masking and learned-edge defenses (SiftFunnel: test_defense_siftfunnel.py, CEM:
test_defense_cem.py)."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from _defense_kit import ALL, RANDOM, TIER, build, edge_grads, gen, make_data, train
from strategies.defenses import DEFENSES, DefendedEdge, Defense
from strategies.defenses._common import PROXY_KEY, Standardize, proxy_error
from strategies.models import CloudModel


# -- registry and params ---------------------------------------------------------------
def test_all_defenses_registered() -> None:
    expected = {"none", "siftfunnel", "gaussian_noise", "laplace_noise", "dropout",
                "nopeek", "shredder", "vib", "adversarial", "disco", "cem"}
    assert expected <= set(ALL)


def test_reference_defaults_and_ranges() -> None:
    sf = DEFENSES.get("siftfunnel").Params()
    assert (sf.alpha, sf.beta, sf.gamma, sf.l1, sf.eps) == (5.0, 2.0, 2.0, 0.03, 0.25)
    assert DEFENSES.get("gaussian_noise").Params().sigma == 0.8
    assert DEFENSES.get("dropout").Params().rate == 0.8
    assert DEFENSES.get("nopeek").Params().a == 15.0
    for name, bad in [("gaussian_noise", {"sigma": -0.1}), ("dropout", {"rate": 1.0}),
                      ("siftfunnel", {"eps": 1.0}), ("siftfunnel", {"width": 0}),
                      ("disco", {"ratio": 1.0}), ("vib", {"sigam": 1.0})]:
        with pytest.raises(ValidationError):
            DEFENSES.create(name, bad)


# -- contract tests, every defense -----------------------------------------------------
@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("training", [True, False])
def test_transform_keeps_shape_dtype_and_is_seeded(name: str, training: bool) -> None:
    defense, edge, _ = build(name)
    x, _ = make_data(8, 1)
    edge.train(training)
    with torch.no_grad():
        outs = [defense.transform(edge(x), training=training, generator=g)
                for g in (gen(3), gen(3), None)]
        clean = edge(x)
    for out in outs:
        assert out.shape == clean.shape and out.dtype == clean.dtype
        assert torch.isfinite(out).all()
    assert torch.equal(outs[0], outs[1])
    if name in RANDOM and (training or name != "vib"):
        other = defense.transform(clean, training=training, generator=gen(4))
        assert not torch.equal(outs[0], other)


@pytest.mark.parametrize("name", ALL)
def test_picklable_before_and_after_a_step(name: str) -> None:
    defense, edge, cloud = build(name)
    x, y = make_data(8, 1)
    assert pickle.loads(pickle.dumps(defense)).params == defense.params
    pickle.dumps(edge)
    z = defense.transform(edge(x), training=True, generator=gen(0))
    loss = defense.task_loss(cloud(z, TIER), y)
    extra = defense.edge_loss(x, z, edge)
    (loss if extra is None else loss + extra).backward()
    clone = pickle.loads(pickle.dumps(edge))
    edge.eval(), clone.eval()
    with torch.no_grad():
        assert torch.equal(edge(x), clone(x))


@pytest.mark.parametrize("name", ALL)
def test_split_step_equals_centralized_step(name: str) -> None:
    defense, edge, cloud = build(name)
    edge2, cloud2 = copy.deepcopy(edge), copy.deepcopy(cloud)
    x, y = make_data(8, 2)
    # centralized: edge and cloud in one graph
    z = defense.transform(edge(x), training=True, generator=gen(5))
    loss_e = defense.edge_loss(x, z, edge)
    total = defense.task_loss(cloud(z, TIER), y)
    (total if loss_e is None else total + loss_e).backward()
    # split: the cloud returns dL/dz for a detached z; the device adds its own term
    z2 = defense.transform(edge2(x), training=True, generator=gen(5))
    z_cloud = z2.detach().requires_grad_(True)
    defense.task_loss(cloud2(z_cloud, TIER), y).backward()
    loss_e2 = defense.edge_loss(x, z2, edge2)
    if loss_e2 is None:
        torch.autograd.backward([z2], [z_cloud.grad])
    else:
        torch.autograd.backward([z2, loss_e2], [z_cloud.grad, None])
    g1, g2 = edge_grads(edge), edge_grads(edge2)
    assert g1.keys() == g2.keys() and len(g1) > 0
    for key in g1:
        torch.testing.assert_close(g1[key], g2[key], rtol=1e-4, atol=1e-6)


def _task_loss(defense: Defense, edge: DefendedEdge, cloud: CloudModel,
               x: torch.Tensor, y: torch.Tensor) -> float:
    edge.train(), cloud.eval()  # training-mode transform, but no cloud dropout
    with torch.no_grad():
        z = defense.transform(edge(x), training=True, generator=gen(9))
        return float(defense.task_loss(cloud(z, TIER), y))


@pytest.mark.parametrize("name", ALL)
def test_training_lowers_the_task_loss(name: str) -> None:
    defense, edge, cloud = build(name)
    x, y = make_data(32, 3)
    before = _task_loss(defense, edge, cloud, x, y)
    train(defense, edge, cloud, x, y, steps=40)
    # SiftFunnel's correlation terms slow it down most (about 0.85 here); others ~0.
    assert _task_loss(defense, edge, cloud, x, y) < 0.9 * before


# -- noise and masking -----------------------------------------------------------------
@pytest.mark.parametrize("name,params", [
    ("gaussian_noise", {"sigma": 0.0}), ("laplace_noise", {"scale": 0.0}),
    ("dropout", {"rate": 0.0}), ("shredder", {"scale": 0.0}), ("cem", {"sigma": 0.0})])
def test_zero_strength_is_identity(name: str, params: dict) -> None:
    defense, edge, _ = build(name, params)
    x, _ = make_data(8, 1)
    with torch.no_grad():
        clean = edge.encoder(x)
        for training in (True, False):
            out = defense.transform(edge(x), training=training, generator=gen(0))
            assert torch.equal(out, clean)


@pytest.mark.parametrize("name,params,stat,expected", [
    ("gaussian_noise", {"sigma": 0.5}, "std", 0.5),
    ("laplace_noise", {"scale": 0.5}, "mean_abs", 0.5),
    ("laplace_noise", {"scale": 0.5}, "std", 0.5 * 2 ** 0.5)])
def test_noise_statistics(name: str, params: dict, stat: str, expected: float) -> None:
    defense = DEFENSES.create(name, params)
    z = torch.randn(200, 4, 8, 8)
    noise = defense.transform(z, training=False, generator=gen(0)) - z
    value = noise.std() if stat == "std" else noise.abs().mean()
    assert abs(float(value) - expected) < 0.03 * expected
    assert abs(float(noise.mean())) < 0.02


@pytest.mark.parametrize("name,params", [
    ("gaussian_noise", {"sigma": 0.5}), ("laplace_noise", {"scale": 0.5}),
    ("cem", {"sigma": 0.5, "units": "relative"}), ("shredder", {"scale": 0.5})])
def test_noise_is_relative_to_each_samples_feature_rms(name: str, params: dict) -> None:
    # A feature 100x smaller gets 100x smaller noise (same noise-to-signal ratio), per
    # sample; with units: absolute the noise ignores the feature's scale.
    @torch.no_grad()
    def noise(defense: Defense, z: torch.Tensor) -> torch.Tensor:
        edge = defense.wrap_edge(torch.nn.Identity(), tuple(z.shape[1:]))
        return defense.transform(edge(z), training=False, generator=gen(0)) - z

    z = torch.randn(400, 4, 8, 8, generator=gen(5))
    z[200:] *= 0.01
    relative = noise(DEFENSES.create(name, params), z)
    ratio = relative[:200].std() / relative[200:].std()
    assert float(ratio) == pytest.approx(100.0, rel=0.1)
    absolute = noise(DEFENSES.create(name, {**params, "units": "absolute"}), z)
    assert float(absolute[:200].std() / absolute[200:].std()) == pytest.approx(1.0, rel=0.1)
    assert float(relative[:200].std()) == pytest.approx(float(absolute[:200].std()),
                                                       rel=0.1)
    with pytest.raises(ValidationError, match="units"):
        DEFENSES.create(name, {"units": "percent"})


def test_dropout_masks_without_rescaling() -> None:
    defense = DEFENSES.create("dropout", {"rate": 0.3})
    z = torch.rand(100, 4, 8, 8) + 0.1
    out = defense.transform(z, training=False, generator=gen(0))
    kept = out != 0
    assert torch.equal(out[kept], z[kept])
    assert abs(1.0 - float(kept.float().mean()) - 0.3) < 0.02


def test_shredder_learns_larger_noise_and_samples_its_scale() -> None:
    defense, edge, _ = build("shredder", {"scale": 0.5, "lam": 1.0})
    x, _ = make_data(8, 1)
    before = edge.head.noise.abs().mean().item()
    opt = torch.optim.SGD(edge.head.parameters(), lr=0.1)
    defense.edge_loss(x, edge(x), edge).backward()
    opt.step()
    assert edge.head.noise.abs().mean().item() > before
    z = torch.ones(4000, *edge.head.noise.shape)   # RMS 1: relative = absolute units
    noise = defense.transform(edge.head(z), training=False, generator=gen(1)) - z
    torch.testing.assert_close(noise.abs().mean(0), edge.head.scale().detach(),
                               rtol=0.15, atol=0.02)


def test_vib_kl_and_inference() -> None:
    defense, edge, _ = build("vib", {"beta": 0.1})
    x, _ = make_data(8, 1)
    z = edge(x)
    mu, sigma = edge.head.last_stats
    normal = torch.distributions.Normal
    kl = torch.distributions.kl_divergence(normal(mu, sigma), normal(0.0, 1.0))
    torch.testing.assert_close(defense.edge_loss(x, z, edge),
                               0.1 * kl.flatten(1).sum(1).mean())
    assert torch.equal(defense.transform(z, training=False, generator=gen(0)), mu)
    sampled = DEFENSES.create("vib", {"sample_at_inference": True})
    assert not torch.equal(sampled.transform(z, training=False, generator=gen(0)), mu)
    with pytest.raises(ValueError, match="vib"):
        defense.transform(z.detach().clone(), training=True)


@pytest.mark.parametrize("name", ["adversarial", "disco"])
def test_proxy_decoder_learns_and_is_not_deployed(name: str) -> None:
    defense, edge, _ = build(name)
    decoder = edge.training_only[PROXY_KEY]
    deployed = {id(p) for p in edge.deployed_parameters()}
    assert not any(id(p) in deployed for p in decoder.parameters())
    x, _ = make_data(16, 1)
    with torch.no_grad():
        z = edge(x)
    errors = [-float(defense.edge_loss(x, z, edge)) for _ in range(30)]
    assert errors[-1] < errors[0]
    loss = defense.edge_loss(x, edge(x), edge)
    loss.backward()  # the edge's maximisation must never reach the proxy's weights
    assert all(p.grad is None for p in decoder.parameters())
    assert any(p.grad is not None for p in edge.deployed_parameters())


@pytest.mark.parametrize("name", ["adversarial", "disco"])
def test_standardized_proxy_cannot_be_fooled_by_rescaling(name: str) -> None:
    # Shrinking the feature is how the edge beat the raw proxy on the MNIST frontier;
    # the standardised proxy sees the same input whatever the scale, the raw one does not.
    x, _ = make_data(16, 1)
    errors = {}
    for standardize in (False, True):
        defense, edge, _ = build(name, {"decoder_standardize": standardize})
        decoder = edge.training_only[PROXY_KEY]
        assert isinstance(decoder[0], Standardize) is standardize
        with torch.no_grad():
            z = edge(x)
            for _ in range(40):     # the proxy learns to decode this edge's features
                defense.edge_loss(x, z, edge)
            errors[standardize] = [float(proxy_error(decoder, c * z, x))
                                   for c in (1.0, 1e-3)]
    assert errors[True][1] == pytest.approx(errors[True][0], rel=1e-3)
    assert errors[False][1] > 1.1 * errors[False][0]


@pytest.mark.parametrize("name", ["adversarial", "disco"])
def test_more_proxy_steps_keep_the_proxy_closer_to_its_best_response(name: str) -> None:
    # decoder_steps trains the proxy k Adam steps per edge step: after the same number
    # of edge steps its error on a fixed feature is lower, so the edge's gradient comes
    # from a stronger attacker (one step let the edge outrun it on the MNIST frontier).
    x, _ = make_data(16, 1)
    errors = {}
    for steps in (1, 5):
        torch.manual_seed(0)
        defense, edge, _ = build(name, {"decoder_steps": steps})
        decoder = edge.training_only[PROXY_KEY]
        with torch.no_grad():
            z = edge(x)
        before = float(proxy_error(decoder, z, x))
        for _ in range(6):
            defense.edge_loss(x, z, edge)
        errors[steps] = float(proxy_error(decoder, z, x))
        assert errors[steps] < before
    assert errors[5] < errors[1]


def test_disco_prunes_the_same_share_in_training_and_at_inference() -> None:
    defense, edge, _ = build("disco", {"ratio": 0.5})
    x, _ = make_data(8, 1)
    with torch.no_grad():
        train_out = edge.train()(x)
        eval_out = edge.eval()(x)
    channels = eval_out.shape[1]
    keep = channels - round(0.5 * channels)
    for out in (train_out, eval_out):   # the cloud trains on what it will be sent
        alive = out.abs().flatten(2).sum(2) > 0
        assert (alive.sum(1) <= keep).all() and alive.sum(1).max() > 0
    # the pruner still learns: its scores get a gradient through the kept channels
    edge.train()
    edge(x).sum().backward()
    grads = [p.grad for p in edge.head.parameters()]
    assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_vib_head_sees_the_feature_in_units_of_its_rms() -> None:
    # Same mu and sigma for a feature and that feature 100x smaller: the prior's scale
    # means the same whatever the encoder's output scale.
    defense = DEFENSES.create("vib", {})
    edge = defense.wrap_edge(torch.nn.Identity(), (4, 4, 4))
    z = torch.randn(6, 4, 4, 4, generator=gen(3))
    with torch.no_grad():
        big, small = edge(z), edge(0.01 * z)
    torch.testing.assert_close(big, small)
    torch.testing.assert_close(edge.head.last_stats[1],
                               F.softplus(edge.head.raw(z / z.flatten(1).pow(2).mean(1)
                                                       .sqrt().view(-1, 1, 1, 1)) - 5.0))
