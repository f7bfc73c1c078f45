"""A defense against the best baseline at matched accuracy: choice, pairing, words."""

from __future__ import annotations

import pandas as pd
import pytest
from test_matched import POINTS, write_sweep

from analysis import tier_sentences, versus_best_baseline
from analysis.report import write_report
from analysis.versus import LESS, MORE, NOT_COMPARABLE, UNCLEAR


def _at(frame, tier, drop):
    return frame[(frame["tier"] == tier) & (frame["drop"] == drop)].iloc[0]


def test_the_best_baseline_is_the_least_leaking_match_and_the_verdict_follows(tmp_path):
    v = versus_best_baseline(write_sweep(tmp_path / "s"), "gaussian_noise",
                             drops=(1, 3, 10), replicates=50)
    one = _at(v, "low", 1)            # target 0.94: nopeek(a=1) 0.5 beats noise's 0.6
    assert one["baseline"] == "nopeek(a=1)" and one["verdict"] == MORE
    assert one["value"] == pytest.approx(0.6) and one["baseline_value"] == pytest.approx(0.5)
    assert one["difference"] == pytest.approx(0.1)
    ten = _at(v, "low", 10)           # target 0.85: dropout(0.5) is the only other match
    assert ten["baseline"] == "dropout(rate=0.5)" and ten["verdict"] == LESS
    assert ten["difference"] == pytest.approx(-0.2)
    three = _at(v, "low", 3)          # target 0.92: no other defense matches it
    assert three["verdict"] == NOT_COMPARABLE and "no baseline" in three["reason"]
    assert len(v) == 6 and set(v["tier"]) == {"low", "high"}


def test_the_interval_is_paired_over_the_same_resampled_devices(tmp_path):
    """Each device's leakage moves by the same offset at every point, so the paired
    difference has no spread; each side's own interval does."""
    v = versus_best_baseline(write_sweep(tmp_path / "s"), "gaussian_noise",
                             drops=(10,), replicates=50)
    row = _at(v, "high", 10)
    assert row["difference_lo"] == pytest.approx(-0.2)
    assert row["difference_hi"] == pytest.approx(-0.2)
    assert row["hi"] - row["lo"] > 0.01 and row["baseline_hi"] - row["baseline_lo"] > 0.01


def test_a_defense_that_misses_the_accuracy_is_not_compared(tmp_path):
    v = versus_best_baseline(write_sweep(tmp_path / "s"), "dropout", drops=(3,),
                             replicates=20)
    row = _at(v, "low", 3)            # dropout's best, 0.85, is below 0.92
    assert row["verdict"] == NOT_COMPARABLE and row["reason"] == \
        "cannot reach that accuracy"


def test_unknown_defense_or_metric_is_a_clear_error(tmp_path):
    sweep = write_sweep(tmp_path / "s")
    with pytest.raises(ValueError, match="'cem' is not on the sweep's defense axis"):
        versus_best_baseline(sweep, "cem", replicates=5)
    with pytest.raises(ValueError, match="metric 'psnr' is not in the sweep"):
        versus_best_baseline(sweep, "dropout", metric="psnr", replicates=5)


def test_one_sentence_per_tier_whatever_the_answer(tmp_path):
    v = versus_best_baseline(write_sweep(tmp_path / "s"), "gaussian_noise",
                             drops=(1, 3, 10), replicates=20)
    low, high = tier_sentences(v)
    assert low.startswith("Tier low: at matched accuracy gaussian_noise leaks more")
    assert "has no baseline that reaches that accuracy at 3 points" in low
    assert "leaks less than the best baseline at 10 points below no defense (SSIM 0.30 " \
        "vs 0.50 for dropout(rate=0.5), difference -0.20 [-0.20, -0.20])" in low
    assert high.startswith("Tier high:")


def test_the_sweep_report_says_it_for_siftfunnel(tmp_path):
    points = [((s | {"name": "siftfunnel"}) if s["name"] == "gaussian_noise" else s,
               *rest) for s, *rest in POINTS]
    _, md = write_report(write_sweep(tmp_path / "s", points))
    text = md.read_text()
    assert "siftfunnel against the best baseline" in text
    assert "Tier low: at matched accuracy siftfunnel leaks more than the best baseline " \
        "at 1 point below no defense" in text


def test_a_defense_alone_so_far_says_no_baseline_was_measured(tmp_path):
    points = [*POINTS[:4], ({"name": "dropout", "rate": 0.5}, None, None, False,
                            "pending")]
    v = versus_best_baseline(write_sweep(tmp_path / "s", points), "gaussian_noise",
                             drops=(1,), replicates=5)
    assert set(v["reason"]) == {"has no baseline measured yet"}
    assert "has no baseline measured yet at 1 point below no defense" in \
        tier_sentences(v)[0]


@pytest.mark.parametrize("verdict, words", [
    (LESS, "leaks less than"), (MORE, "leaks more than"),
    (UNCLEAR, "shows no clear difference from")])
def test_every_verdict_reads_as_a_sentence(verdict, words):
    row = {"tier": "low", "drop": 3, "verdict": verdict, "reason": "", "value": 0.5,
           "baseline_value": 0.52, "baseline": "cem(lam=0.1)", "difference": -0.02,
           "difference_lo": -0.1, "difference_hi": 0.06}
    v = pd.DataFrame([row])
    v.attrs.update(metric="ssim", defense="siftfunnel", others=[])
    assert tier_sentences(v) == [
        f"Tier low: at matched accuracy siftfunnel {words} the best baseline at 3 points "
        "below no defense (SSIM 0.50 vs 0.52 for cem(lam=0.1), difference -0.02 "
        "[-0.10, +0.06])."]
