"""Inversion attacks: contract tests over ATTACKS, toy inversions, knowledge boundaries.

Toy setting: smooth 1x16x16 images (bilinear up-sampling of 4x4 noise), an invertible
edge (Normalize -> pixel_unshuffle(2) -> fixed orthogonal 1x1 conv, feature 4x8x8), and
a tiny cloud trained on it. An attack must nearly invert that edge and must do no better
than the mean auxiliary image when the features carry no information about x.
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from _attack_kit import (FAST, FEATURE, IMAGE, INVERTS, N_TEST, NoiseEdge, OrthoEdge,
                         Setting, TinyEdge, ZeroEdge)
from analysis.metrics import mse, ssim
from strategies.attacks import (ATTACKS, Attack, BlackBoxQuery, QueryFree, QueryOracle,
                                WhiteBox, grants)
from strategies.attacks._common import (build_decoder, build_shadow_edge, initial_images,
                                        total_variation)
from strategies.attacks.fora import FORA
from strategies.attacks.inverse_network import InverseNetwork
from strategies.attacks.query_free import QueryFreeAttack
from strategies.attacks.rmle import RMLE
from strategies.attacks.sdar import SDAR


@pytest.fixture(scope="module")
def toy() -> Setting:
    return Setting(OrthoEdge)


@pytest.fixture(scope="module")
def toy_recon(toy: Setting) -> dict[str, torch.Tensor]:
    return {name: toy.run(name) for name in ATTACKS.names()}


NAMES = ATTACKS.names()


# -- registry contract ------------------------------------------------------------
def test_the_attacks_are_registered_with_their_threat_models() -> None:
    assert {"inverse_network", "rmle", "query_free", "fora", "sdar"} <= set(NAMES)
    assert ATTACKS.get("fora") is FORA and ATTACKS.get("sdar") is SDAR
    assert FORA.requires is QueryFree and SDAR.requires is QueryFree
    assert FORA.observed_phases == ("training", "inference")
    assert SDAR.observed_phases == ("training",)
    assert all(ATTACKS.get(n).observed_phases == ()
               for n in ("inverse_network", "rmle", "query_free"))
    assert ATTACKS.get("inverse_network") is InverseNetwork
    assert InverseNetwork.requires is BlackBoxQuery
    assert RMLE.requires is WhiteBox and QueryFreeAttack.requires is QueryFree
    assert grants("black_box_query", InverseNetwork.requires)
    assert not grants("black_box_query", RMLE.requires)
    assert not grants("query_free", InverseNetwork.requires)


@pytest.mark.parametrize("name", NAMES)
def test_params_defaults_validate_and_unknown_keys_fail(name: str) -> None:
    cls = ATTACKS.get(name)
    assert issubclass(cls, Attack)
    params = cls.Params()
    assert ATTACKS.create(name, {}).params == params
    with pytest.raises(ValidationError):
        ATTACKS.create(name, {"not_a_param": 1})
    with pytest.raises(ValidationError):
        params.model_copy().__setattr__(next(iter(cls.Params.model_fields)), 1)


@pytest.mark.parametrize("name", NAMES)
def test_every_numeric_param_rejects_negative_values(name: str) -> None:
    cls = ATTACKS.get(name)
    numeric = [f for f, info in cls.Params.model_fields.items()
               if info.annotation in (int, float)]
    assert numeric
    for field in numeric:
        with pytest.raises(ValidationError, match=field):
            cls.Params(**{field: -1})


def test_reference_defaults() -> None:
    inv, rmle, qf = InverseNetwork.Params(), RMLE.Params(), QueryFreeAttack.Params()
    assert (inv.width, inv.depth_extra, inv.epochs, inv.lr, inv.batch_size) == \
        (64, 0, 50, 1e-3, 64)
    assert (rmle.iterations, rmle.lr, rmle.tv_beta, rmle.init) == \
        (500, 1e-2, 1.0, "mean")
    assert (qf.iterations, qf.lr, qf.lambda_tv, qf.shadow_epochs, qf.shadow_lr) == \
        (500, 1e-1, 2.0, 50, 1e-3)
    fora, sdar = FORA.Params(), SDAR.Params()
    assert (fora.a, fora.critic_lr, fora.gp_weight) == (1.0, 1e-5, 1000.0)  # authors'
    assert (sdar.sim_lr, sdar.sim_critic_lr, sdar.lambda1, sdar.dec_lr, sdar.lambda2,
            sdar.flip_rate) == (1e-3, 2e-5, 0.02, 5e-4, 1e-5, 0.2)


@pytest.mark.parametrize("name", NAMES)
def test_reconstruct_shape_range_and_determinism(
        name: str, toy: Setting, toy_recon: dict[str, torch.Tensor]) -> None:
    x_hat = toy_recon[name]
    assert x_hat.shape == (N_TEST, *IMAGE) and x_hat.dtype == torch.float32
    assert torch.isfinite(x_hat).all() and x_hat.min() >= 0 and x_hat.max() <= 1
    assert torch.equal(toy.run(name, seed=1), x_hat)  # same generator seed, same result


@pytest.mark.parametrize("name", NAMES)
def test_reconstruct_needs_fit_and_the_tier_feature_shape(name: str,
                                                          toy: Setting) -> None:
    attack = ATTACKS.create(name, FAST.get(name, {}))
    with pytest.raises(RuntimeError, match="fit"):
        attack.reconstruct(toy.test_z)
    attack.fit(toy.knowledge[WhiteBox], torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="shape"):
        attack.reconstruct(toy.test_z[:, :2])


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("kind", [QueryFree, BlackBoxQuery, WhiteBox])
def test_fit_rejects_too_poor_knowledge(name: str, kind: type[QueryFree],
                                        toy: Setting) -> None:
    attack = ATTACKS.create(name, FAST.get(name, {}))
    if issubclass(kind, attack.requires):
        return  # enough knowledge: covered by the other tests
    with pytest.raises(TypeError, match=attack.requires.__name__):
        attack.fit(toy.knowledge[kind], torch.Generator().manual_seed(0))


# -- toy inversions ---------------------------------------------------------------
@pytest.mark.parametrize("name", NAMES)
def test_attack_inverts_an_invertible_edge(name: str, toy: Setting,
                                           toy_recon: dict[str, torch.Tensor]) -> None:
    max_rel_mse, min_ssim = INVERTS.get(name, (0.5, 0.5))
    x_hat = toy_recon[name]
    assert mse(x_hat, toy.test_x).mean().item() < max_rel_mse * toy.mean_mse
    assert ssim(x_hat, toy.test_x).mean().item() > min_ssim


@pytest.mark.parametrize("edge_cls", [ZeroEdge, NoiseEdge])
@pytest.mark.parametrize("name", NAMES)
def test_attack_fails_without_information(name: str, edge_cls: type[OrthoEdge]) -> None:
    setting = Setting(edge_cls)
    x_hat = setting.run(name)
    assert mse(x_hat, setting.test_x).mean().item() > 0.9 * setting.mean_mse


# -- what each attack may touch ---------------------------------------------------
def _reachable(obj: Any, seen: set[int] | None = None) -> Iterator[Any]:
    """Everything reachable through dataclass fields, vars, slots and containers."""
    seen = set() if seen is None else seen
    if id(obj) in seen or isinstance(obj, (str, bytes, int, float, bool, type(None))):
        return
    seen.add(id(obj))
    yield obj
    children: list[Any] = []
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        children += [getattr(obj, f.name) for f in dataclasses.fields(obj)]
    if isinstance(obj, dict):
        children += list(obj.keys()) + list(obj.values())
    elif isinstance(obj, (list, tuple, set, frozenset)):
        children += list(obj)
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        children += list(vars(obj).values())
    for slot in getattr(type(obj), "__slots__", ()):
        children.append(getattr(obj, slot, None))
    for child in children:
        yield from _reachable(child, seen)


def test_black_box_knowledge_exposes_no_edge_module_or_weight(toy: Setting) -> None:
    edge_objects = {id(t) for t in [toy.edge, *toy.edge.modules(),
                                    *toy.edge.parameters()]}
    reachable = list(_reachable(toy.knowledge[BlackBoxQuery]))
    assert any(o is toy.cloud for o in reachable)  # the walk does reach modules
    assert not any(id(o) in edge_objects for o in reachable)
    assert any(id(o) in edge_objects for o in _reachable(toy.knowledge[WhiteBox]))


def test_oracle_outputs_are_detached_and_the_oracle_does_not_pickle(
        toy: Setting) -> None:
    oracle = toy.knowledge[BlackBoxQuery].query
    z = oracle(toy.aux_x[:4].clone().requires_grad_(True))
    assert not z.requires_grad and z.grad_fn is None
    assert torch.allclose(z, toy.edge(toy.aux_x[:4]))
    for obj in (oracle, toy.knowledge[BlackBoxQuery]):
        with pytest.raises(TypeError, match="pickle"):
            pickle.dumps(obj)


def test_inverse_network_learns_only_from_oracle_queries_on_aux_data(
        toy: Setting) -> None:
    queried: list[torch.Tensor] = []

    def noisy_edge(x: torch.Tensor) -> torch.Tensor:  # a defense's random transform
        queried.append(x.clone())
        return toy.edge(x) + 0.05 * torch.randn(x.shape[0], *FEATURE)

    knowledge = dataclasses.replace(toy.knowledge[BlackBoxQuery],
                                    query=QueryOracle(noisy_edge))
    attack = ATTACKS.create("inverse_network", FAST["inverse_network"])
    attack.fit(knowledge, torch.Generator().manual_seed(1))
    assert len(queried) >= 1 and torch.equal(torch.cat(queried), toy.aux_x)
    x_hat = attack.reconstruct(toy.test_z)
    assert ssim(x_hat, toy.test_x).mean().item() > 0.8  # adaptive: trained on noisy z


def test_attacks_leave_the_edge_and_cloud_untouched(toy: Setting) -> None:
    before = {k: v.clone() for k, v in toy.cloud.state_dict().items()}
    toy.edge.train()
    try:
        toy.run("rmle", iterations=5)
        toy.run("query_free", iterations=5, shadow_epochs=1)
        toy.run("fora", substitute_epochs=1, epochs=1, a=0.5)
        toy.run("sdar", epochs=1)
        assert toy.edge.training
    finally:
        toy.edge.eval()
    params = [*toy.edge.parameters(), *toy.cloud.parameters()]
    assert all(p.grad is None for p in params)
    assert all(torch.equal(before[k], v) for k, v in toy.cloud.state_dict().items())


def test_rmle_chunking_does_not_change_the_result(toy: Setting) -> None:
    whole = toy.run("rmle", iterations=20, init="randn")
    chunked = toy.run("rmle", iterations=20, init="randn", chunk_size=5)
    assert torch.allclose(whole, chunked, atol=1e-5)


def test_rmle_feature_term_is_relative_to_the_feature_scale(toy: Setting) -> None:
    tiny = Setting(TinyEdge)
    same = tiny.run("rmle", lambda_tv=0.05)
    assert torch.allclose(same, toy.run("rmle", lambda_tv=0.05), atol=1e-3)
    assert ssim(same, tiny.test_x).mean().item() > 0.95
    # He et al.'s absolute error: the prior swamps a feature error of ~1e-4
    absolute = tiny.run("rmle", lambda_tv=0.05, relative=False)
    assert ssim(absolute, tiny.test_x).mean().item() < 0.5


# -- shared pieces ----------------------------------------------------------------
def test_total_variation_matches_hand_values() -> None:
    ramp = torch.arange(6.0).view(1, 1, 1, 6).expand(2, 3, 5, 6) * 0.1
    assert torch.allclose(total_variation(ramp, beta=1.0), torch.full((2,), 0.1),
                          atol=1e-6)
    assert torch.allclose(total_variation(ramp, beta=2.0), torch.full((2,), 0.01),
                          atol=1e-6)
    assert total_variation(torch.full((1, 1, 4, 4), 0.3)).item() < 1e-3


@pytest.mark.parametrize("feature, image", [
    ((4, 8, 8), (1, 16, 16)), ((128, 16, 16), (3, 32, 32)), ((12, 16, 16), (3, 64, 64)),
    ((8, 7, 7), (1, 28, 28)), ((10, 5, 5), (3, 32, 32)), ((64, 32, 32), (3, 32, 32)),
])
def test_decoder_and_shadow_edge_map_between_the_tier_shapes(
        feature: tuple[int, int, int], image: tuple[int, int, int]) -> None:
    decoder = build_decoder(feature, image, width=8).eval()
    x_hat = decoder(torch.randn(2, *feature) * 5)
    assert x_hat.shape == (2, *image) and x_hat.min() >= 0 and x_hat.max() <= 1
    norm = ((0.5,) * image[0], (0.2,) * image[0])
    shadow = build_shadow_edge(image, feature, norm, width=8)
    assert shadow(torch.rand(2, *image)).shape == (2, *feature)
    deeper = build_decoder(feature, image, width=8, depth_extra=2)
    assert sum(p.numel() for p in deeper.parameters()) > \
        sum(p.numel() for p in decoder.parameters())


def test_initial_images() -> None:
    mean, g = torch.full(IMAGE, 0.3), torch.Generator().manual_seed(0)
    zeros = initial_images("zeros", 2, IMAGE, mean, g)
    assert torch.equal(zeros, torch.zeros(2, *IMAGE))
    assert torch.equal(initial_images("mean", 2, IMAGE, mean, g)[1], mean)
    r = initial_images("randn", 2, IMAGE, mean, g)
    assert r.min() >= 0 and r.max() <= 1 and r.std() > 0.1
    with pytest.raises(ValueError, match="init"):
        initial_images("ones", 2, IMAGE, mean, g)  # type: ignore[arg-type]
