"""Tiled whole-slide prediction, streamed chunk by chunk into a resumable OME-Zarr store.

Reader threads decode tiles ahead (OpenSlide releases the GIL), the model
predicts them in batches, and each tile's probabilities, weighted by the blend
window, are added to the output chunks it overlaps.  A chunk is normalised by
its summed weight, written (probabilities as uint8 and argmax labels) and
marked done as soon as the 3 x 3 tiles around it are in, so memory stays at
about two rows of chunks whatever the slide size.  A rerun on the same store
skips done chunks and predicts only the tiles that unfinished chunks need.

This module imports Keras (through the bundle) only when it loads a model: the
napari process runs it in a separate, spawned process (``worker.py``).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import zarr

from ..errors import CancersegError
from ..grading.classes import class_colours
from ..io import stores
from ..io.wsi import SlideHandle, open_slide
from ..models.bundle import BundleInfo, bundle_info
from ..preprocess.tissue import slide_tissue_mask
from .tiling import TileGrid, tissue_fractions

STORE_FORMAT = "napari-cancerseg prediction"


@dataclass
class Progress:
    tiles_done: int
    tiles_total: int
    chunks_done: int
    chunks_total: int
    seconds: float

    @property
    def tiles_per_second(self) -> float:
        return self.tiles_done / self.seconds if self.seconds > 0 else 0.0

    @property
    def seconds_left(self) -> float | None:
        rate = self.tiles_per_second
        return (self.tiles_total - self.tiles_done) / rate if rate > 0 else None


@dataclass
class Summary:
    store: str
    tiles: int
    seconds: float
    chunks_written: int
    chunks_skipped_glass: int
    chunks_resumed: int
    cancelled: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def tiles_per_second(self) -> float:
        return self.tiles / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        state = "cancelled" if self.cancelled else "done"
        return (f"{state}: {self.tiles} tiles in {self.seconds:.1f} s ({self.tiles_per_second:.1f} tiles/s); "
                f"{self.chunks_written} chunks written, {self.chunks_skipped_glass} glass, "
                f"{self.chunks_resumed} already done -> {self.store}")


def slide_identity(path: str) -> dict[str, Any]:
    """What makes a store belong to one slide: OpenSlide's quickhash when there is one, else size + name."""
    handle = SlideHandle.shared(path)
    props = handle.slide.properties
    return {"name": os.path.basename(path), "dimensions": list(handle.slide.dimensions),
            "quickhash": props.get("openslide.quickhash-1") or f"size:{os.path.getsize(path)}"}


def model_identity(bundle_path: str, info: BundleInfo) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(bundle_path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"name": info.name, "version": info.version, "sha256": digest.hexdigest()[:16]}


def choose_level(levels_mpp: list[float | None], target_mpp: float | None, level: int | None) -> int:
    if level is not None:
        if not 0 <= level < len(levels_mpp):
            raise CancersegError(f"level {level} does not exist (the slide has {len(levels_mpp)})")
        return level
    if target_mpp is None or levels_mpp[0] is None:
        return 0
    return int(np.argmin([abs(np.log(m / target_mpp)) for m in levels_mpp]))


class PredictionStore:
    """The zarr store of one prediction: labels and probabilities at the predicted level, and done flags."""

    def __init__(self, path: str, grid: TileGrid, n_classes: int, properties: dict[str, Any], scale, units):
        self.path, self.grid = path, grid
        self.colors = class_colours(properties["classes"])
        identity = {k: properties[k] for k in ("format", "slide", "model", "grid", "level")}
        if os.path.exists(os.path.join(path, ".zattrs")):
            root = zarr.open_group(path, mode="r+")
            existing = dict(root.attrs.get("cancerseg", {}))
            mismatch = [k for k in identity if existing.get(k) != identity[k]]
            if mismatch:
                raise CancersegError(
                    f"{path}: this store holds another prediction ({', '.join(mismatch)} differ: "
                    f"{ {k: existing.get(k) for k in mismatch} }); choose another --out or delete it")
            self.root = root
        else:
            root = zarr.open_group(path, mode="w", zarr_format=2)
            stride = grid.stride
            stores.create_array(root, "labels/0", (grid.height, grid.width), (stride, stride), np.uint8)
            stores.create_array(root, "probabilities", (n_classes, grid.height, grid.width), (1, stride, stride), np.uint8)
            stores.create_array(root, "done", (grid.rows, grid.cols), (1, 1), np.uint8)
            stores.set_label_metadata(root, [(grid.height, grid.width)], ["labels/0"], scale, units, "prediction",
                                      colors=self.colors, properties={**properties, "complete": False})
            self.root = root
        self.labels, self.probabilities, self.done = self.root["labels/0"], self.root["probabilities"], self.root["done"]
        self.scale, self.units = scale, units

    def done_mask(self) -> np.ndarray:
        return np.asarray(self.done[:]).astype(bool)

    def write_chunk(self, row: int, col: int, probabilities: np.ndarray, labels: np.ndarray) -> None:
        y0, y1, x0, x1 = self.grid.chunk_box(row, col)
        self.probabilities[:, y0:y1, x0:x1] = np.clip(np.rint(probabilities * 255), 0, 255).astype(np.uint8)
        self.labels[y0:y1, x0:x1] = labels
        self.done[row, col] = 1  # after the data: a chunk marked done is always complete

    def finish(self, band: int = 2048) -> None:
        """Build the label pyramid from level 0 (stride 2), a band of rows at a time, and mark the store complete."""
        previous, shapes, paths = self.labels, [self.labels.shape], ["labels/0"]
        while max(previous.shape) > stores.PYRAMID_TOP:
            shape = ((previous.shape[0] + 1) // 2, (previous.shape[1] + 1) // 2)
            chunks = tuple(min(stores.LABEL_CHUNK, s) for s in shape)
            level = stores.create_array(self.root, f"labels/{len(paths)}", shape, chunks, np.uint8)
            for y in range(0, shape[0], band):  # memory: one band of the level above, whatever the slide size
                level[y:y + band] = previous[2 * y:2 * (y + band):2, ::2]
            shapes.append(shape)
            paths.append(f"labels/{len(paths)}")
            previous = level
        properties = {**dict(self.root.attrs["cancerseg"]), "complete": True}
        stores.set_label_metadata(self.root, shapes, paths, self.scale, self.units, "prediction",
                                  colors=self.colors, properties=properties)


def prefetch(pool: ThreadPoolExecutor, function, items, ahead: int):
    """``map(function, items)`` in order, at most ``ahead`` results decoded and waiting (bounded memory)."""
    from collections import deque

    queue: deque = deque()
    iterator = iter(items)
    try:
        for item in iterator:
            queue.append(pool.submit(function, item))
            if len(queue) >= ahead:
                yield queue.popleft().result()
        while queue:
            yield queue.popleft().result()
    finally:  # cancelled: drop what was read ahead, start nothing more
        for future in queue:
            future.cancel()


def predict_slide(
    slide: str,
    bundle: str,
    out: str,
    level: int | None = None,
    mpp: float | None = None,
    tile: int | None = None,
    overlap: int | None = None,
    batch: int = 16,
    tissue: float = 0.1,
    readers: int = 4,
    model=None,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    stop_after_chunks: int | None = None,
) -> Summary:
    """Predict ``slide`` with the bundle into the store ``out`` (resuming it if it exists)."""
    start = time.perf_counter()
    info = bundle_info(bundle)
    recipe = info.recipe
    tile, overlap = tile or recipe.tile_size, overlap if overlap is not None else recipe.overlap
    slide_info = open_slide(slide)
    handle = SlideHandle.shared(slide)
    base_mpp = slide_info.mpp[0] if slide_info.mpp else None
    levels_mpp = [base_mpp * d if base_mpp else None for d in slide_info.metadata["level_downsamples"]]
    n_openslide = handle.slide.level_count
    chosen = choose_level(levels_mpp[:n_openslide], mpp if mpp is not None else recipe.mpp, level)
    downsample = handle.slide.level_downsamples[chosen]
    width, height = handle.slide.level_dimensions[chosen]
    grid = TileGrid(height, width, tile, overlap)
    notes = []
    target = mpp if mpp is not None else recipe.mpp
    if target and levels_mpp[chosen] and abs(levels_mpp[chosen] / target - 1) > 0.1:
        notes.append(f"predicting level {chosen} at {levels_mpp[chosen]:.3f} µm/px; the model expects {target} µm/px")

    mask, mask_downsample = slide_tissue_mask(slide)
    fractions = tissue_fractions(grid, mask, mask_downsample, downsample)
    active = fractions >= tissue
    n_classes = max(2, len(info.classes))
    properties = {"format": STORE_FORMAT, "slide": slide_identity(slide), "model": model_identity(bundle, info),
                  "grid": grid.to_dict(), "level": int(chosen), "downsample": float(downsample),
                  "mpp": levels_mpp[chosen], "tissue_threshold": tissue, "classes": info.classes,
                  "slide_path": os.path.abspath(slide)}
    scale = (levels_mpp[chosen],) * 2 if levels_mpp[chosen] else (float(downsample),) * 2
    units = ("um", "um") if levels_mpp[chosen] else ("pixel", "pixel")
    store = PredictionStore(out, grid, n_classes, properties, scale, units)
    done = store.done_mask()
    resumed = int((done & active).sum())

    # one writer thread keeps each chunk's data-then-done-flag order; the model thread never waits on zarr
    writer = ThreadPoolExecutor(max_workers=1)
    pending_writes: list = []

    def write(chunk, blended):
        pending_writes.append(writer.submit(store.write_chunk, *chunk, blended,
                                            np.argmax(blended, axis=0).astype(np.uint8)))
        while len(pending_writes) > 64:
            pending_writes.pop(0).result()  # bounded memory; re-raises a failed write

    # glass chunks are final at once: background, no prediction needed
    for row, col in zip(*np.nonzero(~active & ~done)):
        y0, y1, x0, x1 = grid.chunk_box(row, col)
        background = np.zeros((n_classes, y1 - y0, x1 - x0), np.float32)
        background[0] = 1.0
        write((row, col), background)
    pending = active & ~done
    # every tile around a pending chunk is needed, glass tiles included: that is what makes borders seamless
    needed = np.zeros_like(pending)
    for row, col in zip(*np.nonzero(pending)):
        needed[max(0, row - 1):row + 2, max(0, col - 1):col + 2] = True
    tiles = [(r, c) for r, c in zip(*np.nonzero(needed))]
    remaining = {(r, c): sum(needed[t] for t in grid.tiles_of_chunk(r, c)) for r, c in zip(*np.nonzero(pending))}
    accumulators: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    if model is None and tiles:
        from ..models.bundle import load_bundle

        model = load_bundle(bundle)
    weights = grid.weights.astype(np.float32)
    chunks_written, tiles_done = 0, 0

    def read(tile_rc):
        y, x = grid.tile_origin(*tile_rc)
        return tile_rc, handle.read(chosen, x, y, grid.tile, grid.tile)

    def add(tile_rc, probabilities):
        nonlocal chunks_written
        ty, tx = grid.tile_origin(*tile_rc)
        weighted = probabilities.transpose(2, 0, 1) * weights
        for chunk in grid.tiles_of_chunk(*tile_rc):  # the chunks around a tile are the tiles around a chunk
            if chunk not in remaining:
                continue
            y0, y1, x0, x1 = grid.chunk_box(*chunk)
            if chunk not in accumulators:
                accumulators[chunk] = (np.zeros((n_classes, y1 - y0, x1 - x0), np.float32),
                                       np.zeros((y1 - y0, x1 - x0), np.float32))
            total, weight = accumulators[chunk]
            sy0, sy1, sx0, sx1 = max(y0, ty), min(y1, ty + grid.tile), max(x0, tx), min(x1, tx + grid.tile)
            if sy0 < sy1 and sx0 < sx1:  # without overlap, diagonal neighbours do not touch the chunk
                total[:, sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] += weighted[:, sy0 - ty:sy1 - ty, sx0 - tx:sx1 - tx]
                weight[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] += weights[sy0 - ty:sy1 - ty, sx0 - tx:sx1 - tx]
            remaining[chunk] -= 1
            if remaining[chunk] == 0:
                total, weight = accumulators.pop(chunk)
                write(chunk, total / weight)
                del remaining[chunk]
                chunks_written += 1

    cancelled = False
    try:
        with ThreadPoolExecutor(max_workers=max(1, readers)) as pool:
            stream = prefetch(pool, read, tiles, ahead=max(2 * batch, 4 * readers))
            batch_items = []
            for index, item in enumerate(stream, start=1):
                batch_items.append(item)
                if len(batch_items) < batch and index < len(tiles):
                    continue
                probabilities = model.predict_batch(np.stack([t for _, t in batch_items]))
                for (tile_rc, _), p in zip(batch_items, probabilities):
                    add(tile_rc, p[..., :n_classes] if p.shape[-1] >= n_classes else p)
                tiles_done += len(batch_items)
                batch_items = []
                if progress:
                    progress(Progress(tiles_done, len(tiles), chunks_written, len(remaining) + chunks_written,
                                      time.perf_counter() - start))
                if (cancel is not None and cancel.is_set()) or (
                        stop_after_chunks is not None and chunks_written >= stop_after_chunks):
                    cancelled = True
                    break
        for future in pending_writes:  # every chunk counted as written is on disk before we go on
            future.result()
    finally:
        writer.shutdown(wait=True)
    if not cancelled:
        store.finish()
    return Summary(out, tiles_done, time.perf_counter() - start, chunks_written, int((~active).sum()), resumed,
                   cancelled, notes)
