"""The run directory: the simulator records, analysis reads.

Layout (every table in parquet and CSV)::

    manifest.json          resolved scenario, seed, versions, git revision, status,
                           stages (done, seconds), failures
    scenario.yaml          the resolved scenario
    devices.{parquet,csv}  one row per device
    tiers.{parquet,csv}    one row per tier
    rounds.{parquet,csv}   one row per (round, tier) of training
    participation.{parquet,csv}  one row per (round, selected device) on the virtual
                           clock: completed, late, dropped, straggled or cancelled
    leakage.{parquet,csv}  one row per (device or tier, attack, metric)
    attack_budgets.{parquet,csv}  one row per (tier, attack, grid point): what the
                           attacker spent and the point's tier leakage
    checkpoints/edge_<tier>.pt, checkpoints/cloud.pt   state dicts (weights_only loadable)
    observations/<tier>.npy + observations/index.parquet   the cloud's observation log
    stages/                the stages' own checkpoints (round checkpoints, attack units)

Every file is written to a temporary name and renamed into place, and a stage is marked
done in the manifest only after its outputs are written, so a run killed at any moment
leaves finished work intact and ``siftsim run --resume`` redoes only what was not done.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import yaml

from simulator.engine.observations import TierObservations
from simulator.scenario import Scenario

__all__ = ["RunRecorder", "new_run_dir", "read_checkpoints", "read_observations",
           "write_atomic"]


def write_atomic(path: Path, write: Callable[[Path], Any]) -> None:
    """``write(tmp)`` then rename ``tmp`` to ``path``: readers never see half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    write(tmp)
    os.replace(tmp, path)

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
    """Writes one run directory, stage by stage.

    Parameters
    ----------
    path
        The run directory.
    scenario
        The resolved scenario (written as ``scenario.yaml``).
    resume
        Continue an existing run directory: its manifest (stages done, failures) is
        read and kept.
    """

    def __init__(self, path: Path, scenario: Scenario, resume: bool = False) -> None:
        self.path = Path(path)
        resolved = scenario.model_dump(mode="json")
        if resume:
            self.manifest = json.loads((self.path / "manifest.json").read_text())
            self.manifest["scenario"] = resolved
            self.manifest.setdefault("stages", {})
            self.manifest.setdefault("failures", [])
            self.manifest["status"] = "running"
            self.manifest["resumed"] = self.manifest.get("resumed", 0) + 1
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            self.manifest: dict[str, Any] = {
                "name": scenario.name, "seed": scenario.seed, "status": "running",
                "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "stages": {},
                "failures": [], "versions": _versions(), "git_revision": _git_revision(),
                "python": platform.python_version(), "scenario": resolved}
        write_atomic(self.path / "scenario.yaml", lambda p: p.write_text(
            yaml.safe_dump(resolved, sort_keys=False)))
        self._write_manifest()

    def note_ray_session(self) -> None:
        """Remember the local Ray session this process runs (for a later --resume to
        end what a SIGKILL left of it)."""
        from simulator.reaper import session_dir
        here = session_dir()
        sessions = self.manifest.setdefault("ray_sessions", [])
        if here and here not in sessions:
            sessions.append(here)
            self._write_manifest()

    def stage_done(self, stage: str) -> bool:
        return self.manifest["stages"].get(stage, {}).get("status") == "done"

    def mark_stage(self, stage: str, seconds: float, **info: Any) -> None:
        """``stage`` finished (its outputs are on disk): record it in the manifest."""
        self.manifest["stages"][stage] = {"status": "done", "seconds": round(seconds, 3),
                                          **info}
        self._write_manifest()

    def forget_stage(self, stage: str) -> None:
        """``stage`` must run again (``siftsim attack`` reruns the attack stage)."""
        self.manifest["stages"].pop(stage, None)
        self._write_manifest()

    def record_failures(self, failures: list[dict[str, Any]]) -> None:
        """Failures absorbed by the run (lost rounds, dead processes): kept in order."""
        known = {json.dumps(f, sort_keys=True, default=str)
                 for f in self.manifest["failures"]}
        for f in failures:
            if json.dumps(f, sort_keys=True, default=str) not in known:
                self.manifest["failures"].append(f)
        self._write_manifest()

    def record_collapses(self, collapses: list[dict[str, Any]]) -> None:
        """Training collapses and what the policy did (the train state's full list)."""
        if collapses or "collapses" in self.manifest:
            self.manifest["collapses"] = list(collapses)
            self._write_manifest()

    @property
    def failures(self) -> list[dict[str, Any]]:
        return list(self.manifest["failures"])

    def finish(self, status: str = "complete", error: str | None = None) -> None:
        self.manifest.update(status=status, finished=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        self.manifest.pop("error", None)
        if error:
            self.manifest["error"] = error
        self._write_manifest()

    def table(self, name: str, frame: pd.DataFrame) -> None:
        write_atomic(self.path / f"{name}.parquet",
                     lambda p: frame.to_parquet(p, index=False))
        write_atomic(self.path / f"{name}.csv", lambda p: frame.to_csv(p, index=False))

    def checkpoints(self, edges: dict[str, dict[str, torch.Tensor]],
                    cloud: dict[str, torch.Tensor]) -> None:
        """The deployed weights (what the attack stage and ``siftsim attack`` read)."""
        folder = self.path / "checkpoints"
        folder.mkdir(exist_ok=True)
        for tier, state in edges.items():
            write_atomic(folder / f"edge_{tier}.pt", lambda p, s=state: torch.save(s, p))
        write_atomic(folder / "cloud.pt", lambda p: torch.save(cloud, p))

    def observations(self, logs: dict[str, TierObservations],
                     dataset_index: np.ndarray) -> None:
        """Features as ``.npy`` per tier (float16, or float32 where features outgrew
        it); one parquet index for all tiers."""
        folder = self.path / "observations"
        folder.mkdir(exist_ok=True)
        frames = []
        for tier, obs in logs.items():
            write_atomic(folder / f"{tier}.npy", lambda p, z=obs.z: _save_npy(p, z))
            frames.append(pd.DataFrame({
                "tier": tier, "row": np.arange(len(obs.z)),
                "phase": np.where(obs.phase == 0, "training", "inference"),
                "round": obs.round, "device_id": obs.device_id, "sample": obs.sample,
                "dataset_index": dataset_index[obs.sample]}))
        index = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(
            columns=["tier", "row", "phase", "round", "device_id", "sample", "dataset_index"])
        write_atomic(folder / "index.parquet", lambda p: index.to_parquet(p, index=False))

    def leakage(self, results: list, budgets: pd.DataFrame | None = None) -> None:
        """Record attack results: ``leakage_images``, the long ``leakage`` table, its
        wide views joined into ``devices``/``tiers``, and ``attack_budgets`` when
        given; earlier passes move to history/. Every table is written to a
        temporary name, then renamed."""
        from simulator.leakage import (images_table, leakage_long, merge_leakage,
                                       save_reconstructions, wide_devices, wide_tiers,
                                       write_table)
        self._archive(["leakage_images.parquet", "leakage.parquet", "devices.parquet",
                       "tiers.parquet", "attack_budgets.parquet", "reconstructions"])
        images = images_table(results)
        long = leakage_long(images, {r.tier: r.information for r in results})
        write_table(self.path, "leakage_images", images, csv=False)
        write_table(self.path, "leakage", long)
        if budgets is not None:
            write_table(self.path, "attack_budgets", budgets)
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
        text = json.dumps(self.manifest, indent=2, default=str)
        write_atomic(self.path / "manifest.json", lambda p: p.write_text(text))


def _save_npy(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: np.save would append ".npy" to a name
        np.save(fh, array)


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
