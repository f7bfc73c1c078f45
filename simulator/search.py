"""An attack's search grid: the hyperparameters a scenario lets its attacker try.

A defense can look strong only because the attacker was small. An attack spec may
therefore declare ``search``: per parameter of the attack's own ``Params`` (and
``aux_size``, the auxiliary images it uses) a short list of values. The grid is their
Cartesian product; each point is an attack unit of its own, and the records keep,
per tier, the point that leaked most (:mod:`simulator.budgets`).

This module holds the schema of a ``search`` section (built per attack from its
``Params``, so names and values are checked by the attack's own fields) and pure
helpers over a validated spec: the points, a point's spec, and a stable key per point.
Points are ordered by the attack's parameter order (``aux_size`` last), not by the
YAML's key order, so a scenario dumped and read back gives the same points in the same
order.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Annotated, Any

from pydantic import (BaseModel, ConfigDict, Field, create_model, field_validator,
                      model_serializer)

from strategies.registry import StrictNumbers

__all__ = ["AUX_SIZE", "AuxSize", "Setting", "axes", "grid", "point_spec",
           "search_model", "setting_key", "setting_text"]

AUX_SIZE = "aux_size"
AuxSize = Annotated[int, Field(ge=8)]   # as adversary.auxiliary.size: a usable batch
Setting = dict[str, Any]                # one grid point: searched name -> value


class _Search(StrictNumbers):
    """Base of every attack's ``search`` model: known names only, lists of values."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @field_validator("*", mode="before")
    @classmethod
    def _a_list(cls, values: Any) -> Any:
        if values is not None and not isinstance(values, list | tuple):
            raise ValueError(f"give a list of values to try, e.g. [{values!r}]")
        return values

    @field_validator("*")
    @classmethod
    def _distinct(cls, values: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
        if values is None:
            return None
        if not values:
            raise ValueError("give at least one value (or leave the name out)")
        # a repeated value is the same point twice: the same unit file, the same work
        repeated = [v for i, v in enumerate(values) if v in values[:i]]
        if repeated:
            raise ValueError(f"values must be distinct; repeated: {repeated}")
        return values

    @model_serializer(mode="wrap")
    def _searched_only(self, handler: Any) -> dict[str, Any]:
        # the resolved scenario (manifest, scenario.yaml) shows what is searched only
        return {k: v for k, v in handler(self).items() if v is not None}


def _values_of(annotation: Any, metadata: list[Any]) -> Any:
    """A tuple of values, each checked like the parameter itself."""
    item = Annotated[tuple([annotation, *metadata])] if metadata else annotation
    return tuple[item, ...] | None


def search_model(name: str, params: type[BaseModel]) -> type[BaseModel]:
    """The ``search`` section of attack ``name``: each field of ``params`` (with its
    type and constraints) and ``aux_size``, each an optional list of values."""
    fields: dict[str, Any] = {
        key: (_values_of(f.annotation, f.metadata),
              Field(None, description=f.description))
        for key, f in params.model_fields.items()}
    fields[AUX_SIZE] = (_values_of(AuxSize, []), Field(
        None, description="auxiliary images the attack uses (the first ones)"))
    return create_model(f"search:{name}", __base__=_Search, **fields)


def axes(spec: Any) -> dict[str, tuple[Any, ...]]:
    """The searched names of an attack spec and their values (empty: no search)."""
    search = getattr(spec, "search", None)
    if search is None:
        return {}
    return {k: v for k, v in search if v is not None}


def grid(spec: Any) -> list[Setting]:
    """Every point of the spec's grid, in order; ``[{}]`` when it searches nothing."""
    found = axes(spec)
    return [dict(zip(found, values)) for values in itertools.product(*found.values())]


def point_spec(spec: Any, setting: Setting) -> Any:
    """The attack spec of one grid point: its values set, and no search of its own."""
    return type(spec).model_validate({**spec.model_dump(), **setting, "search": None})


def setting_text(setting: Setting) -> str:
    """The point as compact JSON with sorted keys; ``""`` for an unsearched attack."""
    return json.dumps(setting, sort_keys=True, separators=(",", ":")) if setting else ""


def setting_key(setting: Setting) -> str:
    """A short key that stays the same for the same point across runs (file names)."""
    return hashlib.sha1(setting_text(setting).encode()).hexdigest()[:10]
