"""Checks that need the data, run before anything starts.

The schema (:mod:`simulator.scenario`) judges a scenario on its own. What depends on the
dataset's size (splits, the provider's share, devices against samples) and what a run
will hold in memory can only be judged with the data at hand. :func:`preflight` reads
the dataset (never trains), builds the workspace exactly as a run does, turns a failure
into a :class:`~simulator.loading.ScenarioError` that names the YAML path to change,
and holds the run's estimated memory (:mod:`simulator.memory`) against this machine's.
``siftsim validate`` runs it; ``siftsim run`` and sweeps call it before Ray starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from simulator.data import DATASETS, make_splits
from simulator.engine.workspace import ModelKit, Workspace
from simulator.loading import ScenarioError
from simulator.memory import (FLOAT32, MemoryItem, estimate_memory, format_bytes,
                              machine_memory)
from simulator.run import build_workspace
from simulator.scenario import Scenario, plugin_params
from simulator.search import AUX_SIZE, axes
from simulator.seeding import derive_seed

__all__ = ["Report", "preflight", "preflight_all"]

# Scenario sections build_workspace never reads (tiers' plug-ins are read by ModelKit).
_NOT_IN_WORKSPACE = {"name": True, "output_dir": True, "model": True, "training": True,
                     "observation": True, "adversary": True, "ray": True, "sweep": True,
                     "tiers": {"__all__": {"encoder", "defense"}}}


@dataclass(frozen=True)
class Report:
    """What the preflight found.

    Attributes
    ----------
    memory
        Estimated memory items, largest first.
    machine_total, machine_available
        This machine's memory in bytes, total and available now
        (:func:`machine_memory`).
    warnings
        Problems that do not stop a run (memory above what is free now).
    """

    memory: tuple[MemoryItem, ...]
    machine_total: int
    machine_available: int
    warnings: tuple[str, ...] = ()

    @property
    def memory_bytes(self) -> int:
        """The estimated total."""
        return sum(item.bytes for item in self.memory)

    def summary(self) -> str:
        """One line: ``memory ~2.1 GiB of 23.5 GiB (largest: ...)``."""
        top = self.memory[0]
        return (f"memory ~{format_bytes(self.memory_bytes)} of {format_bytes(self.machine_total)} "
                f"(largest: {top.what} {format_bytes(top.bytes)})")


def preflight(scenario: Scenario, source: str = "<scenario>") -> Report:
    """Check what depends on the data and the machine; nothing is trained.

    Parameters
    ----------
    scenario
        A validated scenario.
    source
        Where it came from (the file), named in errors.

    Raises
    ------
    ScenarioError
        The data cannot be split or spread over the devices as asked, or the run would
        need more memory than this machine has; each problem names its YAML path.
    DatasetNotFoundError
        The dataset's files are missing (its own message says how to fix it).
    """
    return preflight_all([scenario], source)[0]


def preflight_all(scenarios: Sequence[Scenario], source: str = "<scenario>",
                  labels: Sequence[str] | None = None) -> list[Report]:
    """:func:`preflight` for many scenarios (a sweep's points), problems collected.

    Points that differ only in what the workspace does not read (models, defenses,
    training, adversary) share one workspace, so the dataset is read once.

    Parameters
    ----------
    labels
        One per scenario, prefixed to its problems (``point 3 (tiers.0.count=9)``).
    """
    built: dict[str, Workspace] = {}
    reports, problems = [], []
    for i, sc in enumerate(scenarios):
        prefix = f"{labels[i]}: " if labels else ""
        # with `assignment` the models' costs decide the tiers: no sharing across them
        key = sc.model_dump_json(exclude=_NOT_IN_WORKSPACE if sc.assignment is None
                                 else {k: v for k, v in _NOT_IN_WORKSPACE.items()
                                       if k not in ("model", "tiers")})
        try:
            if key not in built:
                built[key] = _build(sc)
            reports.append(_check(replace(built[key], scenario=sc)))
        except _Problems as err:
            problems += [prefix + p for p in err.args[0]]
    if problems:
        raise ScenarioError(source, problems)
    return reports


class _Problems(Exception):
    """Problems of one scenario (raised inside preflight_all, which collects them)."""


def _build(scenario: Scenario) -> Workspace:
    _check_resize(scenario)
    try:
        return build_workspace(scenario)
    except ValueError as err:
        raise _Problems([_locate(scenario, err)]) from None


def _check_resize(scenario: Scenario) -> None:
    """Refuse a resize the machine cannot hold before it is allocated.

    Reads the images at their native size (cheap next to the resize) to learn their
    number and channels.
    """
    spec = scenario.dataset
    size = getattr(spec, "image_size", None)
    if size is None:
        return
    native = DATASETS.create(spec.name, {**plugin_params(spec), "image_size": None})
    parts = [d for d in (native.load("train"), native.load("test")) if d is not None]
    count = sum(len(d) for d in parts)
    resized = count * parts[0].image_shape[0] * size * size * FLOAT32
    total, _ = machine_memory()
    # Twice: the driver's copy and the one in Ray's object store.
    if 2 * resized > total:
        raise _Problems([f"dataset.image_size: {count:,} {spec.name} images at "
                         f"{size} x {size} take {format_bytes(resized)}, held twice (driver "
                         f"and Ray's object store): more than this machine's "
                         f"{format_bytes(total)}; lower image_size"])


def _check(ws: Workspace) -> Report:
    problems = _data_problems(ws)
    if problems:
        raise _Problems(problems)
    sc = ws.scenario
    items = estimate_memory(ws, ModelKit(ws))
    total, available = machine_memory()
    need, top = sum(item.bytes for item in items), items[0]
    over = (f"memory: about {format_bytes(need)} needed (largest: {top.what}, "
            f"{format_bytes(top.bytes)}; lower {top.lower})")
    # On a cluster most of it lives on other machines: there, only warn.
    if need > total and not sc.ray.address:
        raise _Problems([f"{over} but this machine has {format_bytes(total)}"])
    warnings = ()
    if need > available:
        warnings = (f"{over}; {format_bytes(available)} of this machine's {format_bytes(total)} "
                    "are available now: the run may swap or be killed",)
    return Report(items, total, available, warnings)


def _data_problems(ws: Workspace) -> list[str]:
    """Sizes that build_workspace accepts but that fail later in the run."""
    sc, problems = ws.scenario, []
    if sc.training.mode == "centralized" and len(ws.provider_y) == 0:
        problems.append("splits.provider: training.mode is 'centralized' but the "
                        "provider's share is empty; give it some data (e.g. 0.2)")
    adv = sc.adversary
    if adv.enabled and adv.attacks and adv.auxiliary.source == "same" \
            and len(ws.aux_y) == 0:
        problems.append("splits.auxiliary: the adversary's attacks train on the "
                        "auxiliary split, which is empty; give it some data (e.g. 0.1)")
    if adv.enabled and adv.attacks and adv.auxiliary.source == "dataset":
        from simulator.auxiliary import auxiliary_data
        try:
            auxiliary_data(ws)
        except ValueError as err:
            problems.append(f"adversary.auxiliary.dataset: {err}")
            return problems
    if adv.enabled:
        problems += _aux_size_problems(ws)
    return problems


def _aux_size_problems(ws: Workspace) -> list[str]:
    """Attacks (or grid points) asking for more auxiliary images than there are."""
    from simulator.auxiliary import auxiliary_data
    asked = {f"adversary.attacks[{i}].{path}": n
             for i, spec in enumerate(ws.scenario.adversary.attacks)
             for path, n in (("aux_size", spec.aux_size),
                             ("search.aux_size", max(axes(spec).get(AUX_SIZE, [0]))))
             if n}
    if not asked:
        return []
    held = len(auxiliary_data(ws)[1])
    return [f"{path}: {n} auxiliary images asked, but the adversary's auxiliary data "
            f"holds {held}; lower it, or give the auxiliary data more "
            "(splits.auxiliary or adversary.auxiliary.size)"
            for path, n in asked.items() if n > held]


def _locate(scenario: Scenario, err: ValueError) -> str:
    """Which YAML path a build_workspace failure is about, with its message.

    Only on the error path: the dataset is read again and the steps repeated one by
    one (the same seeds give the same result) until the failing one is found.
    """
    spec, s = scenario.dataset, scenario.splits
    try:
        dataset = DATASETS.create(spec.name, plugin_params(spec))
        train, test = dataset.load("train"), dataset.load("test")
    except ValueError:
        return f"dataset: {err}"
    pool = f"{len(train)} training samples" + ("" if test is not None else
                                               ", no test split")
    try:
        private = make_splits(train, test, auxiliary=s.auxiliary,
                              evaluation=s.evaluation,
                              seed=derive_seed(scenario.seed, "splits")).private
    except ValueError:
        return (f"splits: auxiliary ({s.auxiliary}) + evaluation ({s.evaluation}) "
                f"take too much of {spec.name} ({pool}): {err}")
    if str(err).startswith("splits.provider"):
        return f"splits.provider: {s.provider} " + str(err).removeprefix(
            "splits.provider ")
    msg = str(err)
    if msg.startswith("shards"):
        return f"partition: {msg}"
    # What the provider leaves (the rule of build_workspace) is what devices share.
    provider = round(s.provider * len(private)) if isinstance(s.provider, float) \
        else s.provider
    counts = ", ".join(f"{k}: {v:,}" for k, v in scenario.tier_counts().items())
    return (f"tiers: {scenario.num_devices:,} devices ({counts}) but only "
            f"{len(private) - provider:,} private samples to share: {msg}")
