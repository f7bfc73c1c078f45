"""A small generic name -> plug-in registry.

Every plug-in (dataset, encoder, backbone, defense, attack) is a class with a nested
pydantic ``Params`` model. The scenario schema builds its discriminated unions from the
registries, so an unknown name or a misspelt parameter is rejected when a scenario is
validated, with the list of valid names generated from here, never hand-written.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from typing import Annotated, Any, Generic, Literal, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, ValidationInfo, field_validator

__all__ = ["PluginParams", "Registry", "StrictNumbers", "UnknownPluginError",
           "import_submodules"]

T = TypeVar("T", bound=type)


def _leaf_types(annotation: Any) -> set[Any]:
    """The plain types an annotation is built from (through unions and containers)."""
    origin = get_origin(annotation)
    if origin is Literal:
        return {type(v) for v in get_args(annotation)}
    if origin is Annotated:
        return _leaf_types(get_args(annotation)[0])
    leaves: set[Any] = set() if origin is not None else {annotation}
    for arg in get_args(annotation) if origin is not None else ():
        if arg is not Ellipsis:
            leaves |= _leaf_types(arg)
    return leaves


def _wants_number_not_bool(annotation: Any) -> bool:
    leaves = _leaf_types(annotation)
    return bool(leaves & {int, float}) and not leaves & {bool, Any, object}


class StrictNumbers(BaseModel):
    """Numbers are real numbers: ``inf``/``nan`` and booleans-for-numbers are errors.

    Pydantic's lax mode reads ``true`` as ``1`` and accepts ``.inf``; in a scenario
    both are typos that would train on garbage. YAML ints for float fields stay fine.
    """

    model_config = ConfigDict(allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_number(cls, value: Any, info: ValidationInfo) -> Any:
        field = cls.model_fields.get(info.field_name or "")
        items = value if isinstance(value, list | tuple) else (value,)
        if field is not None and any(isinstance(v, bool) for v in items) \
                and _wants_number_not_bool(field.annotation):
            raise ValueError("expected a number, not a boolean")
        return value


class PluginParams(StrictNumbers):
    """Base of every plug-in's ``Params``: unknown keys are errors, values are frozen,
    numbers are finite and never booleans."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class UnknownPluginError(KeyError):
    """Raised for a name that no plug-in of this kind was registered under."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        self.kind, self.name, self.known = kind, name, known
        super().__init__(f"unknown {kind} {name!r}; known {kind}s: {', '.join(known)}")

    def __str__(self) -> str:
        return self.args[0]


class Registry(Generic[T]):
    """Maps names to plug-in classes of one kind (``"defense"``, ``"attack"``, ...).

    Parameters
    ----------
    kind
        Human-readable kind used in error messages.
    package
        Optional dotted package whose submodules are imported on first lookup, so that
        adding a plug-in is writing one file in that package.
    """

    def __init__(self, kind: str, package: str | None = None) -> None:
        self.kind = kind
        self._package = package
        self._entries: dict[str, T] = {}
        self._loaded = package is None

    def register(self, name: str) -> Callable[[T], T]:
        """Class decorator registering ``cls`` under ``name``; ``cls.Params`` is required."""

        def decorator(cls: T) -> T:
            if name in self._entries and self._entries[name] is not cls:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            params = getattr(cls, "Params", None)
            if not (isinstance(params, type) and issubclass(params, BaseModel)):
                raise TypeError(f"{self.kind} {name!r} needs a pydantic `Params` class")
            cls.name = name  # type: ignore[attr-defined]
            self._entries[name] = cls
            return cls

        return decorator

    def _load(self) -> None:
        if not self._loaded:
            import_submodules(self._package)  # type: ignore[arg-type]
            self._loaded = True

    def names(self) -> list[str]:
        """Registered names, sorted."""
        self._load()
        return sorted(self._entries)

    def get(self, name: str) -> T:
        """The class registered under ``name``; raises :class:`UnknownPluginError`."""
        self._load()
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownPluginError(self.kind, name, self.names()) from None

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return sorted(self._entries.items())

    def create(self, name: str, params: BaseModel | dict[str, Any] | None = None,
               **kwargs: Any) -> Any:
        """Instantiate plug-in ``name`` with validated ``params`` (a dict or its Params)."""
        cls = self.get(name)
        if not isinstance(params, cls.Params):  # type: ignore[attr-defined]
            params = cls.Params.model_validate(params or {})  # type: ignore[attr-defined]
        return cls(params, **kwargs)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries


def import_submodules(package: str) -> None:
    """Import every module of ``package`` so their ``@register`` decorators run."""
    pkg = importlib.import_module(package)
    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package}.{info.name}")
