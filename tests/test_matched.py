"""Privacy at matched accuracy: interpolation, range marking, bootstrap, report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis import matched_accuracy
from analysis.matched import CANNOT_REACH, MATCHED, NO_POINT, TOO_WEAK, can_match
from analysis.report import write_report
from analysis.rundir import load_sweep
from simulator.leakage import COLUMNS, write_table

AXIS = "tiers.*.defense"
TIERS = {"low": range(0, 4), "high": range(4, 8)}
OFFSETS = np.array([-0.03, -0.01, 0.01, 0.03])  # per device; they average to 0
# (defense spec, accuracy, worst-case SSIM, collapsed, status) of each point, per tier
# the same accuracy; the high tier leaks 0.1 more SSIM.
POINTS = [
    ({"name": "none"}, 0.95, 0.9, False, "complete"),
    ({"name": "gaussian_noise", "sigma": 0.5}, 0.94, 0.6, False, "complete"),
    ({"name": "gaussian_noise", "sigma": 1.0}, 0.90, 0.4, False, "complete"),
    ({"name": "gaussian_noise", "sigma": 2.0}, 0.80, 0.2, False, "complete"),
    ({"name": "gaussian_noise", "sigma": 4.0}, np.nan, np.nan, False, "failed"),
    ({"name": "dropout", "rate": 0.5}, 0.85, 0.5, False, "complete"),
    ({"name": "dropout", "rate": 0.9}, 0.60, 0.3, False, "complete"),
    ({"name": "nopeek", "a": 1}, 0.94, 0.5, False, "complete"),
    ({"name": "nopeek", "a": 50}, 0.10, 0.0, True, "complete"),
]


def _devices(accuracy: float, ssim: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-device accuracy and the long leakage table's worst-case device rows."""
    devices, long = [], []
    for tier, ids in TIERS.items():
        shift = 0.1 if tier == "high" else 0.0
        for k, device in enumerate(ids):
            devices.append({"device_id": device, "tier": tier, "served": True,
                            "accuracy": accuracy + OFFSETS[k]})
            values = {"ssim": ssim + shift + OFFSETS[k], "attack_acc": 2 * ssim / 3,
                      "nn_ident": ssim / 2 + OFFSETS[k]}
            for metric, value in values.items():
                long.append({"scope": "device", "device_id": device, "tier": tier,
                             "attack": "worst_case", "metric": metric, "value": value,
                             "chosen_attack": "inverse_network"})
    long = pd.DataFrame(long)
    tier_rows = long.groupby(["tier", "attack", "metric"], sort=False)["value"].mean()
    long = pd.concat([long, tier_rows.reset_index().assign(scope="tier")])
    long = long.reindex(columns=COLUMNS).astype({"device_id": "Int64", "lo": float,
                                                  "hi": float, "n": "Int64"})
    return pd.DataFrame(devices), long.reset_index(drop=True)


def _tiers(spec: dict, accuracy: float, ssim: float, collapsed: bool) -> pd.DataFrame:
    return pd.DataFrame([{"tier": t, "defense": spec["name"], "accuracy_mean": accuracy,
                          "ssim_worst_case_mean": ssim + (0.1 if t == "high" else 0.0),
                          "attack_acc_worst_case_mean": 2 * ssim / 3,
                          "nn_ident_worst_case_mean": ssim / 2, "collapsed": collapsed}
                         for t in TIERS])


def write_sweep(path: Path, points: list = POINTS) -> Path:
    """A sweep directory the way ``siftsim sweep`` leaves it (hand-made tables)."""
    frames = []
    for k, (spec, acc, ssim, collapsed, status) in enumerate(points):
        run = path / f"p{k:03d}"
        run.mkdir(parents=True)
        (run / "manifest.json").write_text(json.dumps({"status": status}))
        head = {"point": k, AXIS: json.dumps(spec), "status": status, "error": None,
                "run_dir": str(run)}
        if status != "complete":
            frames.append(pd.DataFrame([{**head, "tier": t} for t in TIERS]))
            continue
        devices, long = _devices(acc, ssim)
        write_table(run, "devices", devices)
        write_table(run, "leakage", long)
        write_table(run, "leakage_images", pd.DataFrame({"ssim": [0.5]}), csv=False)
        tiers = _tiers(spec, acc, ssim, collapsed)
        write_table(run, "tiers", tiers)
        frames.append(pd.concat([pd.DataFrame([head] * len(tiers)), tiers], axis=1))
    table = pd.concat(frames, ignore_index=True)
    table.to_parquet(path / "sweep.parquet", index=False)
    (path / "sweep.json").write_text(json.dumps(
        {"axes": {AXIS: [p[0] for p in points]}, "points": []}))
    return path


def _row(frame: pd.DataFrame, defense: str, tier: str, drop: float) -> pd.Series:
    rows = frame[(frame["defense"] == defense) & (frame["tier"] == tier)
                 & (frame["drop"] == drop)]
    assert len(rows) == 1
    return rows.iloc[0]


def test_interpolates_between_the_bracketing_points(tmp_path):
    out = matched_accuracy(write_sweep(tmp_path / "s"), drops=(1, 2, 3, 10),
                           replicates=20)
    assert set(out["defense"]) == {"gaussian_noise", "dropout", "nopeek"}
    r = _row(out, "gaussian_noise", "low", 3)   # target 0.92: halfway 0.90 .. 0.94
    assert r["status"] == MATCHED and r["points"] == 3 and r["excluded"] == 1
    assert r["target_accuracy"] == pytest.approx(0.92)
    assert r["ssim_worst_case"] == pytest.approx(0.5)
    assert r["attack_acc_worst_case"] == pytest.approx(2 * 0.5 / 3)
    assert r["nn_ident_worst_case"] == pytest.approx(0.25)
    assert r["lower_setting"] == "gaussian_noise(sigma=1.0)"
    assert r["upper_setting"] == "gaussian_noise(sigma=0.5)"
    assert _row(out, "gaussian_noise", "low", 2)["ssim_worst_case"] == \
        pytest.approx(0.55)                     # 0.93: three quarters up
    assert _row(out, "gaussian_noise", "high", 2)["ssim_worst_case"] == \
        pytest.approx(0.65)
    assert _row(out, "gaussian_noise", "low", 1)["ssim_worst_case"] == \
        pytest.approx(0.6)                      # 0.94: exactly its weakest point
    assert _row(out, "gaussian_noise", "low", 10)["ssim_worst_case"] == \
        pytest.approx(0.3)                      # 0.85: halfway 0.80 .. 0.90


def test_ranges_that_miss_the_target_are_marked_not_matched(tmp_path):
    out = matched_accuracy(write_sweep(tmp_path / "s"), drops=(3, 20), replicates=20)
    cannot = _row(out, "dropout", "low", 3)     # its best, 0.85, is below 0.92
    assert cannot["status"] == CANNOT_REACH and np.isnan(cannot["ssim_worst_case"])
    assert cannot["upper_setting"] == "dropout(rate=0.5)"
    assert cannot["reached_accuracy"] == pytest.approx(0.85)
    assert np.isnan(cannot["ssim_worst_case_lo"]) and cannot["replicates_used"] == 0
    weak = _row(out, "gaussian_noise", "low", 20)   # its strongest, 0.80, above 0.75
    assert weak["status"] == TOO_WEAK and weak["lower_setting"] == \
        "gaussian_noise(sigma=2.0)" and weak["upper_setting"] == ""
    assert weak["ssim_worst_case"] == pytest.approx(0.2)
    assert weak["reached_accuracy"] == pytest.approx(0.80)


def test_switched_off_components_are_defenses_of_their_own(tmp_path):
    """An ablation's points are not a strength range: never interpolated across."""
    points = [POINTS[0],
              ({"name": "siftfunnel", "beta": 1.0}, 0.945, 0.5, False, "complete"),
              ({"name": "siftfunnel", "beta": 4.0}, 0.915, 0.3, False, "complete"),
              ({"name": "siftfunnel", "beta": 1.0, "funnel": False}, 0.94, 0.8, False,
               "complete")]
    out = matched_accuracy(write_sweep(tmp_path / "s", points), drops=(2,),
                           replicates=5)
    assert set(out["defense"]) == {"siftfunnel", "siftfunnel(funnel=False)"}
    ranged = _row(out, "siftfunnel", "low", 2)      # 0.93: 0.915 .. 0.945, halfway
    assert ranged["status"] == MATCHED and ranged["points"] == 2
    assert ranged["ssim_worst_case"] == pytest.approx(0.4)
    alone = _row(out, "siftfunnel(funnel=False)", "low", 2)   # costs only 1 point
    assert alone["points"] == 1 and alone["status"] == TOO_WEAK
    assert alone["ssim_worst_case"] == pytest.approx(0.8)
    assert alone["reached_accuracy"] == pytest.approx(0.94)


def test_collapsed_and_failed_points_are_left_out(tmp_path):
    out = matched_accuracy(write_sweep(tmp_path / "s"), drops=(10,), replicates=20)
    # with the collapsed a=50 point (0.10) the target 0.85 would be bracketed
    r = _row(out, "nopeek", "low", 10)
    assert r["status"] == TOO_WEAK and r["points"] == 1 and r["excluded"] == 1
    assert r["ssim_worst_case"] == pytest.approx(0.5)
    only_collapsed = [POINTS[0], POINTS[8]]
    out = matched_accuracy(write_sweep(tmp_path / "c", only_collapsed), drops=(1,),
                           replicates=5)
    assert set(out["status"]) == {NO_POINT} and (out["points"] == 0).all()


def test_bootstrap_brackets_the_estimate_and_is_reproducible(tmp_path):
    sweep = write_sweep(tmp_path / "s")
    out = matched_accuracy(sweep, drops=(2, 3, 10, 20), replicates=100, seed=4)
    assert out.attrs["interval_notes"] == [
        "paired bootstrap over 4 devices, 100 replicates, 2.5-97.5 percentiles"]
    shown = out[out["status"].isin([MATCHED, TOO_WEAK])]
    assert len(shown) >= 6
    for metric in ("ssim", "nn_ident"):
        col = f"{metric}_worst_case"
        assert (shown[f"{col}_lo"] <= shown[col] + 1e-12).all()
        assert (shown[f"{col}_hi"] >= shown[col] - 1e-12).all()
        assert (shown[f"{col}_hi"] > shown[f"{col}_lo"]).any()
    again = matched_accuracy(sweep, drops=(2, 3, 10, 20), replicates=100, seed=4)
    pd.testing.assert_frame_equal(out, again)
    other = matched_accuracy(sweep, drops=(2, 3, 10, 20), replicates=100, seed=5)
    assert not np.allclose(other["ssim_worst_case_lo"].fillna(-1),
                           out["ssim_worst_case_lo"].fillna(-1))
    pd.testing.assert_series_equal(other["ssim_worst_case"], out["ssim_worst_case"])


def test_missing_per_device_files_give_nan_intervals_not_a_crash(tmp_path):
    sweep = write_sweep(tmp_path / "s")
    (sweep / "p002" / "devices.parquet").unlink()
    out = matched_accuracy(sweep, drops=(3,), replicates=10)
    r = _row(out, "gaussian_noise", "low", 3)
    assert r["ssim_worst_case"] == pytest.approx(0.5)
    assert np.isnan(r["ssim_worst_case_lo"]) and np.isnan(r["ssim_worst_case_hi"])
    assert "no devices.parquet" in r["interval"]
    assert any("no devices.parquet" in n for n in out.attrs["interval_notes"])


def test_a_moved_sweep_folder_still_finds_its_points(tmp_path):
    sweep = write_sweep(tmp_path / "s")
    moved = sweep.rename(tmp_path / "elsewhere")
    out = matched_accuracy(load_sweep(moved), drops=(3,), replicates=10)
    assert out["interval"].str.startswith("paired bootstrap").all()


def test_a_sweep_without_the_none_point_is_a_clear_error(tmp_path):
    sweep = write_sweep(tmp_path / "s", POINTS[1:])
    with pytest.raises(ValueError, match=r"no complete, non-collapsed point with "
                       r"defense 'none'.*add `\{name: none\}`"):
        matched_accuracy(sweep)
    assert not can_match(load_sweep(sweep))
    html = write_report(sweep)[0].read_text()
    assert "Privacy at matched accuracy" not in html


def test_a_sweep_without_a_defense_axis_is_a_clear_error(tmp_path):
    table = load_sweep(write_sweep(tmp_path / "s"))
    table = table.rename(columns={AXIS: "seed"}).assign(seed=1)
    table.attrs["axes"] = ["seed"]
    with pytest.raises(ValueError, match="no sweep axis holds defense specs"):
        matched_accuracy(table)
    assert not can_match(table)


def test_other_axes_and_one_tier_axes_are_kept_apart(tmp_path):
    table = load_sweep(write_sweep(tmp_path / "s"))
    both = pd.concat([table.assign(**{"training.rounds": r}) for r in (8, 16)],
                     ignore_index=True)
    both.attrs = {**table.attrs, "axes": [AXIS, "training.rounds"]}
    out = matched_accuracy(both, drops=(3,), replicates=10)
    assert list(out.columns[:2]) == ["training.rounds", "defense"]
    a, b = (out[out["training.rounds"] == r].reset_index(drop=True) for r in (8, 16))
    pd.testing.assert_frame_equal(a.drop(columns="training.rounds"),
                                  b.drop(columns="training.rounds"))
    # an axis over the low tier only: the high tier ran `none` at every point
    one = table.assign(defense=np.where(table["tier"] == "high", "none",
                                        table["defense"]))
    out = matched_accuracy(one, drops=(3,), replicates=10)
    assert set(out["tier"]) == {"low"}


def test_the_sweep_report_has_the_matched_accuracy_section(tmp_path):
    sweep = write_sweep(tmp_path / "s")
    assert can_match(load_sweep(sweep))
    html_path, md_path = write_report(sweep)
    html, md = html_path.read_text(), md_path.read_text()
    for text in (html, md):
        assert "Privacy at matched accuracy" in text
        assert "range too weak" in text and "cannot reach" in text
        assert "SSIM worst case (95% CI)" in text
        assert "gaussian_noise(sigma=1.0) .. gaussian_noise(sigma=0.5)" in text
    assert "paired bootstrap over 4 devices" in html


def test_defenses_that_have_not_run_yet_are_left_out(tmp_path):
    """A sweep in progress: pending points list nothing; a failed-only defense stays
    (its 'no usable point' is news)."""
    points = [*POINTS[:4],
              ({"name": "vib", "beta": 0.01}, np.nan, np.nan, False, "pending"),
              ({"name": "vib", "beta": 0.1}, np.nan, np.nan, False, "running"),
              ({"name": "cem", "lam": 0.1}, np.nan, np.nan, False, "failed")]
    out = matched_accuracy(write_sweep(tmp_path / "s", points), drops=(1,), replicates=5)
    assert set(out["defense"]) == {"gaussian_noise", "cem"}
    assert set(out.loc[out["defense"] == "cem", "status"]) == {NO_POINT}
