"""Sweep directories -> sweep reports: a synthetic sweep with a failed point, and a tiny
real sweep end to end."""

from __future__ import annotations

import pytest

from _run_dirs import img_sources, write_sweep
from analysis.report import write_report
from analysis.rundir import RunDirectoryError, load_run, load_sweep_leakage


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
    srcs = img_sources(html)
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
                  "paired bootstrap over", "strengths: worst-case SSIM against accuracy cost"):
        assert words in html, words
    # budget (MACs, bytes), defense ranges, privacy- and cost-utility frontiers
    assert len(img_sources(html)) == 5 and md_path.is_file()
    point_html, _ = write_report(folder / "p001")
    text = point_html.read_text()
    assert "Worst-case device per tier" in text and "gaussian_noise" in text
    assert len(img_sources(text)) >= 4
