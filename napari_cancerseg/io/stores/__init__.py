"""THE prediction/label store: the only code that knows a store's layout (DESIGN.md: stores are the contract).

A store is an OME-Zarr (NGFF 0.4, zarr format 2) multiscale label image:

* ``ngff``: multiscales and image-label metadata, writing label pyramids, reading them lazily;
* ``chunks``: whole zarr chunks read and written as files (the engine's hot path);
* ``prediction``: a prediction store (labels + probabilities at one slide level), resumable chunk by chunk;
* ``labels``: any label store opened for correction (regions, corrections);
* ``drafts``: autosaved, not yet accepted edits, beside the store.
"""

from .chunks import ChunkFiles
from .labels import Correction, LabelStore, Region
from .ngff import (
    LABEL_CHUNK,
    NGFF_VERSION,
    PYRAMID_TOP,
    claims,
    create_array,
    label_pyramid,
    level0_geometry,
    open_store,
    read,
    set_label_metadata,
    write_labels,
)
from .prediction import STORE_FORMAT, PredictionStore, predicted_chunks

__all__ = [
    "LABEL_CHUNK", "NGFF_VERSION", "PYRAMID_TOP", "STORE_FORMAT", "ChunkFiles", "Correction", "LabelStore",
    "PredictionStore", "Region", "claims", "create_array", "label_pyramid", "level0_geometry", "open_store",
    "predicted_chunks", "read", "set_label_metadata", "write_labels",
]
