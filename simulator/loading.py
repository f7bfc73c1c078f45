"""Reading scenario files: the only place that touches raw YAML.

:func:`load_scenario` parses a file, applies ``--set key=value`` overrides and validates
the result against :class:`simulator.scenario.Scenario`. Every problem of a file is
collected into one :class:`ScenarioError` whose message names each YAML path
(``tiers[1].profile.uplink_mbps``), the value found and what is allowed.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from simulator.scenario import Scenario

__all__ = ["ScenarioError", "apply_override", "load_raw", "load_scenario",
           "validate_scenario"]


class ScenarioError(ValueError):
    """A scenario that cannot run; the message lists every problem found."""

    def __init__(self, source: str, problems: list[str]) -> None:
        self.source, self.problems = source, problems
        lines = "\n".join(f"  - {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{source}: {len(problems)} {noun}:\n{lines}")


def load_scenario(path: str | Path, overrides: list[str] | None = None) -> Scenario:
    """Read, override and validate a scenario file.

    Parameters
    ----------
    path
        A YAML scenario file.
    overrides
        ``"dotted.path=value"`` strings; values are parsed as YAML (``5``, ``true``,
        ``[1, 2]``); list items are addressed by index (``tiers.1.count=10``).
    """
    raw = load_raw(path, overrides)
    return validate_scenario(raw, source=str(path))


def load_raw(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """The file's raw mapping with ``overrides`` applied; nothing validated yet."""
    path = Path(path)
    if not path.is_file():
        raise ScenarioError(str(path), ["file not found (give the path of a scenario "
                                        "YAML file, e.g. scenarios/quickstart.yaml)"])
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ScenarioError(str(path), [f"not valid YAML: {err}"]) from None
    if not isinstance(raw, dict):
        raise ScenarioError(str(path), ["the file must hold a mapping of sections "
                                        f"(name, dataset, tiers, ...), got {type(raw).__name__}"])
    problems = []
    for item in overrides or []:
        try:
            apply_override(raw, item)
        except ValueError as err:
            problems.append(str(err))
    if problems:
        raise ScenarioError(str(path), problems)
    return raw


def validate_scenario(raw: dict[str, Any], source: str = "<scenario>") -> Scenario:
    """Validate a raw mapping; raise :class:`ScenarioError` listing every problem."""
    try:
        return Scenario.model_validate(raw)
    except ValidationError as err:
        problems = [_describe(e, raw) for e in err.errors(include_url=False)]
        raise ScenarioError(source, problems) from None


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set ``dotted.path=value`` in ``raw`` (in place), creating mappings on the way.

    ``*`` in place of a list index sets the path in every item of that list, e.g.
    ``tiers.*.defense.beta=8`` (each item gets its own copy of the value).
    """
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"override {item!r} must look like key.path=value "
                         "(e.g. training.rounds=5)")
    parts = [p for p in re.split(r"\.|\[|\]", key.strip()) if p]
    _set_path(raw, parts, yaml.safe_load(text), key.strip())


def _set_path(node: Any, parts: list[str], value: Any, key: str) -> None:
    part, rest = parts[0], parts[1:]
    if isinstance(node, list):
        if part == "*":
            for i in range(len(node)):
                _descend_or_set(node, i, rest, value, key)
            return
        if not part.isdigit() or int(part) >= len(node):
            raise ValueError(f"override {key!r}: {part!r} is not an index of a list "
                             f"of {len(node)} items (or * for every item)")
        _descend_or_set(node, int(part), rest, value, key)
    elif isinstance(node, dict):
        if part == "*":
            raise ValueError(f"override {key!r}: * stands for every item of a list, "
                             "but this level is a mapping")
        if rest and part not in node:
            node[part] = {}
        _descend_or_set(node, part, rest, value, key)
    else:
        raise ValueError(f"override {key!r}: cannot descend into a "
                         f"{type(node).__name__} at {part!r}")


def _descend_or_set(node: Any, index: Any, rest: list[str], value: Any, key: str) -> None:
    if rest:
        _set_path(node[index], rest, value, key)
    else:
        node[index] = copy.deepcopy(value)


def _describe(error: dict[str, Any], raw: Any) -> str:
    """One line: YAML path, what is wrong, the value found."""
    path, node, owner = "", raw, None
    for part in error["loc"]:
        # Discriminated unions insert the plug-in name into the location; skip it.
        if isinstance(node, dict) and isinstance(part, str) and part not in node \
                and node.get("name") == part:
            continue
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
        owner = node if part == "search" else owner
        node = node[part] if isinstance(node, dict | list) and _has(node, part) else None
    if error["type"] == "plugin_name":
        return f"{path or '<top level>'}: {_plugin_name_problem(error)}"
    message = error["msg"].removeprefix("Value error, ")
    shown = "" if error["type"] in {"missing", "extra_forbidden_ignored"} else \
        f" (got {error['input']!r})" if not isinstance(error["input"], dict | list) else ""
    if error["type"] == "finite_number":
        message = "expected a finite number, not .inf or .nan"
    if error["type"] == "extra_forbidden":
        message = "unknown key (check its spelling; unknown keys are not allowed)"
        if isinstance(owner, dict) and error["loc"][-2:-1] == ("search",):
            message = _unknown_searched(owner.get("name"))
    return f"{path or '<top level>'}: {message}{shown}"


def _unknown_searched(attack: Any) -> str:
    """A ``search`` key that is not a parameter of the attack: name the ones it has."""
    from simulator.search import AUX_SIZE
    from strategies.attacks import ATTACKS
    names = [*ATTACKS.get(attack).Params.model_fields, AUX_SIZE] \
        if attack in ATTACKS else [AUX_SIZE]
    return f"not a parameter of attack {attack!r}; it searches: {', '.join(names)}"


def _plugin_name_problem(error: dict[str, Any]) -> str:
    """A plug-in section without a valid ``name``: the choices, and any stray key."""
    ctx, node = error["ctx"], error["input"]
    choices = f"(one of: {ctx['choices']})"
    if not isinstance(node, dict):
        return f"expected a mapping with key 'name' {choices}, got {node!r}"
    if "name" in node:
        return f"unknown {ctx['kind']} {node['name']!r} {choices}"
    stray = [k for k in node if k not in ctx["keys"]]
    return f"missing key 'name' {choices}" + "".join(
        f"; unknown key {k!r}" for k in stray)


def _has(node: Any, part: Any) -> bool:
    if isinstance(node, dict):
        return part in node
    return isinstance(part, int) and 0 <= part < len(node)
