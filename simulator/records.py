"""The run directory: the simulator records, analysis reads.

Layout (every table in parquet and CSV)::

    manifest.json          resolved scenario, seed, versions, git revision, status, phases
    scenario.yaml          the resolved scenario
    devices.{parquet,csv}  one row per device
    tiers.{parquet,csv}    one row per tier
    rounds.{parquet,csv}   one row per (round, tier) of training
    checkpoints/edge_<tier>.pt, checkpoints/cloud.pt   state dicts (weights_only loadable)
    observations/<tier>.npy + observations/index.parquet   the cloud's observation log

Each phase is written as soon as it finishes, so a failure later never loses it.
"""

from __future__ import annotations

import json
import platform
import subprocess
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from simulator.engine.observations import TierObservations
from simulator.scenario import Scenario

__all__ = ["RunRecorder", "new_run_dir", "read_checkpoints", "read_observations"]

_PACKAGES = ("siftsim", "torch", "torchvision", "flwr", "ray", "numpy", "pandas",
             "pydantic", "torchmetrics", "scikit-image")


def new_run_dir(base: str | Path, name: str) -> Path:
    """``base/name``, or ``base/name-2``, ... : an existing run is never overwritten."""
    base = Path(base)
    path, k = base / name, 2
    while path.exists() and any(path.iterdir()):
        path, k = base / f"{name}-{k}", k + 1
    path.mkdir(parents=True, exist_ok=True)
    return path


class RunRecorder:
    """Writes one run directory, phase by phase."""

    def __init__(self, path: Path, scenario: Scenario, resume: bool = False) -> None:
        self.path = Path(path)
        if resume:  # a later pass (``siftsim attack``) on a finished run
            self.manifest = json.loads((self.path / "manifest.json").read_text())
            self.manifest["scenario"] = scenario.model_dump(mode="json")
            (self.path / "scenario.yaml").write_text(
                yaml.safe_dump(self.manifest["scenario"], sort_keys=False))
            return
        self.path.mkdir(parents=True, exist_ok=True)
        resolved = scenario.model_dump(mode="json")
        (self.path / "scenario.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))
        self.manifest: dict[str, Any] = {
            "name": scenario.name, "seed": scenario.seed, "status": "running",
            "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "phases": {},
            "versions": _versions(), "git_revision": _git_revision(),
            "python": platform.python_version(), "scenario": resolved}
        self._write_manifest()

    def phase_done(self, phase: str, seconds: float, **info: Any) -> None:
        self.manifest["phases"][phase] = {"seconds": round(seconds, 3), **info}
        self._write_manifest()

    def finish(self, status: str = "complete", error: str | None = None) -> None:
        self.manifest.update(status=status, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        if error:
            self.manifest["error"] = error
        self._write_manifest()

    def table(self, name: str, frame: pd.DataFrame) -> None:
        frame.to_parquet(self.path / f"{name}.parquet", index=False)
        frame.to_csv(self.path / f"{name}.csv", index=False)

    def checkpoints(self, edges: dict[str, dict[str, torch.Tensor]],
                    cloud: dict[str, torch.Tensor]) -> None:
        folder = self.path / "checkpoints"
        folder.mkdir(exist_ok=True)
        for tier, state in edges.items():
            torch.save(state, folder / f"edge_{tier}.pt")
        torch.save(cloud, folder / "cloud.pt")

    def observations(self, logs: dict[str, TierObservations],
                     dataset_index: np.ndarray) -> None:
        """Features as float16 ``.npy`` per tier; one parquet index for all tiers."""
        folder = self.path / "observations"
        folder.mkdir(exist_ok=True)
        frames = []
        for tier, obs in logs.items():
            np.save(folder / f"{tier}.npy", obs.z)
            frames.append(pd.DataFrame({
                "tier": tier, "row": np.arange(len(obs.z)),
                "phase": np.where(obs.phase == 0, "training", "inference"),
                "round": obs.round, "device_id": obs.device_id, "sample": obs.sample,
                "dataset_index": dataset_index[obs.sample]}))
        index = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=["tier", "row", "phase", "round", "device_id", "sample", "dataset_index"])
        index.to_parquet(folder / "index.parquet", index=False)

    def leakage(self, results: list) -> None:
        """Record attack results: ``leakage_images``, the long ``leakage`` table, and
        its wide views joined into ``devices``/``tiers``; earlier passes move to
        history/. Every table is written to a temporary name, then renamed."""
        from simulator.leakage import (images_table, leakage_long, merge_leakage,
                                       save_reconstructions, wide_devices, wide_tiers,
                                       write_table)
        self._archive(["leakage_images.parquet", "leakage.parquet", "devices.parquet",
                       "tiers.parquet", "reconstructions"])
        images = images_table(results)
        long = leakage_long(images, {r.tier: r.information for r in results})
        write_table(self.path, "leakage_images", images, csv=False)
        write_table(self.path, "leakage", long)
        for name, key, view in (("devices", "device_id", wide_devices(long)),
                                ("tiers", "tier", wide_tiers(long))):
            base = pd.read_parquet(self.path / f"{name}.parquet")
            write_table(self.path, name, merge_leakage(base, view, key))
        save_reconstructions(self.path / "reconstructions", results)

    def _archive(self, names: list[str]) -> None:
        """Move the previous attack pass's outputs aside (never lose finished work)."""
        if not (self.path / "leakage_images.parquet").exists():
            return
        folder = self.path / "history" / time.strftime("%Y%m%d-%H%M%S")
        folder.mkdir(parents=True, exist_ok=True)
        for name in names:
            src = self.path / name
            if src.is_dir():
                src.rename(folder / name)
            elif src.exists():
                import shutil
                shutil.copy2(src, folder / name)

    def _write_manifest(self) -> None:
        tmp = self.path / "manifest.json.tmp"
        tmp.write_text(json.dumps(self.manifest, indent=2, default=str))
        tmp.replace(self.path / "manifest.json")


def read_checkpoints(path: Path) -> tuple[dict[str, dict[str, torch.Tensor]],
                                          dict[str, torch.Tensor]]:
    """Deployed tier edges and the cloud of a run directory."""
    folder = Path(path) / "checkpoints"
    edges = {p.stem.removeprefix("edge_"): torch.load(p, weights_only=True)
             for p in sorted(folder.glob("edge_*.pt"))}
    return edges, torch.load(folder / "cloud.pt", weights_only=True)


def read_observations(path: Path) -> dict[str, TierObservations]:
    """The cloud's observation log of a run directory, as the cloud held it."""
    folder = Path(path) / "observations"
    index = pd.read_parquet(folder / "index.parquet")
    out = {}
    for tier, g in index.groupby("tier", sort=True):
        g = g.sort_values("row")
        out[str(tier)] = TierObservations(
            np.where(g["phase"] == "training", 0, 1).astype(np.int8),
            g["round"].to_numpy(np.int32), g["device_id"].to_numpy(np.int32),
            g["sample"].to_numpy(np.int64), np.load(folder / f"{tier}.npy"))
    return out


def _versions() -> dict[str, str]:
    out = {}
    for pkg in _PACKAGES:
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def _git_revision() -> str | None:
    try:
        root = Path(__file__).resolve().parents[1]
        res = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=5, check=False)
        if res.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root,
                               capture_output=True, text=True, timeout=5, check=False)
        return res.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None
