"""Inversion attacks: one file per method, registered by name in :data:`ATTACKS`."""

from strategies.attacks.base import (ATTACKS, THREAT_MODELS, Attack, BlackBoxQuery,
                                     QueryFree, QueryOracle, WhiteBox, grants)

__all__ = ["ATTACKS", "THREAT_MODELS", "Attack", "BlackBoxQuery", "QueryFree",
           "QueryOracle", "WhiteBox", "grants"]
