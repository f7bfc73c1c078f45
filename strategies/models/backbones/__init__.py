"""Backbones: one file per network, registered by name in
:data:`strategies.models.backbone.BACKBONES`."""
