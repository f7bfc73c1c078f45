"""The one schema of a scenario file.

Every section is a frozen pydantic model with unknown keys forbidden. Plug-in sections
(dataset, backbone, encoder, defense, attacks) are discriminated unions generated from the
registries, so valid names and each plug-in's parameters come from the plug-ins
themselves. Raw YAML is touched only in :mod:`simulator.loading`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import (AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag,
                      ValidationError, create_model, field_validator, model_validator)

from simulator.data import DATASETS
from simulator.fleet.distributions import Dist, quantity
from simulator.search import AUX_SIZE, AuxSize, axes, grid, search_model, setting_text
from strategies.attacks import ATTACKS, THREAT_MODELS, grants
from strategies.defenses import DEFENSES
from strategies.models import BACKBONES, ENCODERS
from strategies.registry import Registry, StrictNumbers

__all__ = ["Scenario", "Tier", "DeviceProfile", "Fleet", "Assignment", "Training",
           "RoundTiming", "TimeOfDay", "EdgeLossWarmup", "Collapse",
           "Partition", "Splits",
           "Inference", "Observation", "Adversary", "Auxiliary", "Information", "RayConfig", "FlowerConfig",
           "ModelSection", "Sweep", "Faults", "plugin_params"]


class Section(StrictNumbers):
    """Unknown keys are errors, values frozen; numbers finite and never booleans."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _file_name_token(value: str) -> str:
    # Names become directory names (runs/<name>): no separators, nothing hidden or
    # climbing out of output_dir.
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.\-]*", value) or ".." in value:
        raise ValueError("must be a file-name-safe token: letters, digits, '_', '-' "
                         "and '.', starting with a letter or digit (no '/', '\\', "
                         "spaces or '..')")
    return value


FileNameToken = Annotated[str, Field(min_length=1, max_length=100),
                          AfterValidator(_file_name_token)]


class _NameTag(Discriminator):
    # Hashable although its error context is a dict: `DatasetSpec | None` makes typing
    # hash every Annotated metadata item.
    def __hash__(self) -> int:
        return id(self)


def _plugin_name(value: Any) -> str | None:
    name = value.get("name") if isinstance(value, dict) else \
        getattr(value, "name", None)
    return name if isinstance(name, str) else None


def _plugin_union(registry: Registry, searchable: bool = False, **extra: Any) -> Any:
    """A discriminated union over every plug-in of ``registry``, tagged by ``name``.

    ``extra`` adds fields the simulator reads itself (not passed to the plug-in);
    ``searchable`` adds ``search``, a grid over the plug-in's own parameters
    (:mod:`simulator.search`). A missing or unknown name raises a ``plugin_name``
    error whose context carries the valid names and every key some plug-in accepts,
    so the loader can name both the choices and a stray key (pydantic's own message
    names neither).
    """
    members, keys = [], set()
    for name, cls in registry.items():
        own = _search_fields(name, cls.Params) if searchable else {}
        model = create_model(f"{registry.kind}:{name}", __base__=cls.Params,
                             name=(Literal[name], ...), **extra,
                             **own)  # type: ignore[call-overload]
        members.append(Annotated[model, Tag(name)])
        keys |= set(model.model_fields)
    choices = ", ".join(repr(n) for n in registry.names())
    tag = _NameTag(
        _plugin_name, custom_error_type="plugin_name",
        custom_error_message=f"needs key 'name', one of: {choices}",
        custom_error_context={"kind": registry.kind, "choices": choices,
                              "keys": tuple(sorted(keys))})
    return Annotated[Union[tuple(members)], tag]  # noqa: UP007


def _search_fields(name: str, params: type[BaseModel]) -> dict[str, Any]:
    """``search`` over the plug-in's ``params``, and a check of each of its points."""
    def points_valid(spec: Any) -> Any:
        # Each value passed its field's own check; the whole point must pass Params
        # too (a plug-in may check one parameter against another).
        for setting in grid(spec):
            own = {k: v for k, v in setting.items() if k != AUX_SIZE}
            try:
                params.model_validate({**plugin_params(spec), **own})
            except ValidationError as err:
                first = err.errors(include_url=False)[0]
                raise ValueError(f"search point {setting_text(setting)}: "
                                 f"{'.'.join(map(str, first['loc']))}: "
                                 f"{first['msg']}") from None
        return spec

    return {"search": (search_model(name, params) | None, Field(
                None, description="values of this attack's own parameters (and "
                "aux_size) to try; the worst point per tier is recorded")),
            "__validators__": {"_points_valid": model_validator(mode="after")(
                points_valid)}}


_SIMULATOR_FIELDS = {"name", "threat_model", "label", "search", "aux_size"}


def plugin_params(spec: BaseModel) -> dict[str, Any]:
    """The plug-in's own parameters of a union member (without the simulator's fields)."""
    return spec.model_dump(exclude=_SIMULATOR_FIELDS & set(type(spec).model_fields))


DatasetSpec = _plugin_union(DATASETS)
BackboneSpec = _plugin_union(BACKBONES)
EncoderSpec = _plugin_union(ENCODERS)
DefenseSpec = _plugin_union(DEFENSES)
ThreatModel = Literal["white_box", "black_box_query", "query_free"]
AttackSpec = _plugin_union(
    ATTACKS, searchable=True,
    aux_size=(AuxSize | None, Field(None, description="auxiliary images this attack "
                                    "uses (the first ones); None: all")),
    threat_model=(ThreatModel | None, Field(None, description="overrides the adversary's "
                                             "default threat model for this attack")),
    label=(str | None, Field(None, pattern=r"^[A-Za-z0-9_]+$", description="column name "
                             "when one attack runs twice (e.g. two decoder sizes)")))


class Splits(Section):
    """Disjoint splits: device-private data is what remains after these."""

    auxiliary: float | int = Field(0.1, ge=0, description="attacker auxiliary data")
    evaluation: float | int = Field(0.1, ge=0, description="held-out evaluation data")
    provider: float | int = Field(0.0, ge=0, description="provider's own training data "
                                  "(centralized mode)")

    @field_validator("auxiliary", "evaluation", "provider")
    @classmethod
    def _fraction_or_count(cls, value: float | int) -> float | int:
        if isinstance(value, float) and value > 1:
            raise ValueError("a float is a fraction of the data and must lie in "
                             "[0, 1]; write a number of samples as an integer (e.g. 150)")
        return value


class Partition(Section):
    """How device-private data is spread over devices."""

    scheme: Literal["iid", "dirichlet", "shards"] = "iid"
    alpha: float = Field(0.5, gt=0, description="Dirichlet concentration")
    shards_per_device: int = Field(2, ge=1)
    samples_per_device: int | None = Field(None, ge=2)
    min_samples: int = Field(4, ge=2)
    test_fraction: float = Field(0.2, gt=0, lt=1, description="private test samples "
                                 "held back on each device for inference")

    @model_validator(mode="after")
    def _cap_above_minimum(self) -> Partition:
        if self.samples_per_device is not None and \
                self.samples_per_device < self.min_samples:
            raise ValueError(f"samples_per_device ({self.samples_per_device}) must be at "
                             f"least min_samples ({self.min_samples})")
        return self


class ModelSection(Section):
    backbone: BackboneSpec = Field(default_factory=lambda: {"name": "siftfunnel_cnn"})


Positive = quantity(gt=0)
Probability = quantity(gt=0, le=1)
_TRACE_SUFFIXES = (".csv", ".parquet", ".pq")


class DeviceProfile(Section):
    """Hardware numbers: what the simulated latency, memory checks and clock use.

    Each field is a number or a distribution drawn per device from the device's derived
    seed (``{dist: uniform | lognormal | categorical, ...}``, see
    :mod:`simulator.fleet.distributions`). An unset field inherits: a tier's profile
    from the fleet's (``fleet.profile``), the fleet's from the built-in defaults
    (10 GFLOP/s, 10 Mbit/s, 512 MB, availability 1; :data:`simulator.fleet.DEFAULTS`).
    """

    compute_gflops: Positive | None = Field(None, description="sustained GFLOP/s")
    uplink_mbps: Positive | None = Field(None, description="uplink Mbit/s")
    memory_mb: Positive | None = Field(None, description="memory for the edge model")
    availability: Probability | None = Field(None, description="probability to be "
                                             "reachable in a round")

    def layer(self) -> dict[str, Dist]:
        """The fields this profile sets (what it overrides of the layer below)."""
        return {k: v for k, v in self if v is not None}


def _trace_path(path: str | None) -> str | None:
    if path is not None and not path.endswith(_TRACE_SUFFIXES):
        raise ValueError(f"a device trace is a {' or '.join(_TRACE_SUFFIXES)} file")
    return path


class Tier(Section):
    """A group of devices sharing an edge encoder and defense.

    Without ``assignment`` a tier gives its size (``count`` or ``fraction``) and its
    hardware (``profile`` and/or ``trace``, over the fleet's). With ``assignment`` the
    tiers are the rungs of the ladder, smallest first: name, encoder and defense only;
    budgets decide which devices each gets.
    """

    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_\-]+$")
    count: int | None = Field(None, ge=1)
    fraction: float | None = Field(None, gt=0, le=1)
    encoder: EncoderSpec = Field(default_factory=lambda: {"name": "plain"})
    defense: DefenseSpec = Field(default_factory=lambda: {"name": "none"})
    profile: DeviceProfile = Field(default_factory=DeviceProfile)
    trace: str | None = Field(None, description="device-trace file (CSV or parquet) "
                              "for this tier's devices, over the fleet's profile")

    _trace = field_validator("trace")(_trace_path)

    @model_validator(mode="after")
    def _one_size(self) -> Tier:
        if self.count is not None and self.fraction is not None:
            raise ValueError("give exactly one of `count` or `fraction`")
        return self


class Fleet(Section):
    """Hardware of every device, which tiers inherit field by field.

    A device's numbers come from layers, general to specific: built-in defaults,
    ``fleet.trace``, ``fleet.profile``, its tier's ``trace``, its tier's ``profile``;
    each field takes the most specific layer that sets it. Trace paths are relative to
    the working directory (as ``output_dir``); see :mod:`simulator.fleet.trace`.
    """

    profile: DeviceProfile = Field(default_factory=DeviceProfile)
    trace: str | None = Field(None, description="device-trace file (CSV or parquet): "
                              "one row per device, or per device type with a `share`")

    _trace = field_validator("trace")(_trace_path)


class Assignment(Section):
    """The encoder follows the budget: each device gets the largest rung that fits.

    The tiers are the rungs (smallest first) and ``devices`` counts the fleet. Under
    ``largest_fit`` a device takes the last rung whose simulated per-sample inference
    latency meets ``deadline_ms`` and whose weights and activations fit its
    ``memory_mb`` (:func:`simulator.fleet.assign_rungs`).
    """

    rule: Literal["largest_fit"] = "largest_fit"
    deadline_ms: float | None = Field(None, gt=0, description="per-sample inference "
                                      "latency (edge compute + feature upload) a rung "
                                      "must meet")
    memory: bool = Field(True, description="weights and activations must fit the "
                         "device's memory_mb")
    unfit: Literal["drop", "smallest"] = Field(
        "drop", description="a device that fits no rung: drop = recorded as unable to "
        "serve; smallest = given the smallest rung anyway")

    @model_validator(mode="after")
    def _some_limit(self) -> Assignment:
        if self.deadline_ms is None and not self.memory:
            raise ValueError("largest_fit needs a limit: set deadline_ms, "
                             "memory: true, or both")
        return self


class Optimizer(Section):
    name: Literal["sgd", "adam", "adamw"] = "adam"
    lr: float = Field(1e-3, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    betas: tuple[float, float] = (0.5, 0.999)
    weight_decay: float = Field(0.0, ge=0)


class EdgeLossWarmup(Section):
    """When the defenses' device-side training terms switch on.

    Feature penalties that are minimised by constant features (dCor, NoPeek, L1) can
    drive a ReLU-ended encoder to all-zero output before the task has shaped it, and a
    dead ReLU never recovers. Holding them off for a few rounds, then ramping them in,
    lets the task loss shape the features first. Counted in rounds (split) or provider
    epochs (centralized); the default switches every term on from the start.
    """

    hold: int = Field(0, ge=0, description="rounds without the defense's edge loss")
    ramp: int = Field(0, ge=0, description="rounds over which its weight then rises "
                      "linearly to 1")

    def weight(self, rnd: int) -> float:
        """The edge loss's weight in round ``rnd`` (0-based): 0, then k/(ramp+1), then 1."""
        if rnd < self.hold:
            return 0.0
        return min(1.0, (rnd - self.hold + 1) / (self.ramp + 1))


class Collapse(Section):
    """Collapse detection per tier and round (split training), and what to do about it.

    A tier is *unhealthy* in a round when the features the cloud received hold NaN or
    infinities (training diverged; always tested), are dead
    (share of non-zero elements below ``min_nonzero``), constant (their variance over
    the batch below ``min_spread`` of their mean square, whatever the features' scale),
    or, from round ``accuracy_after``
    on, useless (the cloud's training accuracy does not beat the share of the round's
    most frequent label by ``accuracy_margin``). It is *collapsed* after ``patience``
    unhealthy rounds in a row (:mod:`simulator.engine.collapse`). Then ``action``:
    warn = a progress line and a record; stop = the run ends with status failed;
    rollback = the tier's edge goes back to the last one known healthy and its
    defense's edge-loss weight is multiplied by ``weight_factor`` (stop after
    ``max_rollbacks``). A threshold of 0 (or ``accuracy_margin: null``) disables a test.
    """

    action: Literal["warn", "stop", "rollback"] = "warn"
    min_nonzero: float = Field(
        1e-3, ge=0, lt=1,
        description="share of non-zero feature elements below which they are dead")
    min_spread: float = Field(
        1e-3, ge=0, lt=1,
        description="per-feature variance over the batch, relative to the features' "
        "mean square, below which the features are constant")
    accuracy_margin: float | None = Field(
        0.02, ge=0, lt=1,
        description="training accuracy must beat the majority label's share by this "
        "(None: no accuracy test)")
    accuracy_after: int = Field(
        3, ge=0,
        description="first (0-based) round of the accuracy test, counted again after "
        "a rollback: before it the task is still being learnt")
    patience: int = Field(
        1, ge=1, description="unhealthy rounds in a row before a tier is collapsed")
    weight_factor: float = Field(
        0.5, gt=0, lt=1, description="rollback: multiplies the tier's edge-loss weight")
    max_rollbacks: int = Field(
        3, ge=1, description="rollback: rollbacks per tier before the run stops")


class TimeOfDay(Section):
    """Availability that follows the virtual hour: a cosine over 24 hours.

    Every device's availability is multiplied by 1 at ``peak_hour`` and by
    ``1 - amplitude`` twelve hours away (:func:`simulator.fleet.availability_factor`).
    """

    amplitude: float = Field(0.5, ge=0, le=1)
    peak_hour: float = Field(20.0, ge=0, lt=24, description="hour of most devices "
                             "online (e.g. charging overnight)")
    start_hour: float = Field(0.0, ge=0, lt=24, description="virtual hour at which "
                              "round 0 starts")


class RoundTiming(Section):
    """Rounds on the virtual clock (split mode), as a real fleet runs them.

    A round selects ``ceil(over_selection x target)`` reachable devices and closes when
    ``target`` of them finish, when all have finished or dropped out, or at
    ``deadline_s`` (:func:`simulator.fleet.plan_round`). The defaults reproduce the
    plain sampling: no deadline, no over-selection, no dropouts.
    """

    deadline_s: float | None = Field(None, gt=0, description="virtual seconds after "
                                     "which a round stops waiting")
    over_selection: float = Field(1.0, ge=1, description="devices selected per wanted "
                                  "device (FedScale over-commits 1.3x)")
    stragglers: Literal["drop", "accept_late"] = Field(
        "drop", description="devices past the deadline: drop = their work is "
        "discarded; accept_late = the round waits and accepts them late")
    dropout_probability: float = Field(0.0, ge=0, lt=1, description="chance a selected "
                                       "device leaves mid-round")
    interval_s: float | None = Field(None, gt=0, description="virtual seconds between "
                                     "round starts (None: back to back)")
    time_of_day: TimeOfDay | None = None


class Training(Section):
    mode: Literal["split", "centralized"] = "split"
    rounds: int = Field(5, ge=0)
    local_steps: int = Field(5, ge=1, description="batches per device per round (split)")
    epochs: int = Field(5, ge=1, description="provider epochs (centralized)")
    batch_size: int = Field(32, ge=1)
    fraction: float = Field(1.0, gt=0, le=1, description="devices sampled per round")
    optimizer: Optimizer = Field(default_factory=Optimizer)
    edge_loss_warmup: EdgeLossWarmup = Field(default_factory=EdgeLossWarmup)
    timing: RoundTiming = Field(default_factory=RoundTiming)
    collapse: Collapse = Field(default_factory=Collapse)



class Inference(Section):
    samples_per_device: int | None = Field(None, ge=1, description="None = all of the "
                                           "device's private test samples")


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


class RayConfig(Section):
    address: str | None = Field(None, description="an existing cluster ('auto' or "
                                "host:port); None = local, or RAY_ADDRESS")
    num_cpus: int | None = Field(None, ge=1, description="local Ray only")
    cpus_per_node: float = Field(1.0, gt=0, description="CPUs one Flower node's actor uses")


class FlowerConfig(Section):
    devices_per_node: int = Field(25, ge=1, description="same-tier devices one Flower "
                                  "node carries (cohort)")


class NodeFault(Section):
    """Kill the actor of Flower node ``node`` (a device cohort) in round ``round``."""

    round: int = Field(ge=0, description="0-based training round")
    node: int = Field(ge=0, description="node index (cohorts are numbered tier by tier)")
    step: int = Field(0, ge=0, description="local step at which it dies")


class CloudFault(Section):
    """Kill the cloud's process during training round ``round``."""

    round: int = Field(ge=0, description="0-based training round")
    exchange: int = Field(0, ge=0, description="it dies at this (0-based) split-learning "
                          "exchange of the round")


class AdversaryFault(Section):
    """Kill the adversary process attacking (``tier``, ``attack``), ``times`` times."""

    tier: str
    attack: str = Field(description="an attack label, or 'information'")
    point: int | None = Field(None, ge=0, description="a searched attack: only this "
                              "grid point (0-based); None: every point")
    times: int = Field(1, ge=1, le=2, description="1: the retry succeeds; 2: the retry "
                       "dies too and the attack is recorded as failed")


class Faults(Section):
    """Injected faults, for tests and robustness studies (nothing by default).

    Each fires on the first attempt only: a round that the run repeats after a cloud
    restart, or an attack it retries, is not killed again.
    """

    kill_node: tuple[NodeFault, ...] = ()
    kill_cloud: tuple[CloudFault, ...] = ()
    kill_adversary: tuple[AdversaryFault, ...] = ()
    device_crash_probability: float = Field(0.0, ge=0, lt=1, description="chance that "
                                            "a training device crashes mid-round")


class Sweep(Section):
    """A grid of scenario variants, each axis a dotted override path and its values."""

    axes: dict[str, tuple[Any, ...]] = Field(default_factory=dict, description="e.g. "
                                             "{'tiers.0.defense.beta': [0.5, 2]}")
    mode: Literal["grid", "zip"] = "grid"
    parallel: int = Field(1, ge=1, description="points run at once (Ray tasks)")

    @field_validator("axes")
    @classmethod
    def _non_empty(cls, axes: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
        empty = [k for k, v in axes.items() if not v]
        if empty:
            raise ValueError(f"sweep axes need at least one value: {empty}")
        return axes


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
