"""Tiled whole-slide prediction, streamed chunk by chunk into a resumable OME-Zarr store.

This module plans a run (level, tile grid, tissue, what a resumed store still
needs) and owns the store; ``graph.py`` holds the dask graph that does the
work.  A chunk is blended from the 3 x 3 tiles around it and written as soon
as those tiles are predicted: its argmax labels, then its uint8 probabilities
(every class in one chunk file).  That last file marks the chunk done, so a
rerun on the same store skips done chunks and predicts only the tiles that
unfinished chunks need.

This module imports Keras (through the bundle) only when it loads a model: the
napari process runs it in a separate, spawned process (``worker.py``).
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import CancersegError
from ..io import stores
from ..io.stores import slide_identity
from ..io.wsi import read_level
from ..models.bundle import BundleInfo, bundle_info, check_segmentation_bundle
from ..preprocess.tissue import slide_tissue_mask
from .graph import (
    Counts,
    RunSpec,
    build_graph,
    cancel_run,
    forget_run,
    register_model,
    run_distributed,
    run_local,
)
from .options import PredictOptions
from .tiling import TileGrid, tissue_fractions


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
    glass_fraction: float = 0.0  # the share of the slide's chunks skipped as glass (the store records it too)

    @property
    def tiles_per_second(self) -> float:
        return self.tiles / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        state = "cancelled" if self.cancelled else "done"
        return (f"{state}: {self.tiles} tiles in {self.seconds:.1f} s ({self.tiles_per_second:.1f} tiles/s); "
                f"{self.chunks_written} chunks written, {self.chunks_skipped_glass} glass "
                f"({self.glass_fraction:.0%} of the slide not predicted), "
                f"{self.chunks_resumed} already done -> {self.store}")


def model_identity(bundle_path: str, info: BundleInfo) -> dict[str, Any]:
    digest = hashlib.sha256()
    with open(bundle_path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return {"name": info.name, "version": info.version, "sha256": digest.hexdigest()[:16]}


def predict_slide(
    slide: str,
    bundle: str,
    out: str,
    options: PredictOptions | None = None,
    *,
    model: Any = None,
    progress: Callable[[Progress], None] | None = None,
    cancel: threading.Event | None = None,
    stop_after_chunks: int | None = None,
    band_rows: int = 64,
    **settings: Any,
) -> Summary:
    """Predict ``slide`` with the bundle into the store ``out`` (resuming it if it exists).

    ``options``: level or µm/px, tile grid, batch, tissue threshold, readers,
    scheduler (``PredictOptions``; None: the defaults).  ``settings``: the same
    by name, as a shorthand (``tissue=0.5``), on top of ``options``.
    ``scheduler``: address of a dask.distributed scheduler to run the graph on
    (slide, bundle and store must then be on storage its workers share);
    by default it runs here on threads.  ``model``: an already loaded model
    (anything with ``predict_batch``), local runs only.  ``out`` must be free or a
    store of this prediction (resumed); ``overwrite`` (an option) replaces a store of
    ours, and nothing else is ever replaced.
    """
    start = time.perf_counter()
    options = (options or PredictOptions()).replace(**settings).validate()
    slide, bundle, out = (os.path.abspath(p) for p in (slide, bundle, out))  # cluster workers see the same paths
    info = bundle_info(bundle)
    recipe = info.recipe
    run = options.resolved(recipe)  # None: the model's tile, overlap and µm/px
    tile, overlap, tissue = run.tile, run.overlap, run.tissue
    assert tile is not None and overlap is not None  # resolved() fills them from the recipe (for the type checker)
    check_segmentation_bundle(info, channels=3, tile=tile)  # slides are read as RGB; refuse misfits before any work
    target = run.mpp if run.mpp is not None else recipe.mpp  # with a level chosen: for the note only
    read = read_level(slide, target, run.level)
    chosen, downsample, level_mpp = read.level, read.downsample, read.mpp
    try:
        grid = TileGrid(read.height, read.width, tile, overlap)
    except ValueError as err:
        raise CancersegError(f"tile {tile} px with overlap {overlap}: {err}") from None
    notes = [note] if (note := read.note(target, "predicting")) else []

    mask, mask_downsample = slide_tissue_mask(slide, max_side=1024)
    fractions = tissue_fractions(grid, mask, mask_downsample, downsample)
    active = fractions >= tissue
    n_classes = max(2, len(info.classes))
    properties = {"format": stores.STORE_FORMAT, "slide": slide_identity(slide), "model": model_identity(bundle, info),
                  "grid": grid.to_dict(), "level": int(chosen), "downsample": float(downsample),
                  "mpp": level_mpp, "tissue_threshold": tissue, "classes": info.classes,
                  "slide_path": slide}
    scale = (level_mpp,) * 2 if level_mpp else (downsample,) * 2
    units = ("um", "um") if level_mpp else ("pixel", "pixel")
    store = stores.PredictionStore(out, (grid.height, grid.width), grid.stride, n_classes, properties, scale, units,
                                   expected=active, overwrite=run.overwrite)
    done = store.done_mask()
    resumed = int((done & active).sum())

    pending = active & ~done
    # every tile around a pending chunk is needed, glass tiles included: that is what makes borders seamless
    needed = np.zeros_like(pending)
    for row, col in zip(*np.nonzero(pending)):
        needed[max(0, row - 1):row + 2, max(0, col - 1):col + 2] = True
    spec = RunSpec.new(slide=slide, level=int(chosen), grid=grid, store=out, bundle=bundle, n_classes=n_classes,
                       options=run)
    graph = build_graph(spec, list(zip(*np.nonzero(needed))), list(zip(*np.nonzero(pending))))
    tiles_total, chunks_total = int(needed.sum()), int(pending.sum())
    stopped = threading.Event()
    last_report = [0.0]

    def on_task(counts: Counts) -> None:
        now = time.perf_counter()
        if progress and (now - last_report[0] > 0.25 or counts.tiles == tiles_total):
            last_report[0] = now
            progress(Progress(counts.tiles, tiles_total, counts.chunks, chunks_total, now - start))
        if not stopped.is_set() and ((cancel is not None and cancel.is_set()) or (
                stop_after_chunks is not None and counts.chunks >= stop_after_chunks)):
            stopped.set()
            cancel_run(spec)

    try:
        if run.scheduler:
            if model is not None:
                raise CancersegError("a loaded model cannot be sent to a cluster: give the bundle path")
            counts = run_distributed(graph, run.scheduler, on_task, stopped.is_set)
        else:
            if graph.predict_keys:
                register_model(spec, model if model is not None else load_model(bundle))
            # threads run predict tasks (waiting on readers and the model) and segment tasks (blending, file writes)
            counts = run_local(graph, on_task, threads=max(4, min(16, os.cpu_count() or 4)), band_rows=band_rows)
    except BaseException:
        store.close()  # another run may have the store now
        raise
    finally:
        forget_run(spec)  # closes this run's readers (reader processes hold memory)
    cancelled = stopped.is_set() or counts.chunks < chunks_total
    try:
        if not cancelled and (chunks_total or not store.complete):
            store.finish()
    finally:
        store.close()
    return Summary(out, counts.tiles, time.perf_counter() - start, counts.chunks, int((~active).sum()), resumed,
                   cancelled, notes, glass_fraction=float((~active).mean()))


def load_model(bundle: str):
    from ..models.bundle import load_bundle

    return load_bundle(bundle)
