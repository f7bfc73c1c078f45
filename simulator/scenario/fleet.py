"""The devices: data splits and partition, the model, tiers, fleet hardware and the
budget-driven assignment of encoders."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from simulator.fleet.distributions import Dist, quantity
from simulator.scenario.base import BackboneSpec, DefenseSpec, EncoderSpec, Section

__all__ = ["Assignment", "DeviceProfile", "Fleet", "ModelSection", "Partition", "Splits",
           "Tier"]


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
