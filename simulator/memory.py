"""What a run will hold in memory, item by item, and what this machine has.

:func:`estimate_memory` counts a Flower + Ray run's large parts (the dataset, the
processes, the edges and cloud copies being trained, the observation log) and names
for each the scenario keys that shrink it; :mod:`simulator.preflight` holds the total
against :func:`machine_memory` before a run starts.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulator.engine.workspace import ModelKit, Workspace
from simulator.scenario import Scenario

__all__ = ["FLOAT32", "MemoryItem", "estimate_memory", "format_bytes", "machine_memory"]

# Unique memory (psutil USS) of one process that imported torch, flwr and ray:
# measured 400 MiB with torch 2.14, flwr 1.42, ray 2.x on Linux.
_PROCESS_BYTES = 400 * 2**20
# Python objects around one logged feature row (tuple, ints, the array view).
_ROW_OVERHEAD = 200
FLOAT32, _FLOAT16 = 4, 2   # bytes per element


@dataclass(frozen=True)
class MemoryItem:
    """One part of a run's estimated memory and the scenario keys that shrink it."""

    what: str
    bytes: int
    lower: str


def estimate_memory(ws: Workspace, kit: ModelKit) -> tuple[MemoryItem, ...]:
    """The run's memory, item by item (largest first), for a Flower + Ray run.

    Counts the dataset tensors (held by the driver and by Ray's object store), the
    processes, the edge copies of the cohorts trained at once (parameters, gradients and
    optimiser state), the cloud model with its per-node training copies, and the
    observation log (float16 features, plus the copy made when it is written).
    """
    sc, pop = ws.scenario, ws.population
    arrays = [v for v in vars(ws).values() if isinstance(v, np.ndarray)]
    cpus = sc.ray.num_cpus or os.cpu_count() or 1
    actors = max(1, min(len(pop.nodes), int(cpus // sc.ray.cpus_per_node)))
    per_weight = FLOAT32 * (2 + _optimizer_copies(sc))  # weights, grads, state
    train_params = {t: sum(p.numel() for p in kit.edge(t).parameters())
                    for t in kit.tiers}
    cohorts = sorted((len(ids) * train_params[pop.node_tier(n)] * per_weight
                      for n, ids in enumerate(pop.nodes)), reverse=True)
    cloud = sum(p.numel() for p in kit.cloud().parameters())
    if sc.training.mode == "split":
        sampled = sum(math.ceil(sc.training.fraction * len(d))
                      for d in pop.by_tier().values())
        models = cloud * FLOAT32 + min(len(pop.nodes), sampled) * cloud * per_weight
        edges = sum(cohorts[:actors])
    else:  # the driver trains the cloud and every tier's edge with one optimiser
        models = (cloud + sum(train_params.values())) * per_weight
        edges = 0
    items = [
        MemoryItem("dataset tensors (driver and Ray object store)",
                   2 * sum(a.nbytes for a in arrays),
                   "dataset.image_size, or use a smaller dataset"),
        MemoryItem(f"processes ({actors} node actors, cloud, driver, Ray)",
                   (actors + 3) * _PROCESS_BYTES,
                   "ray.num_cpus, or raise ray.cpus_per_node"),
        MemoryItem("device edges being trained (weights, gradients, optimiser state)",
                   edges, "flower.devices_per_node, or ray.num_cpus"),
        MemoryItem("cloud model and its per-node training copies", models,
                   "training.fraction, or raise flower.devices_per_node (fewer nodes)"),
        MemoryItem("observation log", _observation_bytes(ws, kit),
                   "observation.training_per_device, inference.samples_per_device "
                   "or observation.phases"),
    ]
    return tuple(sorted(items, key=lambda item: -item.bytes))


def machine_memory() -> tuple[int, int]:
    """This machine's memory in bytes: ``(total, available now)``.

    Read from ``/proc/meminfo`` and capped by a container's cgroup limit, which is what
    the kernel enforces; elsewhere the physical memory (available then equals total).
    psutil is not used: it is not a dependency (Ray only vendors a copy).
    """
    total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    available = total
    meminfo = Path("/proc/meminfo")
    if meminfo.is_file():
        fields = dict(line.split(":", 1) for line in meminfo.read_text().splitlines()
                      if ":" in line)
        kib = {k: int(v.split()[0]) * 1024 for k, v in fields.items()
               if k in ("MemTotal", "MemAvailable")}
        total = kib.get("MemTotal", total)
        available = kib.get("MemAvailable", total)
    for name in ("/sys/fs/cgroup/memory.max",
                 "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        text = Path(name).read_text().strip() if Path(name).is_file() else ""
        if text.isdigit() and int(text) < total:
            total, available = int(text), min(available, int(text))
    return total, available


def _optimizer_copies(sc: Scenario) -> int:
    """Tensors of optimiser state per weight: Adam keeps two moments, momentum one."""
    opt = sc.training.optimizer
    if opt.name in ("adam", "adamw"):
        return 2
    return 1 if opt.momentum > 0 else 0


def _observation_bytes(ws: Workspace, kit: ModelKit) -> int:
    sc = ws.scenario
    cfg, train = sc.observation, sc.training
    seen = train.rounds * train.local_steps * train.batch_size
    keep_training = "training" in cfg.phases and train.mode == "split"
    total = 0
    for d in ws.population.devices:
        if d.tier is None:   # unable to serve: it neither trains nor infers
            continue
        rows = len(d.test_idx) if "inference" in cfg.phases else 0
        rows += min(cfg.training_per_device, seen) if keep_training else 0
        # Twice the features: the log, and the stacked copy written at the end.
        total += rows * (2 * kit.costs[d.tier].elements * _FLOAT16 + _ROW_OVERHEAD)
    return total


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024:
            return f"{n:.3g} {unit}"
        n /= 1024
    return f"{n:,.1f} TiB"
