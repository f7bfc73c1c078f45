"""The whole scenario: its sections, and the checks that span several of them."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from simulator.scenario.adversary import Adversary, Observation
from simulator.scenario.base import DatasetSpec, FileNameToken, Section
from simulator.scenario.fleet import Assignment, Fleet, ModelSection, Partition, Splits, Tier
from simulator.scenario.runtime import Faults, FlowerConfig, RayConfig, Sweep
from simulator.scenario.training import Inference, Training
from simulator.search import grid
from strategies.defenses import DEFENSES

__all__ = ["Scenario"]


class Scenario(Section):
    """A complete, validated scenario."""

    name: FileNameToken = Field(description="run directory name under output_dir")
    seed: int = Field(0, ge=0)
    output_dir: str = "runs"
    devices: int | None = Field(None, ge=1, description="total devices when tiers give "
                                "fractions")
    dataset: DatasetSpec = Field(default_factory=lambda: {"name": "digits"})
    splits: Splits = Field(default_factory=Splits)
    partition: Partition = Field(default_factory=Partition)
    model: ModelSection = Field(default_factory=ModelSection)
    tiers: tuple[Tier, ...] = Field(min_length=1)
    fleet: Fleet = Field(default_factory=Fleet)
    assignment: Assignment | None = None
    training: Training = Field(default_factory=Training)
    inference: Inference = Field(default_factory=Inference)
    observation: Observation = Field(default_factory=Observation)
    adversary: Adversary = Field(default_factory=Adversary)
    ray: RayConfig = Field(default_factory=RayConfig)
    flower: FlowerConfig = Field(default_factory=FlowerConfig)
    faults: Faults = Field(default_factory=Faults)
    sweep: Sweep | None = None

    @field_validator("tiers")
    @classmethod
    def _unique_tiers(cls, tiers: tuple[Tier, ...]) -> tuple[Tier, ...]:
        names = [t.name for t in tiers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"tier names must be unique; repeated: {dupes}")
        return tiers

    @model_validator(mode="after")
    def _population(self) -> Scenario:
        if self.assignment is not None:
            return self._ladder()
        unsized = [f"tiers[{i}] ({t.name!r})" for i, t in enumerate(self.tiers)
                   if t.count is None and t.fraction is None]
        if unsized:
            raise ValueError(f"{', '.join(unsized)}: give `count` or `fraction` (or an "
                             "`assignment` section, where budgets decide)")
        if any(t.fraction is not None for t in self.tiers):
            if self.devices is None:
                raise ValueError("tiers give `fraction`: set the top-level `devices` total")
            total = sum(t.fraction or 0.0 for t in self.tiers)
            if any(t.count is not None for t in self.tiers) or abs(total - 1) > 1e-6:
                raise ValueError(f"tier fractions must all be given and sum to 1 (got {total:g})")
        elif self.devices is not None and self.devices != self.num_devices:
            raise ValueError(f"`devices` is {self.devices} but tier counts sum to "
                             f"{self.num_devices}")
        return self

    @model_validator(mode="after")
    def _warmup_fits(self) -> Scenario:
        # Only where a tier's defense has an edge loss: a warm-up in a shipped scenario
        # must not forbid `--set training.rounds=2` while no tier uses one.
        training = self.training
        span = training.rounds if training.mode == "split" else training.epochs
        unit = "rounds" if training.mode == "split" else "epochs"
        hold = training.edge_loss_warmup.hold
        penalised = [t.name for t in self.tiers if DEFENSES.get(t.defense.name).adds_edge_loss()]
        if penalised and hold and hold >= span:
            raise ValueError(
                f"training: edge_loss_warmup.hold ({hold}) must be below training.{unit} "
                f"({span}), or the edge loss of the defense on {penalised} never "
                f"trains: lower hold or raise {unit}")
        return self

    @model_validator(mode="after")
    def _faults_exist(self) -> Scenario:
        f, problems = self.faults, []
        rounds = self.training.rounds if self.training.mode == "split" else 0
        for key, items in (("kill_node", f.kill_node), ("kill_cloud", f.kill_cloud)):
            for i, item in enumerate(items):
                if item.round >= rounds:
                    problems.append(f"faults.{key}[{i}].round is {item.round}, but split "
                                    f"training runs rounds 0-{rounds - 1}")
        for i, node in enumerate(f.kill_node):
            # with `assignment`, nodes emerge from budgets: checked when the run starts
            if self.assignment is None and node.node >= self.num_nodes:
                problems.append(f"faults.kill_node[{i}].node is {node.node}, but the "
                                f"scenario has nodes 0-{self.num_nodes - 1}")
            if node.step >= self.training.local_steps:
                problems.append(f"faults.kill_node[{i}].step must be below "
                                f"training.local_steps ({self.training.local_steps})")
        labels = [a.label or a.name for a in self.adversary.attacks] + ["information"]
        for i, adv in enumerate(f.kill_adversary):
            if adv.tier not in {t.name for t in self.tiers}:
                problems.append(f"faults.kill_adversary[{i}].tier {adv.tier!r} is not a "
                                "tier of the scenario")
            if adv.attack not in labels:
                problems.append(f"faults.kill_adversary[{i}].attack {adv.attack!r} is not "
                                f"one of {labels}")
            points = {a.label or a.name: len(grid(a)) for a in self.adversary.attacks}
            if adv.point is not None and adv.point >= points.get(adv.attack, 1):
                problems.append(f"faults.kill_adversary[{i}].point is {adv.point}, but "
                                f"{adv.attack!r} has grid points "
                                f"0-{points.get(adv.attack, 1) - 1}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def num_nodes(self) -> int:
        """Flower nodes: each tier's devices in cohorts of ``flower.devices_per_node``."""
        per = self.flower.devices_per_node
        return sum(-(-n // per) for n in self.tier_counts().values())

    def _ladder(self) -> Scenario:
        """With `assignment`, tiers are rungs: size and hardware come from the fleet."""
        if self.devices is None:
            raise ValueError("`assignment` counts devices fleet-wide: set the "
                             "top-level `devices`")
        for i, t in enumerate(self.tiers):
            given = [k for k in ("count", "fraction", "trace")
                     if getattr(t, k) is not None]
            given += ["profile"] if t.profile.layer() else []
            if given:
                raise ValueError(f"tiers[{i}] ({t.name!r}) is a rung of `assignment`: "
                                 f"drop {', '.join(given)} (budgets decide its "
                                 "devices; hardware comes from `fleet`)")
        return self

    def tier_counts(self) -> dict[str, int]:
        """Devices per tier; fractions are rounded by largest remainder to `devices`.

        Empty with `assignment`: the counts emerge from budgets when the population
        is expanded.
        """
        if self.assignment is not None:
            return {}
        if all(t.count is not None for t in self.tiers):
            return {t.name: int(t.count) for t in self.tiers}  # type: ignore[arg-type]
        raw = [(t.name, (t.fraction or 0.0) * (self.devices or 0)) for t in self.tiers]
        counts = {n: int(v) for n, v in raw}
        left = (self.devices or 0) - sum(counts.values())
        by_remainder = sorted(raw, key=lambda nv: (-(nv[1] - int(nv[1])), nv[0]))
        for n, _ in by_remainder[:left]:
            counts[n] += 1
        return counts

    @property
    def num_devices(self) -> int:
        if self.assignment is not None:
            return int(self.devices or 0)
        return sum(self.tier_counts().values())
