"""Encoders: one file per edge architecture, registered by name in
:data:`strategies.models.encoder.ENCODERS`."""
