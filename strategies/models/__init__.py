"""Models: backbones split at a cut, edge encoders, the shared cloud, edge costs."""

from strategies.models._shapes import feature_shape
from strategies.models.assemble import build_edge
from strategies.models.backbone import BACKBONES, Backbone
from strategies.models.bn_debias import debias_batchnorm
from strategies.models.blocks import CBAM, SE, Normalize, TripletAttention, Up
from strategies.models.cloud import CloudModel, TierView, build_cloud
from strategies.models.costs import EdgeCost, edge_cost
from strategies.models.encoder import ENCODERS, Encoder

__all__ = ["debias_batchnorm", "BACKBONES", "ENCODERS", "Backbone", "Encoder", "CloudModel",
           "TierView",
           "EdgeCost", "edge_cost", "build_edge", "build_cloud", "feature_shape",
           "SE", "TripletAttention", "CBAM", "Up", "Normalize"]
