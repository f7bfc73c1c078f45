"""Edge cost: parameters, MACs and transmitted size on hand-computable models."""

from __future__ import annotations


import pytest
import torch
from torch import nn

from strategies.defenses import DefendedEdge
from strategies.models import EdgeCost, edge_cost


def test_conv_macs_params_and_size_match_hand_count() -> None:
    conv = nn.Conv2d(3, 5, 3, padding=1)
    cost = edge_cost(conv, (3, 8, 6))
    assert cost.macs == 5 * 3 * 3 * 3 * 8 * 6  # Cout * Cin * k * k * H * W
    assert cost.params == 5 * 3 * 3 * 3 + 5
    assert cost.feature_shape == (5, 8, 6)
    assert cost.elements == 5 * 8 * 6
    assert cost.bytes == 4 * cost.elements


def test_linear_macs_and_custom_bytes_per_element() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 7))
    cost = edge_cost(model, (3, 4, 4), bytes_per_element=2)
    assert cost.macs == 3 * 4 * 4 * 7
    assert cost.params == 3 * 4 * 4 * 7 + 7
    assert cost.feature_shape == (7,)
    assert cost.bytes == 14


def test_strided_conv_counts_output_positions_only() -> None:
    conv = nn.Conv2d(2, 4, 3, stride=2, padding=1, bias=False)
    cost = edge_cost(conv, (2, 8, 8))
    assert cost.feature_shape == (4, 4, 4)
    assert cost.macs == 4 * 2 * 9 * 4 * 4


def test_training_only_modules_are_not_deployed_cost() -> None:
    encoder = nn.Conv2d(1, 4, 3, padding=1)
    head = nn.Conv2d(4, 2, 1)
    decoder = nn.Sequential(nn.Flatten(), nn.Linear(2 * 6 * 6, 36))
    edge = DefendedEdge(encoder, head=head, training_only={"decoder": decoder})
    cost = edge_cost(edge, (1, 6, 6))
    assert cost.params == (4 * 9 + 4) + (2 * 4 + 2)
    assert cost.params == sum(p.numel() for p in edge.deployed_parameters())
    assert cost.params < sum(p.numel() for p in edge.parameters())
    assert cost.macs == 4 * 9 * 36 + 2 * 4 * 36
    assert cost.feature_shape == (2, 6, 6)


def test_measurement_uses_eval_mode_and_restores_modes() -> None:
    bn = nn.BatchNorm2d(3)
    frozen = nn.BatchNorm2d(3).eval()
    model = nn.Sequential(nn.Conv2d(3, 3, 1), bn, frozen).train()
    frozen.eval()
    before = bn.running_mean.clone()
    edge_cost(model, (3, 4, 4))
    assert torch.equal(bn.running_mean, before)  # no running-stat update: eval mode
    assert model.training and bn.training and not frozen.training


def test_edge_cost_is_frozen_and_validates_arguments() -> None:
    cost = edge_cost(nn.Identity(), (1, 2, 2))
    assert cost == EdgeCost(params=0, macs=0, feature_shape=(1, 2, 2), elements=4,
                            bytes=16)
    with pytest.raises(AttributeError):
        cost.macs = 1  # type: ignore[misc]
    with pytest.raises(ValueError, match="bytes_per_element"):
        edge_cost(nn.Identity(), (1, 2, 2), bytes_per_element=0)
    with pytest.raises(ValueError, match="image_shape"):
        edge_cost(nn.Identity(), (2, 2))
