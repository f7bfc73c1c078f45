"""The curious cloud: what it logs, what it knows and which attacks it runs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from simulator.scenario.base import AttackSpec, DatasetSpec, Section, ThreatModel
from simulator.search import axes, grid
from strategies.attacks import ATTACKS, THREAT_MODELS, grants

__all__ = ["Adversary", "Auxiliary", "Information", "Observation"]


class Observation(Section):
    """What the cloud's observation log keeps of the features it receives."""

    phases: tuple[Literal["training", "inference"], ...] = ("training", "inference")
    training_per_device: int = Field(64, ge=0, description="training features kept per "
                                     "device (last rounds first)")


class Auxiliary(Section):
    """The attacker's auxiliary data."""

    source: Literal["same", "noise", "dataset"] = Field(
        "same", description="same: the scenario's auxiliary split; noise: uniform noise "
        "images; dataset: another dataset (below), resized to the victims' images")
    dataset: DatasetSpec | None = None  # type: ignore[valid-type]
    size: int | None = Field(None, ge=8, description="cap on the number of images")

    @model_validator(mode="after")
    def _dataset_given(self) -> Auxiliary:
        if (self.source == "dataset") != (self.dataset is not None):
            raise ValueError("give `dataset` exactly when source is 'dataset'")
        return self


class Information(Section):
    """Per-tier information metrics of the observed features."""

    enabled: bool = True
    max_samples: int = Field(2000, ge=64, description="features used per tier")
    mi_epochs: int = Field(20, ge=1)
    mi_dims: int = Field(64, ge=1, description="principal components of x and of z the "
                         "MI critic sees (a projection keeps it a lower bound)")
    paper_variant: bool = Field(True, description="also the sigmoid-bounded MINE of the "
                                "SiftFunnel code (at most 1 nat)")


class Adversary(Section):
    """The curious cloud: what it knows and which attacks it runs."""

    enabled: bool = False
    threat_model: ThreatModel = "black_box_query"
    phases: tuple[Literal["training", "inference"], ...] = ("inference",)
    auxiliary: Auxiliary = Field(default_factory=Auxiliary)
    attacks: tuple[AttackSpec, ...] = ()  # type: ignore[valid-type]
    images_per_device: int = Field(8, ge=1, description="observed features attacked per "
                                   "device and phase")
    evaluation_epochs: int = Field(8, ge=1, description="epochs of the independent "
                                   "evaluation classifier")
    saved_reconstructions: int = Field(8, ge=0, description="per attack and tier")
    information: Information = Field(default_factory=Information)
    max_search_points: int = Field(16, ge=1, description="cap on the grid of any "
                                   "attack's `search` (each point is a full attack)")

    @model_validator(mode="after")
    def _granted(self) -> Adversary:
        for spec in self.attacks:
            granted = spec.threat_model or self.threat_model
            cls = ATTACKS.get(spec.name)
            if not grants(granted, cls.requires):
                allowed = [t for t in THREAT_MODELS if grants(t, cls.requires)]
                raise ValueError(f"attack {spec.name!r} needs threat_model in {allowed}, "
                                 f"but the scenario grants {granted!r}")
        labels = [spec.label or spec.name for spec in self.attacks]
        dupes = sorted({x for x in labels if labels.count(x) > 1})
        if dupes:
            raise ValueError(f"attacks need distinct labels; repeated: {dupes} "
                             "(set `label` on repeated attacks)")
        return self

    @model_validator(mode="after")
    def _grids_capped(self) -> Adversary:
        too_large = []
        for i, spec in enumerate(self.attacks):
            found = axes(spec)
            points = len(grid(spec))
            if points > self.max_search_points:
                sizes = " x ".join(f"{len(v)} {k}" for k, v in found.items())
                too_large.append(
                    f"attacks[{i}].search has {points} points ({sizes}), more than "
                    f"max_search_points ({self.max_search_points}): drop values, "
                    "search fewer parameters, or raise adversary.max_search_points")
        if too_large:
            raise ValueError("; ".join(too_large))
        return self
