"""FedAvg's weighted average: weights, integer buffers, one state, bad weights."""

import pytest
import torch

from strategies.federation import weighted_average


def _state(value: float, batches: int) -> dict[str, torch.Tensor]:
    return {"w": torch.full((3, 2), value), "b": torch.tensor([value, -value]),
            "bn.num_batches_tracked": torch.tensor(batches)}


def test_floats_are_sample_weighted_and_counters_take_the_maximum():
    out = weighted_average([(_state(1.0, 4), 1.0), (_state(4.0, 9), 2.0),
                            (_state(-2.0, 7), 1.0)])
    expected = (1.0 * 1 + 4.0 * 2 - 2.0 * 1) / 4
    torch.testing.assert_close(out["w"], torch.full((3, 2), expected))
    torch.testing.assert_close(out["b"], torch.tensor([expected, -expected]))
    assert out["bn.num_batches_tracked"].item() == 9
    assert out["w"].dtype == torch.float32 and out["bn.num_batches_tracked"].dtype == torch.int64


def test_matches_a_float64_average_within_float32_rounding():
    gen = torch.Generator().manual_seed(0)
    states = [({"w": torch.randn(1000, generator=gen)}, float(w)) for w in (3, 1, 7, 2)]
    out = weighted_average(states)["w"]
    exact = sum(s["w"].double() * w for s, w in states) / 13
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), exact, rtol=1e-6, atol=1e-6)
    assert torch.equal(out, weighted_average(states)["w"])   # same order, same bits


def test_one_state_comes_back_bit_for_bit_as_a_copy():
    state = {"w": torch.randn(5)}
    out = weighted_average([(state, 3.0)])
    assert torch.equal(out["w"], state["w"]) and out["w"] is not state["w"]
    out["w"].zero_()
    assert state["w"].abs().sum() > 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inputs_are_left_untouched(dtype):
    a, b = _state(1.0, 1), _state(3.0, 2)
    a["w"], b["w"] = a["w"].to(dtype), b["w"].to(dtype)
    out = weighted_average([(a, 1.0), (b, 1.0)])
    assert torch.equal(a["w"], torch.full((3, 2), 1.0, dtype=dtype))
    assert out["w"].dtype == dtype


@pytest.mark.parametrize("weights, message", [([], "at least one"),
                                              ([0.0, 0.0], "positive sum"),
                                              ([1.0, -1.0], ">= 0")])
def test_bad_weights_are_refused_with_what_was_given(weights, message):
    with pytest.raises(ValueError, match=message):
        weighted_average([(_state(1.0, 1), w) for w in weights])
