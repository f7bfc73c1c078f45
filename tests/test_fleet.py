"""The real fleet's pure pieces: distributions, traces, encoder ladder, clock."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

import simulator.fleet as fleet
from simulator.fleet import (Dist, Hardware, RungCost, TraceError, assign_rungs,
                             availability_factor, draw_hardware, next_round_start,
                             plan_round, quantity, read_trace, sample, tally)
from simulator.scenario import RoundTiming, TimeOfDay
from simulator.seeding import rng


def test_public_names_import():
    for name in fleet.__all__:
        assert getattr(fleet, name) is not None


# --- distributions ---------------------------------------------------------------

POSITIVE = TypeAdapter(quantity(gt=0))
PROBABILITY = TypeAdapter(quantity(gt=0, le=1))


def _error(adapter: TypeAdapter, value: object) -> str:
    with pytest.raises(ValidationError) as info:
        adapter.validate_python(value)
    return str(info.value)


def test_a_plain_number_is_fixed_and_writes_back_as_a_number():
    spec = POSITIVE.validate_python(20)
    assert spec == Dist(dist="fixed", value=20.0)
    assert sample(spec, np.random.default_rng(0)) == 20.0
    assert POSITIVE.dump_python(spec) == 20.0
    lognormal = POSITIVE.validate_python({"dist": "lognormal", "median": 5,
                                          "spread": 2})
    assert POSITIVE.dump_python(lognormal) == {"dist": "lognormal", "median": 5.0,
                                               "spread": 2.0}


SPECS = [{"dist": "uniform", "low": 0.2, "high": 0.9},
         {"dist": "lognormal", "median": 0.5, "spread": 3, "max": 1.0},
         {"dist": "lognormal", "median": 0.5, "spread": 3, "min": 0.1, "max": 0.8},
         {"dist": "categorical", "values": [0.25, 0.5, 1.0], "weights": [1, 2, 3]}]


@pytest.mark.parametrize("raw", SPECS, ids=lambda r: r["dist"])
def test_draws_are_reproducible_and_within_the_support(raw):
    spec = PROBABILITY.validate_python(raw)
    a = [sample(spec, rng(7, "d", i)) for i in range(300)]
    b = [sample(spec, rng(7, "d", i)) for i in range(300)]
    assert a == b
    low, high = spec.support()
    assert all(low <= x <= high and 0 < x <= 1 for x in a)
    assert len(set(a)) > 2  # it varies


def test_lognormal_spread_is_the_multiplicative_sigma():
    spec = POSITIVE.validate_python({"dist": "lognormal", "median": 20, "spread": 3})
    gen = np.random.default_rng(0)
    x = np.array([sample(spec, gen) for _ in range(20000)])
    assert np.median(x) == pytest.approx(20, rel=0.05)
    inside = np.mean((x >= 20 / 3) & (x <= 20 * 3))
    assert inside == pytest.approx(0.683, abs=0.02)


def test_categorical_follows_its_weights():
    spec = POSITIVE.validate_python({"dist": "categorical", "values": [1, 2],
                                     "weights": [1, 3]})
    gen = np.random.default_rng(0)
    x = np.array([sample(spec, gen) for _ in range(8000)])
    assert np.mean(x == 2) == pytest.approx(0.75, abs=0.02)


@settings(max_examples=30, deadline=None)
@given(low=st.floats(1e-3, 1e3), width=st.floats(1e-3, 1e3), seed=st.integers(0, 99))
def test_uniform_stays_within_low_high(low, width, seed):
    spec = POSITIVE.validate_python({"dist": "uniform", "low": low,
                                     "high": low + width})
    assert low <= sample(spec, np.random.default_rng(seed)) <= low + width


@pytest.mark.parametrize(("adapter", "raw", "expected"), [
    (POSITIVE, -5, "must be greater than 0"),
    (POSITIVE, True, "not true/false"),
    (POSITIVE, {"dist": "uniform", "low": 3, "high": 2}, "low < high"),
    (POSITIVE, {"dist": "uniform", "low": 0, "high": 2}, "every uniform value must be "
                                                         "greater than 0"),
    (POSITIVE, {"dist": "uniform", "low": 1}, "missing high"),
    (POSITIVE, {"dist": "uniform", "low": 1, "high": 2, "median": 1},
     "median does not"),
    (POSITIVE, {"dist": "normal", "mean": 1}, "'fixed', 'uniform', 'lognormal' or "
                                              "'categorical'"),
    (POSITIVE, {"dist": "lognormal", "median": 5, "spread": 0.5}, "greater than or "
                                                                  "equal to 1"),
    (POSITIVE, {"dist": "lognormal", "median": 5, "spread": 2, "max": 4},
     "median 5 lies outside"),
    (POSITIVE, {"dist": "categorical", "values": [1, 2], "weights": [1, 0]},
     "weights must be positive"),
    (POSITIVE, {"dist": "categorical", "values": [1, 2], "weights": [1]},
     "one weight per value"),
    (POSITIVE, {"dist": "uniform", "low": 1, "high": math.inf}, "finite"),
    (PROBABILITY, 1.5, "less than or equal to 1"),
    (PROBABILITY, {"dist": "categorical", "values": [0.5, 1.2]}, "reaches 1.2"),
    (PROBABILITY, {"dist": "lognormal", "median": 0.5, "spread": 2},
     "unbounded above: set `max`"),
])
def test_specs_outside_their_field_are_rejected(adapter, raw, expected):
    assert expected in _error(adapter, raw)


def test_hardware_layers_most_specific_wins_and_draws_per_field():
    lognormal = Dist(dist="lognormal", median=5, spread=2)
    fleet_layer = {"compute_gflops": lognormal, "availability": 0.5}
    tier_layer = {"availability": Dist(dist="fixed", value=0.9), "memory_mb": None}
    hw = draw_hardware([fleet_layer, tier_layer], device_seed=11)
    assert hw.availability == 0.9 and hw.memory_mb == fleet.DEFAULTS["memory_mb"]
    assert hw.compute_gflops == sample(lognormal, rng(11, "profile", "compute_gflops"))
    assert draw_hardware([fleet_layer, tier_layer], 11) == hw
    assert draw_hardware([fleet_layer], 12).compute_gflops != hw.compute_gflops


# --- traces ----------------------------------------------------------------------

def _write(tmp_path, name: str, frame: pd.DataFrame):
    path = tmp_path / name
    if name.endswith(".csv"):
        frame.to_csv(path, index=False)
    else:
        pytest.importorskip("pyarrow")
        frame.to_parquet(path, index=False)
    return path


DEVICES = pd.DataFrame({"compute_gflops": [1.0, 2.0, 3.0, 4.0],
                        "uplink_mbps": [5.0, 6.0, 7.0, 8.0],
                        "memory_mb": [64.0, 128.0, 256.0, 512.0],
                        "availability": [0.5, 0.6, 0.7, 0.8]})


def test_one_row_per_device_in_order_or_a_seeded_subset(tmp_path):
    trace = read_trace(_write(tmp_path, "fleet.csv", DEVICES))
    assert not trace.per_type and trace.columns == tuple(DEVICES.columns)
    assert trace.rows_for([10, 11, 12, 13], seed=0).tolist() == [0, 1, 2, 3]
    assert trace.row(2) == {"compute_gflops": 3.0, "uplink_mbps": 7.0,
                            "memory_mb": 256.0, "availability": 0.7}
    subset = trace.rows_for([10, 11], seed=5)
    assert len(set(subset)) == 2
    assert subset.tolist() == trace.rows_for([1, 2], seed=5).tolist()
    with pytest.raises(TraceError, match=r"fleet\.csv.*4 rows for 6 devices"):
        trace.rows_for(list(range(6)), seed=0)


def test_one_row_per_device_type_drawn_by_share(tmp_path):
    types = DEVICES.iloc[:2].assign(share=[1, 3], device_type=["old", "new"])
    trace = read_trace(_write(tmp_path, "types.parquet", types))
    assert trace.per_type
    rows = trace.rows_for(list(range(4000)), seed=0)
    assert np.mean(rows == 1) == pytest.approx(0.75, abs=0.03)
    assert rows[:50].tolist() == trace.rows_for(list(range(50)), seed=9).tolist()
    assert trace.origin(1).endswith("row 1 (new)")


@pytest.mark.parametrize(("frame", "name", "expected"), [
    (DEVICES.assign(cpu=1), "t.csv", "unknown column(s) ['cpu']"),
    (DEVICES.assign(uplink_mbps=[1, -2, 3, 4]), "t.csv", "column 'uplink_mbps' row 1"),
    (DEVICES.assign(availability=[0.5, 1.5, 0.5, 0.5]), "t.csv",
     "column 'availability' row 1: must be a number in (0, 1]"),
    (DEVICES.assign(memory_mb=["a", 1, 2, 3]), "t.csv", "column 'memory_mb' row 0"),
    (DEVICES.assign(share=[1, 0, 1, 1]), "t.csv", "column 'share' row 1"),
    (pd.DataFrame({"share": [1.0]}), "t.csv", "no profile column"),
    (DEVICES, "t.json", "a trace is a .csv or .parquet file"),
])
def test_trace_errors_name_the_file_and_column(tmp_path, frame, name, expected):
    path = tmp_path / name
    frame.to_csv(path, index=False)
    with pytest.raises(TraceError) as info:
        read_trace(path)
    assert str(path) in str(info.value) and expected in str(info.value)


def test_missing_trace_file(tmp_path):
    with pytest.raises(TraceError, match="nope.csv: trace file not found"):
        read_trace(tmp_path / "nope.csv")


# --- the encoder ladder ----------------------------------------------------------

# small: 1 MMAC, 1 KB out, 0.05 MB; large: 100 MMAC, 4 KB out, ~4 MB (weights + acts)
RUNGS = {"small": RungCost(params=10_000, macs=1_000_000, bytes=1_000,
                           activation_bytes=10_000),
         "large": RungCost(params=1_000_000, macs=100_000_000, bytes=4_000,
                           activation_bytes=100_000)}


def _hw(gflops: float, mbps: float = 100.0, memory: float = 512.0) -> Hardware:
    return Hardware(gflops, mbps, memory, 1.0)


def test_largest_fit_by_deadline_and_memory():
    devices = [_hw(100), _hw(5), _hw(100, memory=1), _hw(0.01)]
    fits = assign_rungs(devices, RUNGS, deadline_ms=10)
    # 100 GFLOP/s: large takes 2 ms + 0.32 ms upload; 5 GFLOP/s: 40 ms > 10 ms
    assert [f.rung for f in fits] == ["large", "small", "small", None]
    assert fits[0].reason.startswith("'large' fits deadline 10 ms (2.3 ms) and memory "
                                     "512 MB (4.10 MB)")
    assert "'large' needs 40.3 ms > deadline 10 ms" in fits[1].reason
    assert "'large' needs 4.10 MB > memory 1 MB" in fits[2].reason
    assert fits[3].reason == ("unable: smallest rung 'small' needs 200.1 ms > "
                              "deadline 10 ms")


def test_unfit_smallest_and_memory_only_rule():
    fits = assign_rungs([_hw(0.01)], RUNGS, deadline_ms=10, unfit="smallest")
    assert fits[0].rung == "small" and "by rule (unfit: smallest)" in fits[0].reason
    fits = assign_rungs([_hw(0.01, memory=8), _hw(100, memory=0.01)], RUNGS,
                        deadline_ms=None, memory=True)
    assert [f.rung for f in fits] == ["large", None]
    assert "0.05 MB > memory 0.01 MB" in fits[1].reason
    with pytest.raises(ValueError, match="needs a limit"):
        assign_rungs([_hw(1)], RUNGS, deadline_ms=None, memory=False)


def test_rung_cost_from_an_edge_cost():
    from strategies.models import EdgeCost
    cost = EdgeCost(params=5, macs=7, feature_shape=(2,), elements=2, bytes=8)
    assert RungCost.of(cost) == RungCost(5, 7, 8, 8)
    assert RungCost.of(cost, activation_bytes=100).memory_mb == pytest.approx(1.2e-4)


# --- the virtual clock -----------------------------------------------------------

def _plan(rnd=0, seed=1, n=20, target=10, avail=1.0, work=None, **timing):
    ids = list(range(100, 100 + n))
    work = np.linspace(1.0, 20.0, n) if work is None else np.asarray(work, float)
    return plan_round(rnd, seed, ids, [avail] * n, work, [1000] * n, target,
                      RoundTiming(**timing), group="t")


def test_default_timing_is_the_historical_sampling():
    ids, avail = list(range(30)), [0.6] * 30
    plan = plan_round(3, 5, ids, avail, [1.0] * 30, [10] * 30, 9, RoundTiming(),
                      group="mid")
    # sample_round: reachable by availability, then a permutation keyed by the tier
    reach = [d for d in ids if rng(5, "availability", 3, d).random() < 0.6]
    picked = rng(5, "sample", 3, "mid").permutation(len(reach))[:min(9, len(reach))]
    assert plan.available == tuple(reach)
    assert plan.selected == tuple(sorted(reach[i] for i in picked))
    assert plan.accepted == plan.selected and plan.duration_s == 1.0


def test_a_device_slower_than_the_deadline_never_completes_under_drop():
    work = [1.0, 2.0, 50.0]
    for rnd in range(10):
        plan = _plan(rnd, n=3, target=3, work=work, deadline_s=10)
        assert 102 not in plan.accepted and 102 in plan.straggled
        assert plan.duration_s == 10.0
        slow = plan.devices[2]
        assert slow.status == "straggled" and slow.busy_s == 10.0
        assert slow.work_fraction == pytest.approx(0.2) and slow.bytes_sent == 200
    late = _plan(n=3, target=3, work=work, deadline_s=10, stragglers="accept_late")
    assert late.devices[2].status == "late" and late.accepted == (100, 101, 102)
    assert late.duration_s == 50.0 and 102 in late.straggled


def test_over_selection_fills_the_round_with_the_fastest():
    plan = _plan(n=20, target=10, over_selection=1.3)
    assert len(plan.selected) == 13
    assert len(plan.accepted) == 10 and len(plan.ids("cancelled")) == 3
    busy = {d.device_id: d.busy_s for d in plan.devices}
    assert max(busy[d] for d in plan.accepted) == plan.duration_s
    assert min(busy[d] for d in plan.ids("cancelled")) == plan.duration_s
    assert len(_plan(n=20, target=10, over_selection=1.1).selected) == 11


def test_dropouts_leave_mid_round_and_are_recorded():
    plan = _plan(n=20, target=20, work=[10.0] * 20, dropout_probability=0.5)
    dropped = [d for d in plan.devices if d.status == "dropped"]
    assert 3 <= len(dropped) <= 17
    assert set(plan.dropped) == {d.device_id for d in dropped}
    for d in dropped:
        assert 0 < d.work_fraction < 1
        assert d.busy_s == pytest.approx(10 * d.work_fraction)
        assert d.bytes_sent == int(1000 * d.work_fraction)
    assert plan.accepted == tuple(sorted(set(plan.selected) - set(plan.dropped)))
    assert plan.duration_s == 10.0


def test_same_seed_same_plan():
    kw = dict(n=20, target=8, avail=0.7, over_selection=1.3, deadline_s=12,
              dropout_probability=0.2)
    assert _plan(2, **kw) == _plan(2, **kw)
    assert any(_plan(r, **kw).devices != _plan(2, **kw).devices for r in range(3, 8))
    assert any(_plan(2, seed=s, **kw).devices != _plan(2, **kw).devices
               for s in range(2, 7))


def test_time_of_day_scales_availability():
    tod = TimeOfDay(amplitude=1.0, peak_hour=12.0, start_hour=0.0)
    assert availability_factor(12 * 3600, tod) == pytest.approx(1.0)
    assert availability_factor(0.0, tod) == pytest.approx(0.0)
    assert availability_factor(6 * 3600, tod) == pytest.approx(0.5)
    assert availability_factor(1e6, None) == 1.0
    night = plan_round(0, 1, [1, 2, 3], [1.0] * 3, [1.0] * 3, [1] * 3, 3,
                       RoundTiming(time_of_day=tod), start_s=0.0)
    noon = plan_round(0, 1, [1, 2, 3], [1.0] * 3, [1.0] * 3, [1] * 3, 3,
                      RoundTiming(time_of_day=tod), start_s=12 * 3600)
    assert night.selected == () and night.duration_s == 0.0
    assert noon.selected == (1, 2, 3)


def test_tally_and_next_round_start():
    timing = RoundTiming(deadline_s=10, interval_s=60)
    plans = [_plan(r, n=3, target=3, work=[1.0, 2.0, 50.0], deadline_s=10)
             for r in range(4)]
    table = tally(plans, device_ids=[100, 101, 102, 999])
    slow = table.set_index("device_id").loc[102]
    assert slow.rounds_selected == 4 and slow.rounds_completed == 0
    assert slow.rounds_straggled == 4 and slow.busy_s == 40.0
    assert slow.bytes_sent == 4 * 200
    assert table.set_index("device_id").loc[999].rounds_selected == 0
    assert next_round_start(0.0, 10.0, timing) == 60.0
    assert next_round_start(0.0, 90.0, timing) == 90.0
    assert next_round_start(5.0, 3.0, RoundTiming()) == 8.0
