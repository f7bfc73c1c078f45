"""Distribution specs: a device-profile number that may vary from device to device.

Wherever a profile number is accepted, a scenario may give a plain number (fixed, as
every existing scenario does) or a mapping with ``dist``::

    compute_gflops: 20                                         # fixed
    compute_gflops: {dist: uniform, low: 5, high: 50}
    compute_gflops: {dist: lognormal, median: 20, spread: 3, max: 400}
    memory_mb: {dist: categorical, values: [64, 256, 2048], weights: [5, 3, 1]}

``lognormal`` takes a median and a multiplicative spread ``s`` (the geometric standard
deviation): log-space sigma is ``ln(s)``, so about 68% of devices fall within
``[median / s, median * s]`` and 95% within ``[median / s^2, median * s^2]``; ``s = 1``
is fixed. Real fleets are skewed (a few fast devices, a long slow tail), which a
lognormal describes with two numbers. It alone takes optional ``min`` / ``max``
clipping, since uniform and categorical are bounded by their own parameters.

Each field declares its bounds (:func:`quantity`); a spec is rejected unless every
value it can produce lies within them, so a sampled profile never needs checking.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field,
                      PlainSerializer, model_validator)

__all__ = ["Dist", "quantity", "sample"]

# Parameters each distribution needs, and those it may take.
_REQUIRED = {"fixed": ("value",), "uniform": ("low", "high"),
             "lognormal": ("median", "spread"), "categorical": ("values",)}
_OPTIONAL = {"fixed": (), "uniform": (), "lognormal": ("min", "max"),
             "categorical": ("weights",)}
_PARAMS = ("value", "low", "high", "median", "spread", "values", "weights", "min",
           "max")


class Dist(BaseModel):
    """One profile number, fixed or drawn per device (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    dist: Literal["fixed", "uniform", "lognormal", "categorical"]
    value: float | None = None
    low: float | None = None
    high: float | None = None
    median: float | None = Field(None, gt=0)
    spread: float | None = Field(None, ge=1, description="multiplicative sigma")
    values: tuple[float, ...] | None = Field(None, min_length=1)
    weights: tuple[float, ...] | None = None
    min: float | None = None
    max: float | None = None

    @model_validator(mode="after")
    def _parameters(self) -> Dist:
        given = {p for p in _PARAMS if getattr(self, p) is not None}
        need, may = _REQUIRED[self.dist], _OPTIONAL[self.dist]
        missing = [p for p in need if p not in given]
        stray = sorted(given - set(need) - set(may))
        if missing or stray:
            takes = " and ".join(need)
            takes += f" (optionally {', '.join(may)})" if may else ""
            wrong = [f"missing {', '.join(missing)}"] if missing else []
            wrong += [f"{', '.join(stray)} does not apply"] if stray else []
            raise ValueError(f"{self.dist} takes {takes}: {'; '.join(wrong)}")
        if self.low is not None and self.high is not None and not self.low < self.high:
            raise ValueError(f"uniform needs low < high "
                             f"(got {self.low} and {self.high})")
        if self.min is not None and self.max is not None and not self.min < self.max:
            raise ValueError(f"min must be below max (got {self.min} and {self.max})")
        if self.weights is not None and self.values is not None:
            if len(self.weights) != len(self.values):
                raise ValueError(f"categorical needs one weight per value "
                                 f"({len(self.values)} values, "
                                 f"{len(self.weights)} weights)")
            if any(w <= 0 for w in self.weights):
                raise ValueError(f"categorical weights must be positive "
                                 f"(got {list(self.weights)})")
        return self

    def __repr_args__(self) -> Any:
        return [(k, v) for k, v in super().__repr_args__() if v is not None]

    def support(self) -> tuple[float, float]:
        """The smallest and largest value a draw can take (``inf`` if unbounded).

        A lognormal without ``min`` reports 0, which it approaches but never draws.
        """
        if self.dist == "categorical" and self.values is not None:
            return min(self.values), max(self.values)
        if self.dist == "lognormal":
            return (0.0 if self.min is None else self.min,
                    math.inf if self.max is None else self.max)
        low = self.value if self.dist == "fixed" else self.low
        high = self.value if self.dist == "fixed" else self.high
        return float(low), float(high)  # type: ignore[arg-type]


def sample(spec: Dist, gen: np.random.Generator) -> float:
    """One draw of ``spec`` from ``gen`` (a fixed spec consumes no randomness)."""
    low, high = spec.support()
    if spec.dist in ("fixed", "uniform"):
        return low if low == high else float(gen.uniform(low, high))
    if spec.dist == "categorical":
        values = np.asarray(spec.values, dtype=float)
        w = np.asarray(spec.weights or np.ones(len(values)), dtype=float)
        return float(values[gen.choice(len(values), p=w / w.sum())])
    mu, sigma = math.log(spec.median or 1.0), math.log(spec.spread or 1.0)
    # a far-tail draw must not underflow to 0 (a device of 0 GFLOP/s never finishes)
    return float(np.clip(gen.lognormal(mu, sigma), max(low, math.ulp(0.0)), high))


def _from_number(value: Any) -> Any:
    """A plain number is a fixed spec (bools are not numbers here)."""
    if isinstance(value, bool):
        raise ValueError("give a number or a mapping with `dist`, not true/false")
    if isinstance(value, int | float):
        return {"dist": "fixed", "value": value}
    return value


def _plain(spec: Dist) -> Any:
    """Fixed specs write back as plain numbers, so resolved scenarios read as before."""
    return spec.value if spec.dist == "fixed" else spec.model_dump(exclude_none=True)


def _bounded(gt: float | None, ge: float | None, le: float | None) -> Any:
    def check(spec: Dist) -> Dist:
        lo, hi = spec.support()
        if spec.dist == "lognormal" and le is not None and spec.max is None:
            raise ValueError(f"lognormal is unbounded above: set `max` "
                             f"(at most {le:g})")
        if spec.dist == "lognormal" and spec.min is None:
            lo = math.ulp(0.0)  # open at 0: meets "> 0" and ">= 0"
        if gt is not None and not lo > gt:
            raise ValueError(_outside(spec, f"greater than {gt:g}", lo))
        if ge is not None and not lo >= ge:
            raise ValueError(_outside(spec, f"greater than or equal to {ge:g}", lo))
        if le is not None and not hi <= le:
            raise ValueError(_outside(spec, f"less than or equal to {le:g}", hi))
        median = spec.median if spec.dist == "lognormal" else None
        if median is not None and not lo <= median <= hi:
            raise ValueError(f"lognormal median {spec.median:g} lies outside "
                             f"min/max [{lo:g}, {hi:g}]")
        return spec
    return check


def _outside(spec: Dist, bound: str, value: float) -> str:
    if spec.dist == "fixed":
        return f"must be {bound}"
    return f"every {spec.dist} value must be {bound} (reaches {value:g})"


def quantity(*, gt: float | None = None, ge: float | None = None,
             le: float | None = None) -> Any:
    """The type of a profile field: a number or a :class:`Dist`, within the bounds.

    Parameters
    ----------
    gt, ge, le
        Bounds every possible value must meet (as pydantic's ``Field`` bounds).
    """
    return Annotated[Dist, BeforeValidator(_from_number),
                     AfterValidator(_bounded(gt, ge, le)),
                     PlainSerializer(_plain, return_type=Any)]
