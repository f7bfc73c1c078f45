"""Contract tests for every registered defense, plus per-method properties."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from analysis.metrics import (bias_corrected_dcor2, distance_correlation,
                              u_distance_correlation_sqr)
from strategies.defenses import DEFENSES, DefendedEdge, Defense
from strategies.defenses._common import PROXY_KEY, pearson_loss, smooth_labels
from strategies.defenses.cem import cluster_entropy_bound, kmeans
from strategies.defenses.siftfunnel import EncoderChoice
from strategies.models import BACKBONES, CBAM, SE, CloudModel, build_edge

IMAGE = (1, 16, 16)
K = 4
NORM = ((0.5,), (0.25,))
TIER = "t"
ALL = DEFENSES.names()
# Small capacities keep the tests fast; every other value is the registered default.
SMALL = {
    "siftfunnel": {"width": 8, "channels": 4, "hidden": 8, "depth": 1},
    "adversarial": {"decoder_width": 8},
    "disco": {"decoder_width": 8, "pruner_hidden": 8},
}
RANDOM = ["cem", "dropout", "gaussian_noise", "laplace_noise", "shredder", "vib"]



def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise images with a bright 8x8 patch in the quadrant named by the label."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, K, (n,), generator=g)
    x = 0.4 * torch.rand((n, *IMAGE), generator=g)
    for i, label in enumerate(y.tolist()):
        r, c = divmod(label, 2)
        x[i, :, 8 * r:8 * r + 8, 8 * c:8 * c + 8] += 0.6
    return x, y


def build(name: str, params: dict | None = None, seed: int = 0
          ) -> tuple[Defense, DefendedEdge, CloudModel]:
    torch.manual_seed(seed)  # weight initialisation only (tests may seed globally)
    defense = DEFENSES.create(name, {**SMALL.get(name, {}), **(params or {})})
    backbone = BACKBONES.create("mnist_cnn", {"cut": "relu2"}, image_shape=IMAGE,
                                num_classes=K)
    edge = build_edge(backbone, EncoderChoice("plain", {}), defense, NORM)
    with torch.no_grad():
        shape = tuple(edge.eval()(torch.zeros(1, *IMAGE)).shape[1:])
    edge.train()
    cloud = CloudModel(backbone, {TIER: (shape, defense.adapter())})
    return defense, edge, cloud


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def edge_grads(edge: DefendedEdge) -> dict[str, torch.Tensor]:
    return {n: p.grad.clone() for n, p in edge.named_parameters() if p.grad is not None}


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


def _train(defense: Defense, edge: DefendedEdge, cloud: CloudModel, x: torch.Tensor,
           y: torch.Tensor, steps: int, seed: int = 0) -> None:
    opt = torch.optim.Adam([*edge.parameters(), *cloud.parameters()], lr=1e-2)
    g = gen(seed)
    edge.train(), cloud.train()
    for _ in range(steps):
        opt.zero_grad()
        z = defense.transform(edge(x), training=True, generator=g)
        loss = defense.task_loss(cloud(z, TIER), y)
        extra = defense.edge_loss(x, z, edge)
        (loss if extra is None else loss + extra).backward()
        opt.step()


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
    _train(defense, edge, cloud, x, y, steps=40)
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


# -- SiftFunnel ------------------------------------------------------------------------
def test_siftfunnel_label_smoothing() -> None:
    target = smooth_labels(torch.tensor([2, 0]), 4, 0.3)
    torch.testing.assert_close(target, torch.tensor([[0.1, 0.1, 0.7, 0.1],
                                                     [0.7, 0.1, 0.1, 0.1]]))
    defense = DEFENSES.create("siftfunnel", {"eps": 0.3, "alpha": 2.0})
    # The smoothed KL is minimal (zero, zero gradient) where softmax equals the target.
    logits = target.log().requires_grad_(True)
    loss = defense.task_loss(logits, torch.tensor([2, 0]))
    loss.backward()
    assert abs(loss.item()) < 1e-6 and logits.grad.abs().max() < 1e-6
    plain = DEFENSES.create("siftfunnel", {"label_smoothing": False, "alpha": 2.0})
    logits = torch.randn(5, 4)
    labels = torch.tensor([0, 1, 2, 3, 0])
    torch.testing.assert_close(plain.task_loss(logits, labels),
                               2.0 * F.cross_entropy(logits, labels))


def test_siftfunnel_switches_remove_their_terms() -> None:
    x, _ = make_data(8, 1)
    z = torch.randn(8, 4, 8, 8)
    off = {"dcor": False, "pearson": False, "l1_term": False}
    create = DEFENSES.create
    assert create("siftfunnel", off).edge_loss(x, z, None) is None
    z = z + 2.0 * x[..., ::2, ::2]  # some dependence: U-dCor^2 above its clamp
    cases = [("dcor", 2.0 * u_distance_correlation_sqr(x, z)),
             ("pearson", 2.0 * pearson_loss(z, "adjusted")),
             ("l1_term", 0.03 * z.abs().mean())]
    assert all(float(e) > 0 for _, e in cases)
    for switch, expected in cases:
        only = create("siftfunnel", {**off, switch: True}).edge_loss(x, z, None)
        torch.testing.assert_close(only, expected)
    full = create("siftfunnel").edge_loss(x, z, None)
    torch.testing.assert_close(full, sum(e for _, e in cases))
    assert create("siftfunnel").adapter() == "up"
    assert create("siftfunnel", {"up": False}).adapter() == "linear"


def test_siftfunnel_edge_spec() -> None:
    plain = EncoderChoice("plain", {})
    create = DEFENSES.create
    assert create("siftfunnel", {"funnel": False}).edge_spec(plain) is plain
    assert create("siftfunnel").edge_spec(plain) == EncoderChoice(
        "funnel", {"attention": True})
    tier = EncoderChoice("funnel", {"width": 16, "channels": 6})
    spec = create("siftfunnel", {"channels": 3, "attention": False}).edge_spec(tier)
    assert spec == EncoderChoice("funnel", {"width": 16, "channels": 3,
                                            "attention": False})
    _, edge, _ = build("siftfunnel", {"attention": False})
    assert edge(torch.zeros(2, *IMAGE)).shape[1] == 4
    assert not any(isinstance(m, (SE, CBAM)) for m in edge.modules())
    _, edge, _ = build("siftfunnel")
    assert any(isinstance(m, CBAM) for m in edge.modules())


def test_siftfunnel_lowers_dcor_compared_with_none() -> None:
    x, y = make_data(64, 5)
    x_test, _ = make_data(64, 6)
    values = {}
    for key, name, params in [("none", "none", {}), ("sift", "siftfunnel", {}),
                              ("sift_no_dcor", "siftfunnel", {"dcor": False})]:
        defense, edge, cloud = build(name, params, seed=1)
        _train(defense, edge, cloud, x, y, steps=30)
        edge.eval()
        with torch.no_grad():
            z = defense.transform(edge(x_test), training=False, generator=gen(0))
        values[key] = bias_corrected_dcor2(x_test, z)
    # measured: none 0.99, siftfunnel 0.07 (V, plain Pearson: 0.11), without dCor 0.99
    assert values["sift"] < values["none"] - 0.3, values
    assert values["sift"] < values["sift_no_dcor"] - 0.3, values


# -- dCor estimator option (SiftFunnel, NoPeek) ----------------------------------------
def _dcor_only(name: str, estimator: str) -> Defense:
    if name == "nopeek":
        return DEFENSES.create("nopeek", {"a": 1.0, "dcor_estimator": estimator})
    return DEFENSES.create("siftfunnel", {"beta": 1.0, "pearson": False,
                                          "l1_term": False, "dcor_estimator": estimator})


def test_dcor_defenses_default_to_the_bias_corrected_estimators() -> None:
    params = DEFENSES.get("siftfunnel").Params()
    assert (params.dcor_estimator, params.pearson_estimator) == ("u", "adjusted")
    assert DEFENSES.get("nopeek").Params().dcor_estimator == "u"


@pytest.mark.parametrize("name", ["siftfunnel", "nopeek"])
def test_dcor_estimator_option_changes_the_loss(name: str) -> None:
    x, _ = make_data(16, 1)
    z = torch.tanh(x.flatten(1) @ torch.randn(256, 32, generator=gen(2)))
    v = _dcor_only(name, "v").edge_loss(x, z, None)
    u = _dcor_only(name, "u").edge_loss(x, z, None)
    torch.testing.assert_close(v, distance_correlation(x, z))
    torch.testing.assert_close(u, u_distance_correlation_sqr(x, z))
    assert float(u) < float(v) - 0.02  # the V-statistic is biased upwards (0.86, 0.81)
    # The U-statistic can be negative (this seed gives -0.15); the loss stops at 0.
    independent = torch.rand(16, 32, generator=gen(10))
    assert float(u_distance_correlation_sqr(x, independent)) < 0
    assert float(_dcor_only(name, "u").edge_loss(x, independent, None)) == 0.0


@pytest.mark.parametrize("name", ["siftfunnel", "nopeek"])
@pytest.mark.parametrize("estimator", ["v", "u"])
def test_dcor_estimator_loss_is_differentiable(name: str, estimator: str) -> None:
    defense, edge, cloud = build(name, {"dcor_estimator": estimator})
    x, y = make_data(8, 1)
    z = defense.transform(edge(x), training=True, generator=gen(0))
    loss = defense.edge_loss(x, z, edge)
    assert loss.requires_grad and torch.isfinite(loss)
    loss.backward()
    grads = edge_grads(edge)
    assert grads and all(torch.isfinite(g).all() for g in grads.values())
    assert any(g.abs().sum() > 0 for g in grads.values())


@pytest.mark.parametrize("name", ["siftfunnel", "nopeek"])
def test_u_dcor_term_is_zero_below_four_samples(name: str) -> None:
    x, _ = make_data(3, 1)
    z = torch.randn(3, 4, 4, 4, requires_grad=True)
    loss = _dcor_only(name, "u").edge_loss(x, z, None)
    loss.backward()
    assert loss.item() == 0.0 and z.grad.abs().sum() == 0
    assert float(_dcor_only(name, "v").edge_loss(x, z.detach(), None)) > 0


@pytest.mark.parametrize("name", ["siftfunnel", "nopeek"])
@pytest.mark.parametrize("bad", ["U", "w", "", None, 1])
def test_dcor_estimator_validation(name: str, bad: object) -> None:
    with pytest.raises(ValidationError, match="dcor_estimator"):
        DEFENSES.create(name, {"dcor_estimator": bad})


# -- CEM ------------------------------------------------------------------------------
def test_cem_defaults_and_noise() -> None:
    cem = DEFENSES.get("cem").Params()
    assert (cem.lam, cem.sigma, cem.clusters) == (0.1, 0.05, 4)
    defense = DEFENSES.create("cem", {"sigma": 0.5})
    z = torch.randn(200, 4, 8, 8)
    for training in (True, False):  # noise in training and at inference
        noise = defense.transform(z, training=training, generator=gen(0)) - z
        assert abs(float(noise.std()) - 0.5) < 0.015


def test_cem_entropy_bound_hand_values_and_gradient() -> None:
    g = gen(0)
    a = 0.1 * torch.randn(6, 2, 3, 3, generator=g)
    b = 5.0 + 0.3 * torch.randn(10, 2, 3, 3, generator=g)
    z = torch.cat([a, b])
    labels = kmeans(z.flatten(1), 2)
    assert labels[:6].unique().numel() == 1 and labels[6:].unique().numel() == 1
    assert labels[0] != labels[6]

    def term(rows: torch.Tensor) -> torch.Tensor:
        rows = rows.flatten(1)
        return torch.log((rows - rows.mean(0)).pow(2).mean(0) + 1e-6).mean()

    expected = (6 * term(a) + 10 * term(b)) / 16
    torch.testing.assert_close(cluster_entropy_bound(z, 2), expected)
    # a row alone in its cluster carries no variance estimate and is left out
    lone = torch.cat([z, torch.full((1, 2, 3, 3), -50.0)])
    torch.testing.assert_close(cluster_entropy_bound(lone, 3), expected)
    defense = DEFENSES.create("cem", {"lam": 2.0, "clusters": 2})
    zg = z.clone().requires_grad_(True)
    loss = defense.edge_loss(torch.zeros(16, 1, 4, 4), zg, None)
    torch.testing.assert_close(loss, 2.0 * expected)
    loss.backward()
    assert torch.isfinite(zg.grad).all() and zg.grad.abs().sum() > 0
    # the gradient pulls every row towards its cluster's centre
    centre = torch.cat([a.mean(0).expand_as(a), b.mean(0).expand_as(b)])
    assert float((zg.grad * (z - centre)).sum()) > 0
    assert DEFENSES.create("cem", {"lam": 0.0}).edge_loss(z, z, None) is None


def _smooth(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth images (bilinear 4x4 noise), label = brightest quadrant: unlike
    ``make_data`` their content is recoverable from an undefended feature."""
    low = torch.rand(n, 1, 4, 4, generator=gen(seed))
    x = F.interpolate(low, size=IMAGE[1:], mode="bilinear", align_corners=False)
    return x, x.view(n, 2, 8, 2, 8).mean((2, 4)).flatten(1).argmax(1)


def _attacker_mse_and_accuracy(lam: float, x: torch.Tensor, y: torch.Tensor,
                               x_test: torch.Tensor, y_test: torch.Tensor
                               ) -> tuple[float, float]:
    from strategies.attacks._common import build_decoder, init_parameters
    defense, edge, cloud = build("cem", {"lam": lam}, seed=1)
    _train(defense, edge, cloud, x, y, steps=40)
    edge.eval(), cloud.eval()
    with torch.no_grad():
        z = defense.transform(edge(x), training=False, generator=gen(0))
        z_test = defense.transform(edge(x_test), training=False, generator=gen(1))
        acc = float((cloud(z_test, TIER).argmax(1) == y_test).float().mean())
    decoder = init_parameters(build_decoder(tuple(z.shape[1:]), IMAGE, 16), gen(2))
    opt = torch.optim.Adam(decoder.parameters(), lr=1e-2)
    for _ in range(80):  # an adaptive attacker: decoder trained on defended features
        opt.zero_grad()
        F.mse_loss(decoder(z), x).backward()
        opt.step()
    with torch.no_grad():
        return float(F.mse_loss(decoder.eval()(z_test), x_test)), acc


def test_cem_raises_a_decoders_error_and_keeps_accuracy() -> None:
    (x, y), (x_test, y_test) = _smooth(64, 3), _smooth(64, 4)
    plain_mse, plain_acc = _attacker_mse_and_accuracy(0.0, x, y, x_test, y_test)
    cem_mse, cem_acc = _attacker_mse_and_accuracy(0.1, x, y, x_test, y_test)
    # measured here: MSE 0.0038 -> 0.0123, accuracy 0.61 -> 0.64 (chance 0.25); with
    # build seeds 2 and 3 the MSE grew x3.7 and x5.3 and the accuracy moved by <= 0.08
    assert cem_mse > 2.5 * plain_mse, (plain_mse, cem_mse)
    assert cem_acc > plain_acc - 0.15 and cem_acc > 0.45, (plain_acc, cem_acc)


# -- Pearson estimator option (SiftFunnel) ---------------------------------------------
def test_adjusted_pearson_is_unbiased_and_does_not_reward_dead_channels() -> None:
    # Independent channels on a 4 x 4 map: plain r^2 sits at its noise floor
    # 1/(H*W - 1) = 1/15; the adjusted estimate averages to 0 before clamping.
    z = torch.rand(400, 6, 4, 4, generator=gen(0))
    assert pearson_loss(z, "plain").item() == pytest.approx(1 / 15, rel=0.1)
    m, r2 = 16, pearson_loss(z, "plain").item()
    assert ((m - 1) * r2 - 1) / (m - 2) == pytest.approx(0.0, abs=0.01)
    # Copied channels are fully redundant for both.
    copies = torch.rand(8, 1, 4, 4, generator=gen(1)).expand(8, 4, 4, 4)
    assert pearson_loss(copies, "plain").item() == pytest.approx(1.0, abs=1e-5)
    assert pearson_loss(copies, "adjusted").item() == pytest.approx(1.0, abs=1e-5)
    # Plain r^2 drops far below the noise floor when channels die (r = 0 by
    # convention); the adjusted term has no gradient on noise-level or dead pairs.
    dead = z.clone()
    dead[:, 3:] = 0
    assert pearson_loss(dead, "plain").item() < 0.3 * pearson_loss(z, "plain").item()
    noisy = z[:16].clone().requires_grad_(True)
    loss = pearson_loss(noisy, "adjusted")
    loss.backward()
    assert torch.isfinite(noisy.grad).all() and noisy.grad.abs().sum() > 0
    const = torch.zeros(4, 3, 4, 4, requires_grad=True)
    pearson_loss(const, "adjusted").backward()
    assert const.grad.abs().sum() == 0


def test_pearson_estimator_option_and_validation() -> None:
    x, _ = make_data(8, 1)
    z = torch.randn(8, 4, 4, 4, generator=gen(2))
    only = {"dcor": False, "l1_term": False}
    for estimator in ("plain", "adjusted"):
        defense = DEFENSES.create("siftfunnel",
                                  {**only, "pearson_estimator": estimator})
        torch.testing.assert_close(defense.edge_loss(x, z, None),
                                   2.0 * pearson_loss(z, estimator))
    with pytest.raises(ValidationError, match="pearson_estimator"):
        DEFENSES.create("siftfunnel", {"pearson_estimator": "unbiased"})
    tiny = torch.rand(4, 3, 1, 2, requires_grad=True)  # r = +-1 on 2 positions
    assert pearson_loss(tiny, "adjusted").item() == 0.0


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
