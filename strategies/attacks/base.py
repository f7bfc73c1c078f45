"""The attack interface and the curious cloud's knowledge, expressed as types.

What an attack may use is exactly the :class:`Knowledge` object it is handed. Each threat
model is a type; a richer model subclasses a poorer one, so an attack that declares
``requires = BlackBoxQuery`` accepts :class:`BlackBoxQuery` and :class:`WhiteBox` and is
rejected (at scenario validation, see :func:`grants`) for :class:`QueryFree`.

* :class:`QueryFree`      - the cloud's own model for the tier and auxiliary data;
* :class:`BlackBoxQuery`  - plus an oracle running the deployed, defended edge (incl. its
  random transform) on the attacker's inputs; outputs are detached, no weights reachable;
* :class:`WhiteBox`       - plus the tier's edge weights (the cloud aggregated them).

Every threat model may also carry ``observed``: the features the cloud received from
this tier (rows of its observation log). The cloud holds them whatever else it is
granted, so the field lives on the poorest type; attacks that align a substitute edge
with the victim's feature distribution (``fora``, ``sdar``) need it and say so when it
is absent.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from strategies.registry import PluginParams, Registry

__all__ = ["ATTACKS", "Attack", "BlackBoxQuery", "Knowledge", "QueryFree", "QueryOracle",
           "THREAT_MODELS", "ThreatModelName", "WhiteBox", "grants"]

ThreatModelName = Literal["white_box", "black_box_query", "query_free"]


@dataclass(frozen=True)
class QueryFree:
    """Knowledge of a query-free cloud about one tier.

    Attributes
    ----------
    cloud
        The cloud's model for this tier, ``cloud(z) -> logits`` (adapter + shared trunk).
    aux_x, aux_y
        Auxiliary images in [0, 1] (N, C, H, W) and their labels.
    feature_shape
        Shape (C, H, W) of the features the tier transmits.
    image_shape
        Shape (C, H, W) of the private inputs.
    normalization
        (mean, std) per channel that the edge applies first (the protocol is public).
    observed
        Features (N, *feature_shape) the cloud received from this tier, as float32,
        or ``None`` when the adversary did not pass its log. Which phases they come
        from (training, inference) is the adversary's choice; attacks document which
        they expect.
    """

    cloud: nn.Module
    aux_x: torch.Tensor
    aux_y: torch.Tensor
    feature_shape: tuple[int, int, int]
    image_shape: tuple[int, int, int]
    normalization: tuple[tuple[float, ...], tuple[float, ...]]
    observed: torch.Tensor | None = None


class QueryOracle:
    """Runs the deployed edge on attacker inputs without exposing the edge.

    The edge lives only in a closure; results are detached, so neither weights nor
    gradients leak through the oracle.
    """

    __slots__ = ("_run",)

    def __init__(self, edge_and_transform: Callable[[torch.Tensor], torch.Tensor]) -> None:
        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return edge_and_transform(x).detach().clone()

        self._run = run

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._run(x)

    def __reduce__(self):  # an oracle is a capability of one process, never shipped
        raise TypeError("a QueryOracle cannot be pickled; build it where the edge lives")


@dataclass(frozen=True)
class BlackBoxQuery(QueryFree):
    """Query-free knowledge plus a query oracle on the deployed, defended edge."""

    query: QueryOracle = None  # type: ignore[assignment]


@dataclass(frozen=True)
class WhiteBox(BlackBoxQuery):
    """Black-box knowledge plus the tier's edge module (weights and architecture)."""

    edge: nn.Module = None  # type: ignore[assignment]


Knowledge = QueryFree
THREAT_MODELS: dict[str, type[QueryFree]] = {
    "query_free": QueryFree, "black_box_query": BlackBoxQuery, "white_box": WhiteBox,
}


def grants(threat_model: str, required: type[QueryFree]) -> bool:
    """Whether ``threat_model`` gives at least the knowledge ``required``."""
    return issubclass(THREAT_MODELS[threat_model], required)


class Attack:
    """Base of every inversion attack: ``fit`` on knowledge, then ``reconstruct`` z.

    Subclasses set ``requires`` to the poorest knowledge type they can work with, and
    ``observed_phases`` to the phases of the cloud's observation log they fit on
    (``"training"``, ``"inference"``); empty: the attack never reads
    ``knowledge.observed``, so the adversary need not pass it.
    """

    Params: ClassVar[type[PluginParams]]
    requires: ClassVar[type[QueryFree]] = QueryFree
    observed_phases: ClassVar[tuple[str, ...]] = ()
    name: ClassVar[str] = "base"

    def __init__(self, params: PluginParams) -> None:
        self.params = params

    def fit(self, knowledge: QueryFree, generator: torch.Generator) -> None:
        """Prepare the attack for one tier (train a decoder, a shadow edge, ...)."""
        if not isinstance(knowledge, self.requires):
            raise TypeError(f"attack {self.name!r} needs {self.requires.__name__} "
                            f"knowledge, got {type(knowledge).__name__}")
        self._fit(knowledge, generator)

    def _fit(self, knowledge: QueryFree, generator: torch.Generator) -> None:
        raise NotImplementedError

    def reconstruct(self, z: torch.Tensor) -> torch.Tensor:
        """Reconstruct inputs in [0, 1] (N, C, H, W) from observed features ``z``."""
        raise NotImplementedError


ATTACKS: Registry[type[Attack]] = Registry("attack", package="strategies.attacks")
