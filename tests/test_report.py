"""Run directories -> reports: loading, tables, self-contained HTML, comparisons
(sweep reports: test_report_sweep.py)."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from _run_dirs import ATTACKS, TIERS, img_sources, write_run
from analysis.compare import compare_runs, write_comparison
from analysis.report import write_report
from analysis.rundir import RunDirectoryError, _split_label, attacks_in, load_run
from analysis.tables import leakage_table, tier_summary, with_ci, worst_case_devices
from simulator.leakage import write_table


def test_report_is_self_contained_and_complete(tmp_path):
    run = write_run(tmp_path / "run")
    html_path, md_path = write_report(run)
    assert html_path == run / "report.html" and md_path == run / "report.md"
    html, md = html_path.read_text(), md_path.read_text()
    srcs = img_sources(html)
    # 2 attacks x 2 tiers of reconstruction grids, plus the summary figures
    assert len(srcs) >= 4 + 6
    for src in srcs:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert not re.search(r"https?://", html)
    assert not re.search(r"<link\b|<script\b[^>]*\bsrc=", html)
    for text in ("low", "high", "abc123", "digits", "black_box_query", "rmle",
                 "inverse_network", "Gaussian window", "Pareto") :
        assert text in html or text in md, text
    for tier in TIERS:
        assert re.search(rf"<td>{tier}</td>", html)
        assert re.search(rf"^\| {tier} \|", md, flags=re.M)
    assert "No adversary ran" not in html and "skipped" not in html
    assert len(list((run / "report_figures").glob("*.png"))) == len(srcs)


def test_report_without_adversary_says_so(tmp_path):
    run = write_run(tmp_path / "plain", attacked=False)
    html_path, md_path = write_report(run, out_dir=tmp_path / "out")
    assert html_path.parent == tmp_path / "out"
    html = html_path.read_text()
    assert "No adversary ran" in html and "No adversary ran" in md_path.read_text()
    assert "Reconstructions:" not in html and "Privacy-utility frontier" not in html
    srcs = img_sources(html)
    assert 1 <= len(srcs) <= 3 and all(s.startswith("data:image/png") for s in srcs)
    assert "lowest accuracy" in html


def test_worst_case_device_is_the_highest_ssim(tmp_path):
    run = load_run(write_run(tmp_path / "run"))
    worst = worst_case_devices(run.devices, run.leakage).set_index("tier")
    for tier, g in run.devices.groupby("tier"):
        top = g.loc[g["ssim_worst_case"].idxmax()]
        assert worst.loc[tier, "device_id"] == top["device_id"]
        assert worst.loc[tier, "attack"] == top["worst_case_attack"]
        assert worst.loc[tier, "accuracy"] == top["accuracy"]
    # absent the worst-case rows: the highest SSIM of any attack, and which attack
    partial = run.leakage[run.leakage["attack"] != "worst_case"]
    alt = worst_case_devices(run.devices, partial).set_index("tier")
    d = run.devices
    ssim = d[[f"ssim_{a}" for a in ATTACKS]]
    best = ssim.max(axis=1).groupby(d["tier"]).idxmax()
    for tier, row in best.items():
        assert alt.loc[tier, "device_id"] == d.loc[row, "device_id"]
        assert alt.loc[tier, "attack"] == ATTACKS[int(np.argmax(ssim.loc[row]))]
    plain = worst_case_devices(d[["device_id", "tier", "accuracy"]]).set_index("tier")
    lowest = d.loc[d.groupby("tier")["accuracy"].idxmin()].set_index("tier")
    assert plain["device_id"].to_dict() == lowest["device_id"].to_dict()


def test_load_run_reads_every_record(tmp_path):
    run = load_run(write_run(tmp_path / "run"))
    assert run.name == "synthetic" and len(run.devices) == 8 and len(run.tiers) == 2
    assert run.attacks == [*ATTACKS, "worst_case"]
    assert attacks_in(run.leakage_images) == list(ATTACKS)
    assert {"scope", "device_id", "attack", "metric", "value", "lo", "hi",
            "n"} <= set(run.leakage.columns)
    with pytest.raises(ValueError, match="long leakage table"):
        attacks_in(run.devices)  # wide views are not parsed back
    assert set(run.reconstructions) == {(a, t) for a in ATTACKS for t in TIERS}
    assert run.reconstructions[("rmle", "low")]["original"].shape == (3, 1, 8, 8)
    assert _split_label("a__b__low", ["low", "w"]) == ("a__b", "low")
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.path = tmp_path
    plain = load_run(write_run(tmp_path / "plain", attacked=False))
    assert plain.leakage is None and plain.attacks == []


def test_tables_read_attacks_and_statistics_from_the_long_table(tmp_path):
    run = load_run(write_run(tmp_path / "run"))
    long = run.leakage
    tier_rows = long[long["scope"] == "tier"]
    table = leakage_table(long)
    assert len(table) == len(TIERS) * 3 and list(table["attack"].unique()) == [
        *ATTACKS, "worst_case"]
    for _, row in table.iterrows():
        stats = tier_rows[(tier_rows["tier"] == row["tier"])
                          & (tier_rows["attack"] == row["attack"])].set_index("metric")
        ssim = stats.loc["ssim", ["value", "lo", "hi"]]
        assert row["SSIM (95% CI)"] == with_ci(*ssim)
        assert row["MSE"] == pytest.approx(stats.loc["mse", "value"])
    # and the wide views say the same
    tiers = run.tiers.set_index("tier")
    for row in tier_rows[tier_rows["attack"] == "worst_case"].itertuples():
        assert tiers.loc[row.tier, f"{row.metric}_worst_case_mean"] == pytest.approx(
            row.value)
    summary = tier_summary(run.tiers, long).set_index("tier")
    for tier in TIERS:
        stats = tier_rows[(tier_rows["tier"] == tier)
                          & (tier_rows["attack"] == "worst_case")].set_index("metric")
        assert summary.loc[tier, "SSIM worst_case (95% CI)"] == with_ci(
            *stats.loc["ssim", ["value", "lo", "hi"]])
        assert summary.loc[tier, "attack acc worst_case"] == pytest.approx(
            stats.loc["attack_acc", "value"])
    assert "SSIM worst_case (95% CI)" not in tier_summary(run.tiers)


def test_attack_labels_that_look_like_statistics_stay_whole(tmp_path):
    path = write_run(tmp_path / "run")
    long = pd.read_parquet(path / "leakage.parquet")
    long["attack"] = long["attack"].replace({"rmle": "x_lo",
                                             "inverse_network": "a_mean"})
    long.to_parquet(path / "leakage.parquet", index=False)
    run = load_run(path)
    assert run.attacks == ["a_mean", "x_lo", "worst_case"]
    assert set(leakage_table(run.leakage)["attack"]) == {"a_mean", "x_lo", "worst_case"}
    assert attacks_in(pd.DataFrame(columns=["attack", "metric"])) == []


def test_an_old_run_without_the_long_table_is_a_clear_error(tmp_path):
    path = write_run(tmp_path / "old")
    (path / "leakage.parquet").unlink()
    with pytest.raises(RunDirectoryError, match="siftsim attack"):
        load_run(path)


@pytest.mark.parametrize("missing, words", [
    ("devices.parquet", ["devices.parquet", "inference", "siftsim run"]),
    ("manifest.json", ["manifest.json", "siftsim run"]),
])
def test_missing_file_names_the_file(tmp_path, missing, words):
    run = write_run(tmp_path / "run", attacked=False)
    (run / missing).unlink()
    (run / missing.replace(".parquet", ".csv")).unlink(missing_ok=True)
    with pytest.raises(RunDirectoryError) as info:
        write_report(run)
    assert isinstance(info.value, ValueError)
    for word in words:
        assert word in str(info.value)
    with pytest.raises(RunDirectoryError, match="does not exist"):
        load_run(tmp_path / "nowhere")


def test_compare_two_runs(tmp_path):
    a = write_run(tmp_path / "a", attacked=True, name="same", seed=1)
    b = write_run(tmp_path / "b", attacked=False, name="same", seed=2)
    frame = compare_runs([a, b])
    assert list(frame.columns[:2]) == ["run", "tier"]
    assert len(frame) == 4 and sorted(frame["run"].unique()) == ["a", "b"]
    assert frame.loc[frame["run"] == "b", "ssim_worst_case_mean"].isna().all()
    assert frame.loc[frame["run"] == "a", "ssim_worst_case_mean"].notna().all()
    path = write_comparison([a, b], tmp_path / "cmp")
    html = path.read_text()
    srcs = img_sources(html)
    assert len(srcs) >= 2 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"https?://", html)
    assert "<td>a</td>" in html and "<td>b</td>" in html
    assert "Privacy-utility frontier" in html
    assert "Leakage per run, tier and attack" in html
    stacked = load_run(a).leakage.assign(run="a")
    leakage = leakage_table(stacked)
    assert len(leakage) == 2 * 3 and set(leakage["run"]) == {"a"}  # b was not attacked
    with pytest.raises(ValueError, match="paths is empty"):
        compare_runs([])


@pytest.mark.parametrize("name", ["analysis", "analysis.figures", "analysis.rundir",
                                  "analysis.report", "analysis.compare",
                                  "analysis.tables", "analysis.fleet",
                                  "analysis.search", "analysis.matched"])
def test_every_public_name_exists(name):
    import importlib
    module = importlib.import_module(name)
    assert module.__all__
    for public in module.__all__:
        assert getattr(module, public) is not None, f"{name}.{public}"


def test_a_tier_sending_only_zeros_is_flagged_as_collapsed(tmp_path):
    from analysis.tables import collapse_note
    run = write_run(tmp_path / "run")
    tiers = pd.read_parquet(run / "tiers.parquet")
    assert collapse_note(tiers.assign(nonzero_per_sample=5.0)) is None
    tiers["nonzero_per_sample"] = [0.0 if t == "high" else 12.5 for t in tiers["tier"]]
    tiers.to_parquet(run / "tiers.parquet", index=False)
    note = collapse_note(tiers)
    assert note.split(" sent all-zero features")[0] == "Collapsed training: high"
    html = write_report(run)[0].read_text()
    assert "Collapsed training: high" in html


def write_fleet_run(path: Path) -> Path:
    """A run whose rungs were assigned by budget: drawn hardware, participation
    tallies, a device that fits no rung, and the per-round participation table."""
    write_run(path)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["scenario"]["assignment"] = {"rule": "largest_fit", "deadline_ms": 50.0,
                                          "memory": True, "unfit": "drop"}
    (path / "manifest.json").write_text(json.dumps(manifest))
    devices = pd.read_parquet(path / "devices.parquet")
    n = len(devices)
    devices = devices.assign(
        compute_gflops=np.linspace(0.5, 50, n), rounds_selected=3,
        rounds_completed=[0, 3, 3, 2, 3, 3, 1, 3][:n], rounds_dropped=0,
        rounds_straggled=[3, 0, 0, 1, 0, 0, 2, 0][:n], rounds_cancelled=0,
        busy_s=1.0, bytes_sent=1000, unable=False)
    unable = devices.iloc[:1].assign(device_id=n, tier=None, node=None, accuracy=np.nan,
                                     rounds_selected=0, rounds_completed=0,
                                     rounds_straggled=0, busy_s=0.0, bytes_sent=0,
                                     unable=True, macs=np.nan)
    write_table(path, "devices", pd.concat([devices, unable], ignore_index=True))
    rows = [{"round": r, "tier": t, "device_id": d, "status": "completed"}
            for r in range(3) for t, d in zip(devices["tier"], devices["device_id"])]
    write_table(path, "participation", pd.DataFrame(rows))
    return path


def test_report_shows_participation_and_stragglers_per_rung(tmp_path):
    from analysis.fleet import UNABLE, participation_summary, stragglers
    run = load_run(write_fleet_run(tmp_path / "fleet"))
    assert run.participation is not None and len(run.participation) == 3 * 8
    summary = participation_summary(run.devices, run.leakage).set_index("tier")
    assert list(summary.index) == [*TIERS, UNABLE]
    shuffled = run.devices.sample(frac=1.0, random_state=0)   # rungs listed by size,
    assert list(participation_summary(shuffled)["tier"]) == [*TIERS, UNABLE]  # not rows
    assert summary.loc["low", "never completed"] == 1
    assert summary.loc["low", "straggled at least once"] == 2
    assert summary.loc["high", "completed / device"] == pytest.approx(10 / 4)
    assert summary.loc[UNABLE, "devices"] == 1
    low = run.devices[run.devices["tier"] == "low"]
    assert summary.loc["low", "SSIM worst_case"] == pytest.approx(
        low["ssim_worst_case"].mean())
    late = stragglers(run.devices, run.leakage)
    assert late["device_id"].tolist() == [0, 6, 3]      # most straggled rounds first
    html = write_report(run)[0].read_text()
    for text in ("Participation and stragglers", "Devices that straggled most",
                 "Rounds completed and straggled per device", UNABLE,
                 "by budget: largest_fit (deadline 50.0 ms and memory); 1 devices fit "
                 "no rung (dropped)", "against compute_gflops"):
        assert text in html, text
    assert "skipped" not in html
    plain = write_report(write_run(tmp_path / "plain"))[0].read_text()
    assert "Participation and stragglers" not in plain
