"""Prediction stores: labels and probabilities at the predicted level, written chunk by chunk, resumable."""

from __future__ import annotations

import os
from concurrent.futures import Executor, ThreadPoolExecutor
from typing import Any

import numpy as np
import zarr

from ...classes import class_colours
from ...errors import CancersegError, ReadError, WriteError
from ..windows import WindowArray
from .attributes import StoreAttributes, describe_os_error, read_attributes, write_attributes
from .chunks import ChunkFiles, StridedLevel, strided_pyramid
from .ngff import LABEL_CHUNK, PYRAMID_TOP, chunk_files, create_array, layer_name, set_label_metadata
from .output import StoreLock, building, check_output, is_creation_leftover, remove_partials

#: Threads writing a pyramid level's chunks (ChunkFiles.write_rows says why in parallel)
PYRAMID_WRITERS = 4

STORE_FORMAT = "napari-cancerseg prediction"
_IDENTITY = ("format", "slide", "model", "grid", "level")


class PredictionStore:
    """The zarr store of one prediction: labels and probabilities at the predicted level.

    A chunk is done when its probabilities chunk file exists (``predicted_chunks``):
    files are replaced atomically and written after the labels, and a written
    chunk of probabilities is never all zero (the fill value), so zarr never
    drops it either.  Two files per chunk: creating files is what writing cost most
    (the earlier layout, one file per class and a done flag per chunk, made four).

    The store records which chunks the run set out to predict (``expected``, the
    tissue chunks) and the share of chunks skipped as glass, so a reader can tell
    a chunk not yet predicted from background (``missing_chunks``).  A new store is
    built under a temporary name and renamed into place, so a kill never leaves a
    store without its identity; the run holds a lock on the store until ``close``.
    """

    def __init__(self, path: str, shape: tuple[int, int], chunk: int, n_classes: int, properties: dict[str, Any],
                 scale, units, expected: np.ndarray | None = None, overwrite: bool = False):
        """``shape``: the predicted level's (height, width); ``chunk``: the side of a chunk (the tile grid's stride).

        ``expected``: bool over the chunk grid, the chunks this run will predict.  An existing store of the same
        prediction is resumed; ``overwrite=True`` replaces it (only ever a store of ours) with a new one.
        """
        self.path, self.shape, self.chunk = path, (int(shape[0]), int(shape[1])), int(chunk)
        self.colors = class_colours(properties["classes"])
        self.scale, self.units = scale, units
        grid = tuple(-(-s // self.chunk) for s in self.shape)
        expected = np.ones(grid, bool) if expected is None else np.asarray(expected, bool)
        if expected.shape != grid:
            raise ValueError(f"expected chunks {expected.shape} for a chunk grid of {grid}")
        check_output(path, overwrite, "prediction store")  # a user's folder is refused before anything is written
        self.lock = StoreLock(path).acquire()
        try:  # checked again under the lock: another run may have created the store meanwhile
            exists = check_output(path, overwrite, "prediction store")
            if exists and not overwrite and not is_creation_leftover(path):
                self._resume(properties, expected)
            else:
                self._create(n_classes, properties, expected, overwrite)
        except BaseException:
            self.lock.release()
            raise
        self.labels: zarr.Array = self.root["labels/0"]  # type: ignore[assignment]  # arrays: this module made them
        self.probabilities: zarr.Array = self.root["probabilities"]  # type: ignore[assignment]

    def _create(self, n_classes: int, properties: dict[str, Any], expected: np.ndarray, overwrite: bool) -> None:
        stride, (height, width) = self.chunk, self.shape
        with building(self.path, overwrite=True, what="prediction store") as temporary:
            try:
                root = zarr.open_group(temporary, mode="w", zarr_format=2)
                create_array(root, "labels/0", (height, width), (stride, stride), np.uint8)
                create_array(root, "probabilities", (n_classes, height, width), (n_classes, stride, stride), np.uint8)
            except OSError as err:
                raise WriteError(self.path, f"cannot create the store: {describe_os_error(err)}") from None
            set_label_metadata(root, [(height, width)], ["labels/0"], self.scale, self.units, "prediction",
                               colors=self.colors, kind="prediction",
                               properties={**properties, "complete": False, **_expected_properties(expected)})
        self.root, self.created = zarr.open_group(self.path, mode="r+"), True

    def _resume(self, properties: dict[str, Any], expected: np.ndarray) -> None:
        root = zarr.open_group(self.path, mode="r+")
        if "done" in root:
            raise CancersegError(
                f"{self.path}: this store was made by an earlier napari-cancerseg (one file per class and a done "
                "flag per chunk) and cannot be resumed; it still opens in napari. Predict into a new --out")
        attributes = read_attributes(self.path)
        existing = attributes.properties
        identity = {k: properties[k] for k in _IDENTITY}
        mismatch = [k for k in identity if existing.get(k) != identity[k]]
        if mismatch:
            raise CancersegError(
                f"{self.path}: this store holds another prediction ({', '.join(mismatch)} differ: "
                f"{ {k: existing.get(k) for k in mismatch} }); choose another --out, or pass overwrite=True "
                "(--overwrite) to replace it")
        remove_partials(self.path)  # chunks a killed run (or a full disk) left half written
        # chunks predicted at several thresholds: the store now covers every chunk above the lowest
        threshold = min(attributes.tissue_threshold if attributes.tissue_threshold is not None else 1.0,
                        properties["tissue_threshold"])
        if attributes.expected_chunks is not None:
            expected = expected | attributes.expected_chunks
        elif attributes.complete:  # an earlier version's finished store: what it holds is what it predicted
            expected = expected | predicted_chunks(root)
        attributes = attributes.with_properties(tissue_threshold=threshold, **_typed_expected(expected))
        write_attributes(self.path, attributes)
        self.root, self.created = root, False

    @property
    def attributes(self) -> StoreAttributes:
        return read_attributes(self.path)

    @property
    def complete(self) -> bool:
        return bool(self.attributes.complete)

    def done_mask(self) -> np.ndarray:
        if self.created:  # nothing done yet
            return np.zeros(tuple(-(-s // self.chunk) for s in self.shape), bool)
        return predicted_chunks(self.root)

    def finish(self, band_bytes: int = 32 << 20) -> None:
        """Build the label pyramid from level 0 (stride 2), a band of rows at a time, and mark the store complete.

        Chunks are read and written as files (``ChunkFiles``): through
        zarr's API the pyramid of a 32k slide took 3 s, as long as predicting it on a GPU.
        """
        with ThreadPoolExecutor(PYRAMID_WRITERS, thread_name_prefix="cancerseg-pyramid") as pool:
            shapes, paths = self._build_pyramid(band_bytes, pool)
        properties = {**read_attributes(self.path).properties, "complete": True}
        set_label_metadata(self.root, shapes, paths, self.scale, self.units, "prediction",
                           colors=self.colors, properties=properties, kind="prediction")

    def _build_pyramid(self, band_bytes: int, pool: Executor) -> tuple[list[tuple[int, ...]], list[str]]:
        previous, shapes, paths = ChunkFiles(self.labels), [self.labels.shape], ["labels/0"]
        while max(previous.shape) > PYRAMID_TOP:
            shape = ((previous.shape[0] + 1) // 2, (previous.shape[1] + 1) // 2)
            chunks = tuple(min(LABEL_CHUNK, s) for s in shape)
            # a rerun rebuilds the levels: level 0 may have changed (resumed chunks, accepted corrections)
            try:
                array = create_array(self.root, f"labels/{len(paths)}", shape, chunks, np.uint8, overwrite=True)
            except OSError as err:
                raise WriteError(self.path, f"cannot write the pyramid: {describe_os_error(err)}") from None
            level = ChunkFiles(array)
            # memory: about band_bytes of the level below, whatever the slide's size; whole chunk rows written
            band = max(1, band_bytes // (2 * previous.shape[1] * chunks[0])) * chunks[0]
            for y in range(0, shape[0], band):
                level.write_rows(y, previous.read_rows(2 * y, 2 * (y + band))[::2, ::2], pool)
            shapes.append(shape)
            paths.append(f"labels/{len(paths)}")
            previous = level
        return shapes, paths

    def close(self) -> None:
        """Let another run have the store."""
        self.lock.release()


def _expected_properties(expected: np.ndarray) -> dict[str, Any]:
    from .attributes import _pack

    return {"expected_chunks": _pack(expected), "glass_fraction": _glass(expected)}


def _typed_expected(expected: np.ndarray) -> dict[str, Any]:
    return {"expected_chunks": np.asarray(expected, bool), "glass_fraction": _glass(expected)}


def _glass(expected: np.ndarray) -> float:
    return float(1.0 - expected.mean()) if expected.size else 0.0


def predicted_chunks(root: zarr.Group) -> np.ndarray:
    """(rows, cols) bool over a prediction store's chunk grid: True where the chunk was predicted (or corrected)."""
    if "done" in root:  # the earlier layout kept a flag per chunk
        return np.asarray(root["done"][:]).astype(bool)  # type: ignore[index]
    return ChunkFiles(root["probabilities"]).written()[0]  # type: ignore[arg-type]


def missing_chunks(path: str, attributes: StoreAttributes | None = None) -> tuple[int, int] | None:
    """(missing, expected) chunks of an incomplete prediction store; None when nothing is missing.

    Missing = expected (recorded at creation: the tissue chunks) and not written.  A
    prediction of an earlier version that records no expected chunks is incomplete
    exactly when its run did not finish; then how many are missing is unknown: (0, 0).
    """
    attributes = attributes or read_attributes(path)
    if not attributes.is_prediction:
        return None
    if attributes.expected_chunks is None:
        return None if attributes.complete else (0, 0)
    try:
        written = ChunkFiles(zarr.open_array(os.path.join(path, "probabilities"), mode="r")).written()[0]
    except (OSError, ValueError, KeyError, WriteError) as err:
        raise ReadError(path, f"its probabilities cannot be opened ({err})") from None
    if written.shape != attributes.expected_chunks.shape:
        raise ReadError(path, f"its probabilities cover {written.shape} chunks, its expected list "
                              f"{attributes.expected_chunks.shape}")
    missing = int((attributes.expected_chunks & ~written).sum())
    return (missing, int(attributes.expected_chunks.sum())) if missing else None


def chunk_writers(path: str) -> tuple[ChunkFiles, ChunkFiles]:
    """A prediction store's labels and probabilities as chunk files (what the engine's tasks write)."""
    root = zarr.open_group(path, mode="r+")
    return ChunkFiles(root["labels/0"]), ChunkFiles(root["probabilities"])  # type: ignore[arg-type]


def live_levels(path: str, token: Any = None) -> list[StridedLevel]:
    """A pyramid over a prediction's level 0 as written so far: plain array-likes napari slices (no dask).

    Nearest-neighbour levels (stride 2**k) down to ngff.PYRAMID_TOP, sharing one cache of the chunks
    already written.  ``token``: a cache from an earlier call (``live_levels(path, old[0].cache)``) keeps
    those chunks for the next refresh; anything else starts empty.
    """
    return strided_pyramid(chunk_files(path, "labels/0"), PYRAMID_TOP, token if isinstance(token, dict) else None)


def class_probabilities(path: str) -> list[tuple[int, str, list]]:
    """(label, class name, pyramid of 0..1 float32 probabilities) of each class of a prediction but background.

    The levels are plain array-likes (``ProbabilityPlane`` over ``StridedLevel``), read chunk by chunk when
    napari shows them: a dask pyramid ran a dask compute on the GUI thread when a heat map was added.
    """
    attributes = read_attributes(path)
    files = chunk_files(path, "probabilities")
    strided = strided_pyramid(files, PYRAMID_TOP)
    names = {int(c["label"]): str(c["name"]) for c in attributes.classes or []}
    return [(label, names.get(label, f"class {label}"), [ProbabilityPlane(level, label) for level in strided])
            for label in range(1, files.shape[0])]


class ProbabilityPlane(WindowArray):
    """One class's plane of a (classes, height, width) uint8 level, as float32 probabilities 0..1."""

    dtype = np.dtype(np.float32)

    def __init__(self, level: StridedLevel, label: int):
        self.level, self.label = level, label
        self.shape = tuple(level.shape[1:])

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        return self.level[(self.label,) + key].astype(np.float32) * np.float32(1 / 255)


#: The colour of chunks skipped as glass: a neutral grey, never one of the class colours.
GLASS_RGBA = (128, 128, 128, 255)


def glass_layer(path: str) -> tuple[np.ndarray, dict[str, Any], str] | None:
    """The chunks a prediction skipped as glass, as a labels layer over the slide (1 = not predicted), so a
    pathologist sees what the model never looked at.  None for stores that did not record it (earlier versions)."""
    attributes = read_attributes(path)
    if attributes.expected_chunks is None:
        return None
    level0 = attributes.levels[0]
    chunk_y, chunk_x = level0.chunks[-2:]
    scale_y, scale_x = attributes.scale[-2:]
    skipped = (~np.asarray(attributes.expected_chunks, bool)).astype(np.uint8)
    # one pixel per chunk: its centre lies (chunk - 1) / 2 store pixels after the chunk's first pixel's centre
    translate = tuple(t + (c - 1) * s / 2 for t, c, s in zip(attributes.translate[-2:], (chunk_y, chunk_x),
                                                             (scale_y, scale_x)))
    # named by slide and model as the prediction it belongs to ("CMU-1 · nuclei-unet 1.0.0 glass ..."): two slides'
    # glass layers, or two models' on one slide, are told apart in the layer list
    kwargs = {"name": f"{layer_name(attributes, path)} glass (not predicted)",
              "scale": (scale_y * chunk_y, scale_x * chunk_x), "translate": translate, "units": attributes.units[-2:],
              "opacity": 0.35, "colormap": {None: np.zeros(4), 0: np.zeros(4), 1: np.asarray(GLASS_RGBA) / 255.0},
              "features": {"index": [0, 1], "class": ["predicted", "glass: not predicted"]},
              "metadata": {"format": "glass chunks", "path": path, "glass_fraction": attributes.glass_fraction}}
    return skipped, kwargs, "labels"
