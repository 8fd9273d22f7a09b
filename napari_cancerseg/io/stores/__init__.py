"""THE prediction/label store: the only code that knows a store's layout (DESIGN.md: stores are the contract).

A store is an OME-Zarr (NGFF 0.4, zarr format 2) multiscale label image:

* ``attributes``: what a store says about itself, as one typed dataclass, validated when it is opened;
* ``output``: where stores are made: never over a user's files, atomically, one run at a time;
* ``ngff``: multiscales and image-label metadata, writing label pyramids, reading them lazily;
* ``chunks``: whole zarr chunks read and written as files (the engine's hot path);
* ``prediction``: a prediction store (labels + probabilities at one slide level), resumable chunk by chunk,
  with the chunks it is expected to hold (``missing_chunks``);
* ``labels``: any label store opened for correction (regions, corrections);
* ``identity``: which slide a store belongs to, checked before its slide path is used;
* ``drafts``: autosaved, not yet accepted edits, beside the store;
* ``datasets``: patch datasets (images and masks for training), made the same careful way.
"""

from .attributes import Level, StoreAttributes, read_attributes, write_attributes
from .chunks import ChunkFiles
from .datasets import PatchDataset, read_dataset_attributes
from .identity import slide_identity
from .labels import Correction, LabelStore, Region
from .ngff import (
    LABEL_CHUNK,
    NGFF_VERSION,
    PYRAMID_TOP,
    claims,
    create_array,
    label_pyramid,
    lazy_level,
    lazy_levels,
    level0_geometry,
    open_store,
    read,
    set_label_metadata,
    viewer_levels,
    write_labels,
)
from .output import StoreLock, building, check_output, is_ours
from .prediction import (
    STORE_FORMAT,
    PredictionStore,
    chunk_writers,
    class_probabilities,
    glass_layer,
    live_levels,
    missing_chunks,
    predicted_chunks,
)

__all__ = [
    "glass_layer",
    "LABEL_CHUNK", "NGFF_VERSION", "PYRAMID_TOP", "STORE_FORMAT", "ChunkFiles", "Correction", "LabelStore", "Level",
    "PatchDataset", "PredictionStore", "Region", "StoreAttributes", "StoreLock", "building", "check_output",
    "chunk_writers", "claims", "class_probabilities", "create_array", "is_ours", "label_pyramid", "lazy_level",
    "lazy_levels", "level0_geometry", "live_levels", "missing_chunks", "open_store", "predicted_chunks", "read",
    "read_attributes", "read_dataset_attributes", "set_label_metadata", "slide_identity", "viewer_levels",
    "write_attributes", "write_labels",
]
