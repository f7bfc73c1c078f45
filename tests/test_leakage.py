"""The long leakage table, its wide views, and the recorder writing them."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from analysis.metrics import mean_ci
from simulator.leakage import (COLUMNS, leakage_long, wide_devices, wide_tiers,
                               write_table)

T_975_1DF = 12.706204736174698  # Student t quantile, 0.975, one degree of freedom
INFO = {"dcor2_bc": 0.3, "nonzero_per_sample": 12.0, "nonzero_fraction": 0.5,
        "eval_acc_real": 0.9, "chance": 0.25, "info_samples": 40, "mi_nats": 1.5,
        "mi_estimator": "smile/mlp, top-8 PCs"}


def _image(tier, attack, device, ssim, psnr, mse, correct, nn):
    threat = {"x": "query_free", "y": "white_box"}[attack]
    return {"tier": tier, "attack": attack, "threat_model": threat, "device_id": device,
            "sample": 0, "ssim": ssim, "psnr": psnr, "mse": mse,
            "eval_correct": correct, "nn_correct": nn}


@pytest.fixture
def images() -> pd.DataFrame:
    """Devices 1 and 2 on tier ``a`` (two images each), device 3 on ``b`` (one)."""
    rows = [
        _image("a", "x", 1, 0.2, 10, 0.02, True, False),
        _image("a", "x", 1, 0.4, 12, 0.04, False, False),
        _image("a", "y", 1, 0.5, 8, 0.05, True, True),
        _image("a", "y", 1, 0.7, 10, 0.07, True, False),
        _image("a", "x", 2, 0.8, 20, 0.01, True, True),
        _image("a", "x", 2, 0.6, 22, 0.01, True, True),
        _image("a", "y", 2, 0.1, 5, 0.1, False, False),
        _image("a", "y", 2, 0.1, 5, 0.2, False, False),
        _image("b", "x", 3, 0.25, 15, 0.05, False, True),
        _image("b", "y", 3, 0.35, 14, 0.04, True, False),
    ]
    return pd.DataFrame(rows)


def _get(long, **where):
    mask = np.ones(len(long), bool)
    for key, value in where.items():
        mask &= (long[key] == value).fillna(False).to_numpy(bool)
    rows = long[mask]
    assert len(rows) == 1, where
    return rows.iloc[0]


def test_device_means_intervals_and_threat_models(images):
    long = leakage_long(images)
    assert list(long.columns) == list(COLUMNS)
    row = _get(long, scope="device", device_id=1, attack="x", metric="ssim")
    assert row["value"] == pytest.approx(0.3) and row["n"] == 2
    assert (row["lo"], row["hi"]) == pytest.approx((0.3 - 0.1 * T_975_1DF,
                                                   0.3 + 0.1 * T_975_1DF))
    assert row["threat_model"] == "query_free"
    expected = {"psnr": 11, "mse": 0.03, "attack_acc": 0.5, "nn_ident": 0.0,
                "recognisable": 0.5}  # SSIM 0.4 > 0.3, 0.2 not
    for metric, value in expected.items():
        assert _get(long, scope="device", device_id=1, attack="x",
                    metric=metric)["value"] == pytest.approx(value), metric
    single = _get(long, scope="device", device_id=3, attack="y", metric="ssim")
    assert single["value"] == pytest.approx(0.35) and np.isnan(single["lo"])
    assert long.loc[long["scope"] == "device", "device_id"].notna().all()
    assert long.loc[long["scope"] == "tier", "device_id"].isna().all()


def test_worst_case_is_per_metric_and_lower_mse_leaks_more(images):
    long = leakage_long(images)
    expected = {  # device -> metric -> (value, attack that leaked most)
        1: {"ssim": (0.6, "y"), "psnr": (11, "x"), "mse": (0.03, "x"),
            "attack_acc": (1.0, "y"), "nn_ident": (0.5, "y"), "recognisable": (1, "y")},
        2: {"ssim": (0.7, "x"), "psnr": (21, "x"), "mse": (0.01, "x"),
            "attack_acc": (1.0, "x"), "nn_ident": (1.0, "x"), "recognisable": (1, "x")},
        3: {"ssim": (0.35, "y"), "psnr": (15, "x"), "mse": (0.04, "y"),
            "attack_acc": (1.0, "y"), "nn_ident": (1.0, "x"), "recognisable": (1, "y")},
    }
    for device, metrics in expected.items():
        for metric, (value, attack) in metrics.items():
            row = _get(long, scope="device", device_id=device, attack="worst_case",
                       metric=metric)
            assert row["value"] == pytest.approx(value), (device, metric)
            assert row["chosen_attack"] == attack, (device, metric)
            assert pd.isna(row["threat_model"])
    # the worst case carries the chosen attack's interval
    row = _get(long, scope="device", device_id=1, attack="worst_case", metric="ssim")
    assert (row["lo"], row["hi"]) == pytest.approx((0.6 - 0.1 * T_975_1DF,
                                                   0.6 + 0.1 * T_975_1DF))


def test_tier_values_are_means_over_devices_with_intervals(images):
    long = leakage_long(images)
    row = _get(long, scope="tier", tier="a", attack="worst_case", metric="ssim")
    # devices' worst cases 0.6 and 0.7: sd 0.0707, sem 0.05
    assert row["value"] == pytest.approx(0.65) and row["n"] == 2
    assert (row["lo"], row["hi"]) == pytest.approx((0.65 - 0.05 * T_975_1DF,
                                                   0.65 + 0.05 * T_975_1DF))
    assert _get(long, scope="tier", tier="a", attack="worst_case",
                metric="mse")["value"] == pytest.approx(0.02)
    row = _get(long, scope="tier", tier="a", attack="x", metric="psnr")
    assert row["value"] == pytest.approx(16.0) and row["threat_model"] == "query_free"
    one = _get(long, scope="tier", tier="b", attack="y", metric="ssim")
    assert one["value"] == pytest.approx(0.35) and one["n"] == 1 and np.isnan(one["hi"])


def test_information_rows(images):
    long = leakage_long(images, {"a": INFO, "b": {}})
    info = long[long["attack"] == "information"]
    assert set(info["tier"]) == {"a"} and info["threat_model"].isna().all()
    assert set(info["metric"]) == {"dcor2_bc", "nonzero_per_sample", "nonzero_fraction",
                                   "eval_acc_real", "chance", "mi_nats"}
    mi = _get(info, metric="mi_nats")
    assert mi["value"] == 1.5 and mi["n"] == 40
    assert mi["estimator"] == INFO["mi_estimator"]
    assert pd.isna(_get(info, metric="chance")["n"]) and info["lo"].isna().all()
    with pytest.raises(TypeError, match="'mi_critic'"):
        leakage_long(images, {"a": {"mi_critic": "mlp"}})


def test_no_images_gives_an_empty_typed_table():
    empty = pd.DataFrame(columns=["tier", "attack", "threat_model", "device_id",
                                  "sample", "ssim", "psnr", "mse", "eval_correct",
                                  "nn_correct"])
    long = leakage_long(empty)
    assert list(long.columns) == list(COLUMNS) and long.empty
    assert len(wide_devices(long)) == 0 and len(wide_tiers(long)) == 0
    only_info = wide_tiers(leakage_long(empty, {"a": INFO}))
    assert only_info.loc[0, "mi_estimator"] == INFO["mi_estimator"]
    assert only_info.loc[0, "info_samples"] == 40


# -- the wide views equal what the previous (wide-first) code produced -------------

_METRICS = {"ssim": "ssim", "psnr": "psnr", "mse": "mse", "attack_acc": "eval_correct",
            "nn_ident": "nn_correct"}


def _previous_device_leakage(images: pd.DataFrame) -> pd.DataFrame:
    """simulator/leakage.py:device_leakage before the long table (frozen reference)."""
    rows: dict[int, dict[str, float]] = {}
    for (attack, device), g in images.groupby(["attack", "device_id"], sort=True):
        row = rows.setdefault(int(device), {"device_id": int(device)})
        for name, col in _METRICS.items():
            row[f"{name}_{attack}"] = float(g[col].mean())
        _, lo, hi = mean_ci(g["ssim"].to_numpy())
        row[f"ssim_{attack}_lo"], row[f"ssim_{attack}_hi"] = lo, hi
        row[f"recognisable_{attack}"] = float((g["ssim"] > 0.3).mean())
    frame = pd.DataFrame(list(rows.values()))
    attacks = sorted(images["attack"].unique())
    ssim = frame[[f"ssim_{a}" for a in attacks]].to_numpy()
    worst = np.nanargmax(np.where(np.isnan(ssim), -np.inf, ssim), axis=1)
    frame["worst_case_attack"] = [attacks[i] for i in worst]
    for name in [*_METRICS, "recognisable"]:
        values = frame[[f"{name}_{a}" for a in attacks]].to_numpy()
        pick = np.nanmin if name == "mse" else np.nanmax
        frame[f"{name}_worst_case"] = pick(values, axis=1)
    for side in ("lo", "hi"):
        values = frame[[f"ssim_{a}_{side}" for a in attacks]].to_numpy()
        frame[f"ssim_worst_case_{side}"] = values[np.arange(len(frame)), worst]
    return frame


def _previous_tier_leakage(devices: pd.DataFrame, results: list) -> pd.DataFrame:
    """simulator/leakage.py:tier_leakage before the long table (frozen reference)."""
    attacks = sorted({c[len("ssim_"):] for c in devices.columns
                      if c.startswith("ssim_") and not c.endswith(("_lo", "_hi"))})
    rows = []
    for r in results:
        g = devices[devices["tier"] == r.tier]
        row: dict[str, object] = {"tier": r.tier, **r.information}
        for attack in attacks:
            for name in (*_METRICS, "recognisable"):
                col = f"{name}_{attack}"
                if col in g:
                    mean, lo, hi = mean_ci(g[col].dropna().to_numpy())
                    row.update({f"{col}_mean": mean, f"{col}_lo": lo, f"{col}_hi": hi})
        rows.append(row)
    return pd.DataFrame(rows)


def random_images(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    tiers = {"low": [0, 1, 2, 3], "mid": [4], "high": [5, 6, 7]}
    rows = [{"tier": t, "attack": a, "threat_model": f"tm_{a}", "device_id": d,
             "sample": s, "ssim": rng.uniform(-0.1, 0.9), "psnr": rng.uniform(5, 25),
             "mse": rng.uniform(0.0, 0.2), "eval_correct": rng.uniform() < 0.5,
             "nn_correct": rng.uniform() < 0.3}
            for t, devices in tiers.items() for a in ("rmle", "inverse_network", "qf")
            for d in devices for s in range(rng.integers(1, 5))]
    return pd.DataFrame(rows)


def _by_device(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values("device_id").reset_index(drop=True)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_views_equal_the_previous_tables(seed):
    images = random_images(seed)
    info = {"low": INFO, "mid": {**INFO, "mi_paper_nats": 0.7}, "high": {}}
    long = leakage_long(images, info)

    expected = _previous_device_leakage(images)
    got = wide_devices(long)
    assert list(got.columns) == list(expected.columns)
    pd.testing.assert_frame_equal(_by_device(got), _by_device(expected),
                                  check_dtype=False)

    tier_of = images.drop_duplicates("device_id").set_index("device_id")["tier"]
    devices = expected.assign(tier=expected["device_id"].map(tier_of))
    results = [SimpleNamespace(tier=t, information=i) for t, i in info.items()]
    expected = _previous_tier_leakage(devices, results).set_index("tier").sort_index()
    got = wide_tiers(long).set_index("tier").sort_index()
    assert set(got.columns) == set(expected.columns)
    pd.testing.assert_frame_equal(got[expected.columns], expected, check_dtype=False)


# -- the recorder: long table, wide views, history ---------------------------------

def test_recorder_writes_the_long_table_and_its_views(tmp_path):
    from conftest import SMOKE
    from simulator.adversary import TierLeakage
    from simulator.loading import validate_scenario
    from simulator.records import RunRecorder

    images = random_images(3)
    (tmp_path / "manifest.json").write_text(json.dumps({"status": "complete",
                                                        "phases": {}}))
    base = images.drop_duplicates("device_id")[["device_id", "tier"]]
    write_table(tmp_path, "devices", base.assign(accuracy=0.5))
    write_table(tmp_path, "tiers", pd.DataFrame({"tier": ["low", "mid", "high"],
                                                 "accuracy_mean": 0.5}))
    results = [TierLeakage(t, {c: g[c].to_numpy() for c in g.columns if c != "tier"},
                           {}, dict(INFO))
               for t, g in images.groupby("tier", sort=False)]
    recorder = RunRecorder(tmp_path, validate_scenario(copy.deepcopy(SMOKE)),
                           resume=True)
    recorder.leakage(results)
    long = pd.read_parquet(tmp_path / "leakage.parquet")
    assert list(long.columns) == list(COLUMNS) and len(pd.read_csv(
        tmp_path / "leakage.csv")) == len(long)
    devices = pd.read_parquet(tmp_path / "devices.parquet")
    assert devices["accuracy"].eq(0.5).all() and "ssim_worst_case" in devices
    tiers = pd.read_csv(tmp_path / "tiers.csv")
    for col in ("ssim_worst_case_mean", "attack_acc_worst_case_mean", "mi_nats"):
        assert tiers[col].notna().all(), col
    assert not list(tmp_path.glob(".*.tmp"))

    recorder.leakage(results[:1])  # a second pass: the first moves to history/
    (history,) = (tmp_path / "history").iterdir()
    assert {"leakage.parquet", "leakage_images.parquet"} <= {p.name for p in
                                                             history.iterdir()}
    assert set(pd.read_parquet(tmp_path / "leakage.parquet")["tier"]) == {"low"}
    devices = pd.read_parquet(tmp_path / "devices.parquet")
    assert devices["ssim_worst_case"].notna().sum() == 4  # the low tier's devices
