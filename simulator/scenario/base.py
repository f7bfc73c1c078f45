"""What every section shares: strict frozen models, and the plug-in unions built from
the registries (dataset, backbone, encoder, defense, attacks), so valid names and each
plug-in's parameters come from the plug-ins themselves."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Union

from pydantic import (AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag,
                      ValidationError, create_model, model_validator)

from simulator.data import DATASETS
from simulator.search import AUX_SIZE, AuxSize, grid, search_model, setting_text
from strategies.attacks import ATTACKS
from strategies.defenses import DEFENSES
from strategies.models import BACKBONES, ENCODERS
from strategies.registry import Registry, StrictNumbers

__all__ = ["AttackSpec", "BackboneSpec", "DatasetSpec", "DefenseSpec", "EncoderSpec",
           "FileNameToken", "Section", "ThreatModel", "plugin_params"]


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
