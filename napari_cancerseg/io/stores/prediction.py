"""Prediction stores: labels and probabilities at the predicted level, written chunk by chunk, resumable."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import zarr

from ...classes import class_colours
from ...errors import CancersegError
from .chunks import ChunkFiles
from .ngff import LABEL_CHUNK, PYRAMID_TOP, create_array, set_label_metadata

STORE_FORMAT = "napari-cancerseg prediction"


class PredictionStore:
    """The zarr store of one prediction: labels and probabilities at the predicted level.

    A chunk is done when its probabilities chunk file exists (``predicted_chunks``):
    files are replaced atomically and written after the labels, and a written
    chunk of probabilities is never all zero (the fill value), so zarr never
    drops it either.  Two files per chunk: creating files is what writing cost most
    (the earlier layout, one file per class and a done flag per chunk, made four).
    """

    def __init__(self, path: str, shape: tuple[int, int], chunk: int, n_classes: int, properties: dict[str, Any],
                 scale, units):
        """``shape``: the predicted level's (height, width); ``chunk``: the side of a chunk (the tile grid's stride)."""
        self.path, self.shape, self.chunk = path, (int(shape[0]), int(shape[1])), int(chunk)
        self.colors = class_colours(properties["classes"])
        identity = {k: properties[k] for k in ("format", "slide", "model", "grid", "level")}
        if os.path.exists(os.path.join(path, ".zattrs")):
            root = zarr.open_group(path, mode="r+")
            if "done" in root:
                raise CancersegError(
                    f"{path}: this store was made by an earlier napari-cancerseg (one file per class and a done "
                    "flag per chunk) and cannot be resumed; it still opens in napari. Predict into a new --out")
            existing = dict(root.attrs.get("cancerseg", {}))
            mismatch = [k for k in identity if existing.get(k) != identity[k]]
            if mismatch:
                raise CancersegError(
                    f"{path}: this store holds another prediction ({', '.join(mismatch)} differ: "
                    f"{ {k: existing.get(k) for k in mismatch} }); choose another --out or delete it")
            # chunks predicted at several thresholds: the store now covers every chunk above the lowest
            threshold = min(existing.get("tissue_threshold", 1.0), properties["tissue_threshold"])
            root.attrs["cancerseg"] = {**existing, "tissue_threshold": threshold}
            self.root, self.created = root, False
        else:
            root = zarr.open_group(path, mode="w", zarr_format=2)
            stride, (height, width) = self.chunk, self.shape
            create_array(root, "labels/0", (height, width), (stride, stride), np.uint8)
            create_array(root, "probabilities", (n_classes, height, width),
                                (n_classes, stride, stride), np.uint8)
            set_label_metadata(root, [(height, width)], ["labels/0"], scale, units, "prediction",
                                      colors=self.colors, properties={**properties, "complete": False})
            self.root, self.created = root, True
        self.labels, self.probabilities = self.root["labels/0"], self.root["probabilities"]
        self.scale, self.units = scale, units

    @property
    def complete(self) -> bool:
        return bool(self.root.attrs.get("cancerseg", {}).get("complete"))

    def done_mask(self) -> np.ndarray:
        if self.created:  # nothing done yet
            return np.zeros(tuple(-(-s // self.chunk) for s in self.shape), bool)
        return predicted_chunks(self.root)

    def finish(self, band_bytes: int = 32 << 20) -> None:
        """Build the label pyramid from level 0 (stride 2), a band of rows at a time, and mark the store complete.

        Chunks are read and written as files (``ChunkFiles``): through
        zarr's API the pyramid of a 32k slide took 3 s, as long as predicting it on a GPU.
        """
        previous, shapes, paths = ChunkFiles(self.labels), [self.labels.shape], ["labels/0"]
        while max(previous.shape) > PYRAMID_TOP:
            shape = ((previous.shape[0] + 1) // 2, (previous.shape[1] + 1) // 2)
            chunks = tuple(min(LABEL_CHUNK, s) for s in shape)
            # a rerun rebuilds the levels: level 0 may have changed (resumed chunks, accepted corrections)
            level = ChunkFiles(create_array(self.root, f"labels/{len(paths)}", shape, chunks, np.uint8,
                                                          overwrite=True))
            # memory: about band_bytes of the level below, whatever the slide's size; whole chunk rows written
            band = max(1, band_bytes // (2 * previous.shape[1] * chunks[0])) * chunks[0]
            for y in range(0, shape[0], band):
                level.write_rows(y, previous.read_rows(2 * y, 2 * (y + band))[::2, ::2])
            shapes.append(shape)
            paths.append(f"labels/{len(paths)}")
            previous = level
        properties = {**dict(self.root.attrs["cancerseg"]), "complete": True}
        set_label_metadata(self.root, shapes, paths, self.scale, self.units, "prediction",
                                  colors=self.colors, properties=properties)


def predicted_chunks(root: zarr.Group) -> np.ndarray:
    """(rows, cols) bool over a prediction store's chunk grid: True where the chunk was predicted (or corrected)."""
    if "done" in root:  # the earlier layout kept a flag per chunk
        return np.asarray(root["done"][:]).astype(bool)
    return ChunkFiles(root["probabilities"]).written()[0]
