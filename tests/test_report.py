"""Run directories -> reports: loading, tables, self-contained HTML, comparisons."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.compare import compare_runs, write_comparison
from analysis.report import write_report
from analysis.rundir import (RunDirectoryError, _split_label, attacks_in, load_run,
                             load_sweep_leakage)
from analysis.tables import leakage_table, tier_summary, with_ci, worst_case_devices
from simulator.leakage import (leakage_long, merge_leakage, wide_devices, wide_tiers,
                               write_table)

ATTACKS = ("inverse_network", "rmle")
TIERS = {"low": (98_520, 256, 0.5), "high": (4_866_048, 8192, 200.0)}
INFO = {"dcor2_bc": 0.3, "nonzero_per_sample": 50.0, "nonzero_fraction": 0.5,
        "eval_acc_real": 0.95, "chance": 0.1, "info_samples": 40, "mi_nats": 1.5,
        "mi_estimator": "smile/mlp", "mi_paper_nats": 0.6}


def _manifest(name: str, attacked: bool) -> dict:
    tiers = [{"name": t, "count": 4, "encoder": {"name": "funnel", "channels": 4},
              "defense": {"name": "none"}, "profile": {"compute_gflops": g,
                                                     "uplink_mbps": 2.0}}
             for t, (_, _, g) in TIERS.items()]
    attacks = [{"name": a, "label": None} for a in ATTACKS] if attacked else []
    return {"name": name, "seed": 7, "status": "complete", "started": "t0",
            "finished": "t1", "phases": {"setup": {"seconds": 0.1}},
            "versions": {"torch": "2.14.1"}, "git_revision": "abc123",
            "python": "3.11.7", "scenario": {
                "name": name, "seed": 7, "dataset": {"name": "digits", "image_size": 8},
                "tiers": tiers, "training": {"mode": "split", "rounds": 3},
                "adversary": {"enabled": attacked, "threat_model": "black_box_query",
                              "phases": ["inference"], "attacks": attacks}}}


def _devices(rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for k, (tier, (macs, nbytes, gflops)) in enumerate(TIERS.items()):
        for i in range(4):
            row = {"device_id": 4 * k + i, "tier": tier, "node": k, "encoder": "funnel",
                   "defense": "none", "n_test": 10, "accuracy": rng.uniform(0.5, 1),
                   "params": macs // 50, "macs": macs, "bytes_per_sample": nbytes,
                   "latency_ms": nbytes / 250 + macs / gflops / 1e6,
                   "compute_gflops": gflops}
            row["correct"] = int(round(row["accuracy"] * 10))
            rows.append(row)
    return pd.DataFrame(rows)


def _tiers(devices: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for tier, g in devices.groupby("tier", sort=False):
        v = g["accuracy"].to_numpy()
        rows.append({"tier": tier, "devices": len(g), "encoder": "funnel",
                     "defense": "none", "params": g["params"].iloc[0],
                     "macs": g["macs"].iloc[0],
                     "bytes_per_sample": g["bytes_per_sample"].iloc[0],
                     "latency_ms_mean": g["latency_ms"].mean(),
                     "accuracy_mean": v.mean(), "accuracy_lo": v.mean() - v.std(),
                     "accuracy_hi": v.mean() + v.std()})
    return pd.DataFrame(rows)


def _images(rng: np.random.Generator, devices: pd.DataFrame) -> pd.DataFrame:
    """Per-image scores: 3 images per device and attack, PSNR/MSE following SSIM."""
    rows = []
    for d in devices.itertuples():
        for a in ATTACKS:
            for s in range(3):
                ssim = rng.uniform(0.1, 0.9)
                rows.append({"tier": d.tier, "attack": a,
                             "threat_model": "black_box_query",
                             "device_id": d.device_id, "sample": s, "ssim": ssim,
                             "psnr": 10 + 10 * ssim, "mse": 0.1 - 0.1 * ssim,
                             "eval_correct": rng.uniform() < ssim,
                             "nn_correct": rng.uniform() < ssim / 2})
    return pd.DataFrame(rows)


def write_run(path: Path, attacked: bool = True, name: str = "synthetic",
              seed: int = 0) -> Path:
    """A tiny run directory with every file the simulator writes (no model files);
    the leakage tables come from the simulator's own functions."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    (path / "manifest.json").write_text(json.dumps(_manifest(name, attacked)))
    devices = _devices(rng)
    tiers = _tiers(devices)
    rounds = pd.DataFrame([{"round": r, "tier": t, "devices": 2, "loss": 2.0 / (r + 1),
                            "virtual_seconds": 0.1} for r in range(3) for t in TIERS])
    if attacked:
        images = _images(rng, devices)
        long = leakage_long(images, {t: dict(INFO) for t in TIERS})
        devices = merge_leakage(devices, wide_devices(long), "device_id")
        tiers = merge_leakage(tiers, wide_tiers(long), "tier")
        write_table(path, "leakage", long)
        write_table(path, "leakage_images", images, csv=False)
        (path / "reconstructions").mkdir(exist_ok=True)
        for a in ATTACKS:
            for t in TIERS:
                x = rng.uniform(size=(3, 1, 8, 8)).astype(np.float32)
                np.savez_compressed(path / "reconstructions" / f"{a}__{t}.npz",
                                    original=x, reconstruction=x[:, :, ::-1].copy(),
                                    device_id=np.zeros(3, np.int64))
    for table, frame in (("devices", devices), ("tiers", tiers), ("rounds", rounds)):
        write_table(path, table, frame)
    return path


def _img_sources(html: str) -> list[str]:
    tags = re.findall(r"<img\b[^>]*>", html)
    srcs = [re.search(r'src="([^"]*)"', t).group(1) for t in tags]
    assert len(srcs) == len(tags)
    return srcs


def test_report_is_self_contained_and_complete(tmp_path):
    run = write_run(tmp_path / "run")
    html_path, md_path = write_report(run)
    assert html_path == run / "report.html" and md_path == run / "report.md"
    html, md = html_path.read_text(), md_path.read_text()
    srcs = _img_sources(html)
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
    srcs = _img_sources(html)
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
    srcs = _img_sources(html)
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


def write_sweep(path: Path) -> Path:
    """A sweep directory: two complete points and a failed one (NaN metrics)."""
    axis = "tiers.0.defense.beta"
    frames = []
    for k, beta in enumerate((0.5, 2.0)):
        run = write_run(path / f"p{k:03d}", name=f"sw-p{k:03d}", seed=k)
        tiers = pd.read_parquet(run / "tiers.parquet")
        frames.append(pd.concat([pd.DataFrame({
            "point": [k] * len(tiers), axis: beta, "status": "complete", "error": None,
            "run_dir": str(run)}), tiers], axis=1))
    frames.append(pd.DataFrame({"point": [2, 2], axis: 8.0, "status": "failed",
                                "error": "RuntimeError: boom", "run_dir": "p002",
                                "tier": list(TIERS)}))
    table = pd.concat(frames, ignore_index=True)
    table.to_parquet(path / "sweep.parquet", index=False)
    (path / "sweep.json").write_text(json.dumps({"axes": {axis: [0.5, 2.0, 8.0]},
                                                 "points": []}))
    return path


def test_sweep_directory_gets_a_sweep_report(tmp_path):
    sweep = write_sweep(tmp_path / "sweep")
    with pytest.raises(RunDirectoryError, match="sweep directory"):
        load_run(sweep)
    long = load_sweep_leakage(sweep)
    assert sorted(long["point"].unique()) == [0, 1]  # the failed point has none
    html_path, md_path = write_report(sweep)
    html = html_path.read_text()
    assert html_path == sweep / "report.html" and md_path.is_file()
    assert "Leakage per point, tier and attack" in html
    assert "tiers.0.defense.beta" in html and "RuntimeError: boom" in html
    assert "did not complete" in html and "Figure skipped" not in html
    srcs = _img_sources(html)
    assert len(srcs) == 4 and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert "Privacy-utility frontier" in html and "Cost (bytes sent per sample)" in html
    assert "Leakage vs edge budget (macs) per tier" in html
    assert "Leakage vs edge budget (bytes_per_sample) per tier" in html


def test_reports_on_a_tiny_real_sweep(smoke_raw, tmp_path):
    """End to end: a real two-point sweep of a defense's strength over two capacity
    tiers, then the sweep report and one point's run report."""
    from simulator.sweep import run_sweep
    smoke_raw["tiers"] = [{**t, "defense": {"name": "none"}} for t in smoke_raw["tiers"]]
    smoke_raw["training"].update(rounds=2, local_steps=2)
    smoke_raw["adversary"] = {"enabled": True, "images_per_device": 2,
                              "evaluation_epochs": 1, "information": {"mi_epochs": 1},
                              "attacks": [{"name": "inverse_network", "epochs": 1}]}
    smoke_raw["sweep"] = {"axes": {"tiers.*.defense": [
        {"name": "none"}, {"name": "gaussian_noise", "sigma": 2.0}]}}
    folder = run_sweep(smoke_raw, tmp_path / "sweep")
    html_path, md_path = write_report(folder)
    html = html_path.read_text()
    assert "did not complete" not in html and "skipped" not in html
    for words in ("Leakage vs edge budget (macs) per tier", "Privacy-utility frontier",
                  "gaussian_noise", "small", "large", "Privacy at matched accuracy",
                  "paired bootstrap over"):
        assert words in html, words
    assert len(_img_sources(html)) == 4 and md_path.is_file()
    point_html, _ = write_report(folder / "p001")
    text = point_html.read_text()
    assert "Worst-case device per tier" in text and "gaussian_noise" in text
    assert len(_img_sources(text)) >= 4


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
