"""Dataset plug-ins: one module per dataset, registered by name in ``DATASETS``."""

__all__: list[str] = []
