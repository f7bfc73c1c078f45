"""Models: blocks, backbones, encoders, the cloud and edge assembly."""

from __future__ import annotations

from types import SimpleNamespace

import pydantic
import pytest
import torch
from torch import nn

import strategies.models as models
from strategies.defenses import DEFENSES, DefendedEdge, Defense
from strategies.models import (BACKBONES, CBAM, ENCODERS, SE, Backbone, CloudModel,
                               Normalize, TripletAttention, Up, build_cloud, build_edge,
                               edge_cost)
from strategies.models.encoder import count_halvings
from strategies.registry import PluginParams, UnknownPluginError

K = 5


def spec(name: str, **params: object) -> SimpleNamespace:
    return SimpleNamespace(name=name, params=params)


def backbone(name: str, shape: tuple[int, int, int] | None = None,
             cut: str | None = None) -> Backbone:
    cls = BACKBONES.get(name)
    return BACKBONES.create(name, {"cut": cut} if cut else {},
                            image_shape=shape or cls.example_shape, num_classes=K)


def all_cuts() -> list[tuple[str, str]]:
    return [(b, c) for b, cls in BACKBONES.items() for c in cls.cuts()]


def test_public_api_names_resolve() -> None:
    for name in models.__all__:
        assert getattr(models, name) is not None
    assert {"siftfunnel_cnn", "he_cifar", "mnist_cnn"} <= set(BACKBONES.names())
    assert {"plain", "funnel"} <= set(ENCODERS.names())


# -- blocks ---------------------------------------------------------------------------
@pytest.mark.parametrize("block", [SE(12, 4), TripletAttention(), CBAM(12, 6)])
def test_attention_blocks_keep_shape_and_reweight(block: nn.Module) -> None:
    x = torch.rand(2, 12, 8, 6, generator=torch.Generator().manual_seed(0)) + 0.1
    y = block.eval()(x)
    assert y.shape == x.shape
    assert not torch.allclose(y, x)


def test_attention_with_zero_weights_gates_at_one_half() -> None:
    x = torch.randn(2, 12, 8, 6, generator=torch.Generator().manual_seed(1))
    blocks = {"se": (SE(12, 4), 0.5), "triplet": (TripletAttention(), 0.5),
              "cbam": (CBAM(12, 6), 0.25)}
    for name, (block, gain) in blocks.items():
        for p in block.parameters():
            if p.ndim > 1:  # conv/linear weights; BN affine keeps its identity init
                nn.init.zeros_(p)
        torch.testing.assert_close(block.eval()(x), gain * x, msg=name)


def test_up_restores_channels_not_spatial_size() -> None:
    assert Up(12, 128)(torch.rand(2, 12, 8, 6)).shape == (2, 128, 8, 6)


def test_normalize_is_per_channel_and_validated() -> None:
    norm = Normalize([0.5, 0.25], [0.5, 2.0])
    x = torch.rand(3, 2, 4, 4)
    expected = torch.stack([(x[:, 0] - 0.5) / 0.5, (x[:, 1] - 0.25) / 2.0], 1)
    torch.testing.assert_close(norm(x), expected)
    assert "mean" in norm.state_dict()
    with pytest.raises(ValueError, match="std"):
        Normalize([0.5], [0.0])
    with pytest.raises(ValueError, match="mean"):
        Normalize([0.5, 0.5], [1.0])


# -- backbones ------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "cut"), all_cuts())
def test_backbone_edge_plus_trunk_gives_logits(name: str, cut: str) -> None:
    bb = backbone(name, cut=cut)
    edge, trunk = bb.edge_layers(), bb.trunk()
    x = torch.rand(2, *bb.image_shape)
    z = edge(x)
    assert tuple(z.shape[1:]) == bb.cut_shape
    assert trunk(z).shape == (2, K)
    # Fresh modules on every call: no parameter is shared between two edges.
    again = {id(p) for p in bb.edge_layers().parameters()}
    assert again.isdisjoint(id(p) for p in edge.parameters())


@pytest.mark.parametrize(("name", "shape", "cut", "expected"), [
    ("siftfunnel_cnn", (3, 64, 64), "block2", (128, 16, 16)),
    ("siftfunnel_cnn", (1, 28, 28), "block2", (128, 7, 7)),
    ("he_cifar", (3, 32, 32), "conv11", (64, 32, 32)),
    ("he_cifar", (3, 32, 32), "relu22", (128, 16, 16)),
    ("he_cifar", (3, 32, 32), "relu32", (128, 8, 8)),
    ("he_cifar", (1, 64, 48), "relu32", (128, 16, 12)),
    ("mnist_cnn", (1, 28, 28), "conv1", (8, 28, 28)),
    ("mnist_cnn", (1, 32, 32), "relu2", (16, 16, 16)),
])
def test_cut_shapes_and_other_image_sizes(name: str, shape: tuple[int, int, int],
                                          cut: str, expected: tuple[int, ...]) -> None:
    bb = backbone(name, shape, cut)
    assert bb.cut_shape == expected
    net = nn.Sequential(bb.edge_layers(), bb.trunk())
    assert net(torch.rand(2, *shape)).shape == (2, K)


def test_backbone_rejects_bad_arguments() -> None:
    with pytest.raises(pydantic.ValidationError):
        BACKBONES.create("he_cifar", {"cut": "conv99"}, image_shape=(3, 32, 32),
                         num_classes=K)
    with pytest.raises(ValueError, match="divisible by 8"):
        backbone("he_cifar", (3, 36, 36))
    with pytest.raises(ValueError, match="16"):
        backbone("siftfunnel_cnn", (3, 8, 8))
    with pytest.raises(ValueError, match="num_classes"):
        BACKBONES.create("mnist_cnn", {}, image_shape=(1, 28, 28), num_classes=1)
    with pytest.raises(ValueError, match="image_shape"):
        BACKBONES.create("mnist_cnn", {}, image_shape=(28, 28), num_classes=K)
    assert BACKBONES.get("he_cifar").cuts() == ("conv11", "relu22", "relu32")


# -- encoders -------------------------------------------------------------------------
@pytest.mark.parametrize("encoder", ENCODERS.names())
@pytest.mark.parametrize(("name", "cut"), all_cuts())
def test_encoder_contract_reaches_the_cut(encoder: str, name: str, cut: str) -> None:
    bb = backbone(name, cut=cut)
    enc = ENCODERS.create(encoder, {})
    assert enc.supports(bb)  # every built-in backbone/cut is supported
    out = enc.build(bb)(torch.rand(2, *bb.image_shape))
    assert out.ndim == 4 and tuple(out.shape[2:]) == bb.cut_shape[1:]


def test_count_halvings() -> None:
    assert count_halvings((64, 64), (16, 16)) == 2
    assert count_halvings((30, 28), (7, 7)) == 2
    assert count_halvings((32, 32), (32, 32)) == 0
    with pytest.raises(ValueError, match="halved"):
        count_halvings((32, 32), (12, 12))


class _UnpaddedConvBackbone(Backbone):
    """An unregistered backbone whose cut (unpadded conv) is no halving of the input."""

    class Params(PluginParams):
        cut: str = "conv"

    def layers(self) -> list:
        return [("conv", lambda: nn.Conv2d(1, 4, 3)),
                ("head", lambda: nn.Sequential(nn.Flatten(), nn.LazyLinear(K)))]


def test_funnel_rejects_cut_that_is_not_a_halving() -> None:
    bb = _UnpaddedConvBackbone(_UnpaddedConvBackbone.Params(), (1, 16, 16), K)
    funnel = ENCODERS.create("funnel", {})
    assert bb.cut_shape == (4, 14, 14) and not funnel.supports(bb)
    with pytest.raises(ValueError, match="halved"):
        funnel.build(bb)


@pytest.mark.parametrize(("params", "n3x3"), [({}, 2), ({"depth": 1}, 1),
                                              ({"depth": 3, "channels": 4}, 3)])
def test_funnel_depth_and_channels(params: dict, n3x3: int) -> None:
    edge = ENCODERS.create("funnel", params).build(backbone("siftfunnel_cnn"))
    convs = [m for m in edge.funnel if isinstance(m, nn.Conv2d)]
    assert sum(m.kernel_size == (3, 3) for m in convs) == n3x3
    out = edge(torch.rand(1, 3, 64, 64))
    assert out.shape == (1, params.get("channels", 12), 16, 16)


def test_funnel_attention_flag_and_param_ranges() -> None:
    bb = backbone("siftfunnel_cnn")
    on = ENCODERS.create("funnel", {}).build(bb)
    off = ENCODERS.create("funnel", {"attention": False}).build(bb)
    assert any(isinstance(m, CBAM) for m in on.modules())
    assert not any(isinstance(m, (SE, TripletAttention, CBAM)) for m in off.modules())
    assert sum(p.numel() for p in off.parameters()) < sum(
        p.numel() for p in on.parameters())
    with pytest.raises(pydantic.ValidationError):
        ENCODERS.create("funnel", {"channels": 0})
    with pytest.raises(pydantic.ValidationError):
        ENCODERS.create("plain", {"width": 3})


# -- reference numbers and assembly --------------------------------------------------
@pytest.mark.parametrize(("encoder", "params", "macs", "elements"), [
    ("funnel", 10.4e3, 10.3e6, 12 * 16 * 16),
    ("plain", 76e3, 82.6e6, 128 * 16 * 16),
])
def test_reference_edge_costs_at_64x64_rgb(encoder: str, params: float, macs: float,
                                           elements: int) -> None:
    edge = build_edge(backbone("siftfunnel_cnn"), spec(encoder),
                      DEFENSES.create("none"), ([0.5] * 3, [0.25] * 3))
    cost = edge_cost(edge, (3, 64, 64))
    assert cost.params == pytest.approx(params, rel=0.05)
    assert cost.macs == pytest.approx(macs, rel=0.05)
    assert cost.elements == elements and cost.bytes == 4 * elements


def test_build_edge_layout_and_spec_forms() -> None:
    bb, none = backbone("mnist_cnn"), DEFENSES.create("none")
    funnel_cls = ENCODERS.get("funnel")
    edge = build_edge(bb, SimpleNamespace(name="funnel",
                                          params=funnel_cls.Params(channels=3)),
                      none, ([0.1], [0.3]))
    assert isinstance(edge, DefendedEdge)
    assert isinstance(edge.encoder[0], Normalize)
    assert edge(torch.rand(2, 1, 28, 28)).shape == (2, 3, 14, 14)

    class Other(pydantic.BaseModel):  # a foreign Params model (e.g. the scenario's)
        channels: int = 5
    edge = build_edge(bb, SimpleNamespace(name="funnel", params=Other()), none,
                      ([0.1], [0.3]))
    assert edge(torch.rand(1, 1, 28, 28)).shape[1] == 5
    with pytest.raises(ValueError, match="channel"):
        build_edge(bb, spec("plain"), none, ([0.1] * 3, [0.3] * 3))
    with pytest.raises(UnknownPluginError, match="plain"):
        build_edge(bb, spec("nope"), none, ([0.1], [0.3]))


def test_defense_edge_spec_hook_swaps_the_encoder() -> None:
    class ToFunnel(Defense):
        def edge_spec(self, spec_: object) -> object:
            return spec("funnel", channels=2)

    edge = build_edge(backbone("siftfunnel_cnn"), spec("plain"),
                      ToFunnel(ToFunnel.Params()), ([0.5] * 3, [0.25] * 3))
    assert edge_cost(edge, (3, 64, 64)).feature_shape == (2, 16, 16)


# -- cloud ----------------------------------------------------------------------------
def numel(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def make_cloud() -> CloudModel:
    bb = backbone("siftfunnel_cnn", (3, 32, 32))  # cut 128 x 8 x 8
    return build_cloud(bb, {"full": ((128, 8, 8), "auto"), "thin": ((12, 8, 8), "auto"),
                            "lin": ((4, 8, 8), "linear"), "up": ((128, 8, 8), "up")})


def test_cloud_tiers_share_one_trunk() -> None:
    cloud = make_cloud()
    assert cloud.tiers == ["full", "thin", "lin", "up"]
    assert isinstance(cloud.adapters["full"], nn.Identity)
    assert any(isinstance(m, Up) for m in cloud.adapters["thin"].modules())
    assert isinstance(cloud.adapters["lin"], nn.Conv2d)
    assert any(isinstance(m, Up) for m in cloud.adapters["up"].modules())
    for tier, (c, h, w) in cloud.feature_shapes.items():
        z = torch.rand(2, c, h, w)
        assert cloud(z, tier).shape == (2, K)
        view = cloud.tier_view(tier)
        assert view.trunk is cloud.trunk and view.adapter is cloud.adapters[tier]
        torch.testing.assert_close(view.eval()(z), cloud.eval()(z, tier))
        cloud.train()
    # One trunk in total: the cloud holds the trunk's parameters plus the adapters'.
    assert numel(cloud) == numel(cloud.trunk) + numel(cloud.adapters)
    assert numel(cloud.adapters["thin"]) > 0


def test_tier_view_trains_the_cloud_itself() -> None:
    cloud = make_cloud()
    cloud.tier_view("thin")(torch.rand(2, 12, 8, 8)).sum().backward()
    assert cloud.trunk.fc2.weight.grad is not None
    assert cloud.adapters["lin"].weight.grad is None


def test_cloud_errors_name_the_problem() -> None:
    cloud = make_cloud()
    with pytest.raises(ValueError, match="known tiers: full, thin, lin, up"):
        cloud(torch.rand(1, 128, 8, 8), "gold")
    with pytest.raises(ValueError, match="known tiers"):
        cloud.tier_view("gold")
    bb = backbone("siftfunnel_cnn", (3, 32, 32))
    with pytest.raises(ValueError, match="spatial size"):
        CloudModel(bb, {"a": ((12, 16, 16), "auto")})
    with pytest.raises(ValueError, match="adapter kind"):
        CloudModel(bb, {"a": ((12, 8, 8), "cubic")})
    with pytest.raises(ValueError, match="tiers"):
        CloudModel(bb, {})


def test_trunk_keeps_batchnorm_statistics_per_tier():
    """Tiers with differently scaled features must not share eval-mode statistics."""
    from strategies.models.cloud import TierBatchNorm
    backbone = BACKBONES.create("siftfunnel_cnn", {}, image_shape=(1, 16, 16), num_classes=3)
    cloud = build_cloud(backbone, {"a": ((128, 4, 4), "auto"), "b": ((128, 4, 4), "auto")})
    norms = [m for m in cloud.trunk.modules() if isinstance(m, TierBatchNorm)]
    assert norms and not any(isinstance(m, torch.nn.BatchNorm2d) and m.affine
                             for m in cloud.trunk.modules())
    cloud.train()
    with torch.no_grad():
        for _ in range(20):
            cloud(torch.randn(16, 128, 4, 4) * 10.0, "a")
            cloud(torch.randn(16, 128, 4, 4) * 0.1, "b")
    first = norms[0].tier_stats
    assert first["a"].running_var.mean() > 10 * first["b"].running_var.mean()
    # the view of a tier uses that tier's statistics
    cloud.eval()
    z = torch.randn(4, 128, 4, 4)
    assert torch.allclose(cloud.tier_view("b")(z), cloud(z, "b"))
