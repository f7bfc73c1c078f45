"""Defenses: one file per method, registered by name in :data:`DEFENSES`."""

from strategies.defenses.base import DEFENSES, DefendedEdge, Defense, NoParams

__all__ = ["DEFENSES", "DefendedEdge", "Defense", "NoParams"]
