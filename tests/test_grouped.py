"""The grouped layout (simulator/engine/grouped.py) computes what one module per device
computes: outputs, gradients and BatchNorm running statistics, for every encoder on
every backbone cut, with devices whose weights differ."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from simulator.engine.grouped import GroupedEdge, supports
from strategies.defenses import DEFENSES
from strategies.models import BACKBONES, ENCODERS, build_edge

ENCODER_SPECS = [("plain", {}), ("funnel", {"width": 16, "channels": 4, "hidden": 8}),
                 ("funnel", {"width": 8, "channels": 2, "attention": False})]


class _Spec:
    def __init__(self, name: str, params: dict) -> None:
        self.name, self.params = name, params


def _edges() -> list[tuple[str, str, str, dict]]:
    cases = []
    for bb_name, cls in BACKBONES.items():
        for cut in cls.cuts():
            backbone = BACKBONES.create(bb_name, {"cut": cut},
                                        image_shape=cls.example_shape, num_classes=3)
            for enc, params in ENCODER_SPECS:
                if ENCODERS.create(enc, params).supports(backbone):
                    cases.append((bb_name, cut, enc, params))
    return cases


def _edge(bb_name: str, cut: str, enc: str, params: dict) -> nn.Module:
    torch.manual_seed(0)
    cls = BACKBONES.get(bb_name)
    backbone = BACKBONES.create(bb_name, {"cut": cut}, image_shape=cls.example_shape,
                                num_classes=3)
    channels = cls.example_shape[0]
    return build_edge(backbone, _Spec(enc, params), DEFENSES.create("none", {}),
                      ([0.4] * channels, [0.3] * channels))


def _devices(edge: nn.Module, n: int) -> list[nn.Module]:
    """``n`` float64 copies of ``edge`` whose weights and running statistics all differ
    (float64: no rounding difference can flip a ReLU or a max-pool's choice)."""
    copies = []
    for i in range(n):
        device = copy.deepcopy(edge).double()
        gen = torch.Generator().manual_seed(i)
        with torch.no_grad():
            for name, t in device.state_dict().items():
                if t.is_floating_point() and not name.endswith(("mean", "std")):
                    noise = 0.2 * torch.randn(t.shape, generator=gen, dtype=t.dtype)
                    t.add_(noise.abs() if name.endswith("running_var") else noise)
        copies.append(device)
    return copies


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("case", _edges(), ids=lambda c: f"{c[0]}-{c[1]}-{c[2]}"
                         f"{'' if c[3].get('attention', True) else '-noattn'}")
def test_grouped_devices_compute_what_one_module_each_computes(case, training):
    n, batch = 3, 2
    devices = [d.train(training) for d in _devices(_edge(*case), n)]
    shape = BACKBONES.get(case[0]).example_shape
    x = torch.rand(n, batch, *shape, generator=torch.Generator().manual_seed(7),
                   dtype=torch.float64)
    stacked = {k: torch.stack([d.state_dict()[k] for d in devices]).clone()
               for k in devices[0].state_dict()}
    names = {k for k, _ in devices[0].named_parameters()}
    for k in names:
        stacked[k].requires_grad_()

    grouped = GroupedEdge(copy.deepcopy(devices[0]))(stacked, x)
    alone = [d(x[i]) for i, d in enumerate(devices)]
    upstream = torch.randn(grouped.shape, generator=torch.Generator().manual_seed(8),
                           dtype=torch.float64)
    torch.autograd.backward(list(grouped.unbind(0)), list(upstream.unbind(0)))
    for i, z in enumerate(alone):
        z.backward(upstream[i])

    scale = max(z.detach().abs().max().item() for z in alone)
    for i, z in enumerate(alone):
        torch.testing.assert_close(grouped[i].detach(), z.detach(), rtol=1e-9, atol=1e-10 * scale)
    grads = {k: torch.stack([dict(d.named_parameters())[k].grad for d in devices])
             for k in names}
    # A bias before a BatchNorm has a gradient of zero up to rounding: tolerances
    # follow the largest gradient of the edge, not each tensor's own.
    grad_scale = max(g.abs().max().item() for g in grads.values())
    for k in stacked:
        if k in names:
            expected, actual, tol = grads[k], stacked[k].grad, 1e-10 * grad_scale
        else:
            expected = torch.stack([d.state_dict()[k] for d in devices])
            actual = stacked[k]
            tol = 1e-10
        torch.testing.assert_close(actual, expected, rtol=1e-9, atol=tol,
                                   msg=lambda m: f"{k}: {m}")
    if training and any(isinstance(m, nn.BatchNorm2d) for m in devices[0].modules()):
        moved = [k for k in stacked if k.endswith("running_mean")]
        assert moved and all(stacked[k].grad is None for k in moved)


def test_layers_without_a_grouped_rule_are_refused():
    edge = _edge("mnist_cnn", "relu2", "plain", {})
    assert supports(edge)
    random_head = copy.deepcopy(edge)
    random_head.head = nn.Dropout(0.5)
    unknown = copy.deepcopy(edge)
    unknown.head = nn.Softsign()
    for module in (random_head, unknown):
        assert not supports(module)
        with pytest.raises(ValueError, match="grouped rule"):
            GroupedEdge(module)


def test_a_linear_layer_runs_on_features_only():
    linear = nn.Sequential(nn.Linear(5, 2))
    tensors = {k: torch.stack([v, v]) for k, v in linear.state_dict().items()}
    with pytest.raises(ValueError, match=r"0: .*Linear layer on \(batch, features\)"):
        GroupedEdge(linear)(tensors, torch.zeros(2, 3, 1, 4, 5))


def test_defenses_whose_edges_run_grouped():
    """Defenses without edge layers run grouped; those with a learned or random head
    (or modules trained only by a device-side term) do not."""
    backbone = BACKBONES.create("mnist_cnn", {}, image_shape=(1, 28, 28), num_classes=3)
    grouped = {name for name in DEFENSES.names()
               if supports(build_edge(backbone, _Spec("plain", {}),
                                      DEFENSES.create(name, {}), ([0.1], [0.3])))}
    assert {"none", "gaussian_noise", "laplace_noise", "siftfunnel"} <= grouped
    assert not {"vib", "shredder"} & grouped
