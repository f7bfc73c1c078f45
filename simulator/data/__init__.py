"""Datasets, splits and device partitions.

``DATASETS.create(name, params).load("train")`` gives an :class:`ImageData`;
:func:`make_splits` carves private / auxiliary / evaluation sets out of a dataset and
:func:`partition` spreads the private set over the devices of a fleet.
"""

from simulator.data.base import (
    DATASETS,
    Dataset,
    DatasetNotFoundError,
    DatasetParams,
    ImageData,
    Split,
    default_root,
    resize_images,
    to_image_data,
)
from simulator.data.partition import Scheme, partition
from simulator.data.splits import Splits, make_splits, stratified_order

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetNotFoundError",
    "DatasetParams",
    "ImageData",
    "Scheme",
    "Split",
    "Splits",
    "default_root",
    "make_splits",
    "partition",
    "resize_images",
    "stratified_order",
    "to_image_data",
]
