"""No defense: the unprotected reference point."""

from strategies.defenses.base import DEFENSES, Defense


@DEFENSES.register("none")
class NoDefense(Defense):
    """Transmit the encoder's feature as is, trained with plain cross-entropy."""
