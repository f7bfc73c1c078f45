"""Synthetic run and sweep directories for the report tests: two tiers, two attacks,
per-device records and reconstructions, written as the simulator writes them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd

from simulator.leakage import leakage_long, merge_leakage, wide_devices, wide_tiers, write_table

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


def img_sources(html: str) -> list[str]:
    tags = re.findall(r"<img\b[^>]*>", html)
    srcs = [re.search(r'src="([^"]*)"', t).group(1) for t in tags]
    assert len(srcs) == len(tags)
    return srcs


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
