"""Federation strategies: how the cloud combines model copies."""

from strategies.federation.fedavg import weighted_average

__all__ = ["weighted_average"]
