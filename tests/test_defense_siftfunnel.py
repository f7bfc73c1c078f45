"""SiftFunnel's loss terms and encoder, and the dCor / Pearson estimator options it
shares with NoPeek."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from _defense_kit import IMAGE, build, edge_grads, gen, make_data, train
from analysis.metrics import bias_corrected_dcor2, distance_correlation, u_distance_correlation_sqr
from strategies.defenses import DEFENSES, Defense
from strategies.defenses._common import pearson_loss, smooth_labels
from strategies.defenses.siftfunnel import EncoderChoice
from strategies.models import CBAM, SE


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
        train(defense, edge, cloud, x, y, steps=30)
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
