"""The prediction as a dask graph: read tiles -> normalise -> batch -> model -> blend -> write.

Two kinds of task, named after the run so that two runs never share keys:

* ``predict``: decodes one batch of tiles (a reader pool of threads or
  processes), lets the model normalise and predict them, and returns uint8
  probabilities (N, C, T, T).  The model is loaded once per process and its
  forward passes are serialised by a lock: one model per process (per GPU).
* ``chunk``: blends the up to 3 x 3 tiles around one output chunk and writes
  its probabilities, argmax labels and done flag to the store.

Chunks without tissue get no task at all: they stay at the store's fill value,
label 0 (background) and probability 0 for every class (not predicted).

The same graph runs on the local threaded scheduler, band by band (reading,
prediction and blending overlap in threads; OpenSlide and the models release
the GIL), or on a dask.distributed cluster (``scheduler=ADDRESS``), whose workers then need the
slide, the bundle and the store on shared storage.  This module imports
Keras only when a task loads a model.
"""

from __future__ import annotations

import multiprocessing
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np
import zarr

from ..io.wsi import SlideHandle
from .tiling import TileGrid

Tile = tuple[int, int]


@dataclass(frozen=True)
class RunSpec:
    """Everything a task needs, small and picklable (it travels to cluster workers)."""

    name: str  # unique per run: the graph's key prefix
    slide: str
    level: int
    grid: TileGrid
    store: str
    bundle: str
    n_classes: int
    readers: int = 4
    reader_processes: bool = False

    @classmethod
    def new(cls, **fields) -> RunSpec:
        return cls(name=f"cancerseg-{uuid.uuid4().hex[:12]}", **fields)


# ---- per-process state: models, reader pools, open stores, cancelled runs -------------------------

_models: dict[str, Any] = {}  # bundle path or run name -> object with predict_batch
_model_lock = threading.Lock()  # one forward pass at a time per process: one model per device
_pools: dict[tuple[bool, int], Executor] = {}
_pools_lock = threading.Lock()
_cancelled: set[str] = set()


def register_model(spec: RunSpec, model) -> None:
    """Use an already loaded model for this run (local scheduler only: it does not travel)."""
    _models[spec.name] = model


def forget_run(spec: RunSpec) -> None:
    _models.pop(spec.name, None)
    _cancelled.discard(spec.name)


def cancel_run(spec: RunSpec) -> None:
    """Tasks of this run that have not started yet return at once and write nothing."""
    _cancelled.add(spec.name)


def _model(spec: RunSpec):
    model = _models.get(spec.name) or _models.get(spec.bundle)
    if model is None:
        with _model_lock:
            if spec.bundle not in _models:
                from ..models.bundle import load_bundle

                _models[spec.bundle] = load_bundle(spec.bundle)
            model = _models[spec.bundle]
    return model


def _pool(processes: bool, workers: int) -> Executor:
    with _pools_lock:
        key = (processes, workers)
        if key not in _pools:
            _pools[key] = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
                           if processes else ThreadPoolExecutor(workers, thread_name_prefix="cancerseg-read"))
        return _pools[key]


def shutdown_readers() -> None:
    """Stop this process's reader pools (reader processes hold memory; threads are cheap to keep)."""
    with _pools_lock:
        for pool in _pools.values():
            pool.shutdown(wait=False, cancel_futures=True)
        _pools.clear()


def _read_tile(slide: str, level: int, x: int, y: int, size: int) -> np.ndarray:
    return SlideHandle.shared(slide).read(level, x, y, size, size)


@lru_cache(maxsize=8)
def _store_arrays(path: str, run: str) -> tuple[zarr.Array, zarr.Array, zarr.Array]:
    """The store's arrays, opened once per run and process (a later run may have recreated the store)."""
    root = zarr.open_group(path, mode="r+")
    return root["labels/0"], root["probabilities"], root["done"]


# ---- tasks ------------------------------------------------------------------------------------------

def predict_task(spec: RunSpec, tiles: Sequence[Tile], after: Sequence[bool] = ()) -> np.ndarray | None:
    """Read, normalise and predict one batch: uint8 probabilities (N, C, T, T), or None if cancelled.

    ``after``: results of the chunk tasks this batch waits for (back-pressure only, see ``build_graph``).
    """
    if spec.name in _cancelled:
        return None
    size = spec.grid.tile
    origins = [spec.grid.tile_origin(*t) for t in tiles]
    pool = _pool(spec.reader_processes, spec.readers)
    futures = [pool.submit(_read_tile, spec.slide, spec.level, x, y, size) for y, x in origins]
    batch = np.stack([f.result() for f in futures])
    model = _model(spec)
    with _model_lock:
        probabilities = model.predict_batch(batch, as_uint8=True)
    probabilities = np.asarray(probabilities)[..., :spec.n_classes]
    if probabilities.dtype != np.uint8:  # models that only give floats
        probabilities = np.clip(np.rint(probabilities * 255), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(probabilities.transpose(0, 3, 1, 2))


def blend_chunk(grid: TileGrid, chunk: Tile, tiles: dict[Tile, np.ndarray]) -> np.ndarray:
    """uint8 probabilities (C, h, w) of one output chunk from the tiles around it (uint8, (C, T, T)).

    Each pixel is sum(w_t p_t) / sum(w_t) over the tiles t that cover it.  The
    chunk's own tile has weight exactly 1 away from a frame ``margin`` wide and
    no other tile reaches there, so that interior is the tile itself: only the
    frame is blended in floating point.
    """
    row, col = chunk
    y0, y1, x0, x1 = grid.chunk_box(row, col)
    m, weights = grid.margin, grid.weights
    own = tiles[chunk]
    out = own[:, m:m + y1 - y0, m:m + x1 - x0].copy()
    if not m:
        return out
    stride = grid.stride
    frame = [(0, min(m, y1 - y0), 0, x1 - x0),  # top, bottom, left, right strips in chunk pixels
             (stride - m, y1 - y0, 0, x1 - x0),
             (m, min(stride - m, y1 - y0), 0, min(m, x1 - x0)),
             (m, min(stride - m, y1 - y0), stride - m, x1 - x0)]
    for sy0, sy1, sx0, sx1 in frame:
        if sy0 >= sy1 or sx0 >= sx1:
            continue
        total = np.zeros((out.shape[0], sy1 - sy0, sx1 - sx0), np.float32)
        weight = np.zeros((sy1 - sy0, sx1 - sx0), np.float32)
        for (r, c), probabilities in tiles.items():
            ty, tx = grid.tile_origin(r, c)
            # the strip in this tile's pixels, clipped to the tile
            ay0, ay1 = max(y0 + sy0, ty), min(y0 + sy1, ty + grid.tile)
            ax0, ax1 = max(x0 + sx0, tx), min(x0 + sx1, tx + grid.tile)
            if ay0 >= ay1 or ax0 >= ax1:
                continue
            w = weights[ay0 - ty:ay1 - ty, ax0 - tx:ax1 - tx]
            region = (slice(ay0 - y0 - sy0, ay1 - y0 - sy0), slice(ax0 - x0 - sx0, ax1 - x0 - sx0))
            total[(slice(None), *region)] += probabilities[:, ay0 - ty:ay1 - ty, ax0 - tx:ax1 - tx] * w
            weight[region] += w
        out[:, sy0:sy1, sx0:sx1] = np.rint(total / weight).astype(np.uint8)
    return out


def write_chunk(spec: RunSpec, chunk: Tile, probabilities: np.ndarray) -> None:
    labels, stored, done = _store_arrays(spec.store, spec.name)
    y0, y1, x0, x1 = spec.grid.chunk_box(*chunk)
    stored[:, y0:y1, x0:x1] = probabilities
    if len(probabilities) == 2:  # 10x faster than argmax, same ties (class 0)
        labels[y0:y1, x0:x1] = (probabilities[1] > probabilities[0]).view(np.uint8)
    else:
        labels[y0:y1, x0:x1] = np.argmax(probabilities, axis=0).astype(np.uint8)
    done[chunk] = 1  # after the data: a chunk marked done is always complete


def chunk_task(spec: RunSpec, chunk: Tile, tiles: Sequence[Tile], batches: Sequence[np.ndarray | None],
               positions: Sequence[int]) -> bool:
    """Blend and write one chunk; ``batches[i][positions[i]]`` is tile ``tiles[i]``.  False if cancelled."""
    if spec.name in _cancelled or any(b is None for b in batches):
        return False
    around = {tile: batch[position] for tile, batch, position in zip(tiles, batches, positions)}
    write_chunk(spec, chunk, blend_chunk(spec.grid, chunk, around))
    return True


# ---- the graph and its execution ---------------------------------------------------------------------

@dataclass
class Graph:
    spec: RunSpec
    tasks: dict
    predict_keys: dict[tuple, int]  # key -> tiles in that batch
    chunk_keys: list[tuple]

    @property
    def keys(self) -> list[tuple]:
        return [*self.predict_keys, *self.chunk_keys]


def build_graph(spec: RunSpec, tiles: Sequence[Tile], chunks: Sequence[Tile], batch: int) -> Graph:
    """The graph predicting ``tiles`` (row-major) in batches and writing ``chunks`` from them.

    Back-pressure: batch i also waits for the chunks that use batch i - window,
    where the window spans two rows of tiles and a bit.  Without it a scheduler
    may predict far ahead of the blending, and memory grows with the slide's
    area; with it, memory is a few rows of tiles whatever the slide's height.
    """
    batches = [[tuple(map(int, t)) for t in tiles[start:start + batch]] for start in range(0, len(tiles), batch)]
    predict_keys = {(f"{spec.name}-predict", i): len(members) for i, members in enumerate(batches)}
    where = {t: ((f"{spec.name}-predict", i), j) for i, members in enumerate(batches) for j, t in enumerate(members)}
    tasks: dict = {}
    chunk_keys = []
    users: dict[tuple, list[tuple]] = {key: [] for key in predict_keys}
    for chunk in chunks:
        chunk = tuple(map(int, chunk))
        around = [t for t in spec.grid.tiles_of_chunk(*chunk) if t in where]
        key = (f"{spec.name}-chunk", *chunk)
        tasks[key] = (chunk_task, spec, chunk, around, [where[t][0] for t in around], [where[t][1] for t in around])
        chunk_keys.append(key)
        for batch_key in {where[t][0] for t in around}:
            users[batch_key].append(key)
    # a chunk's tiles lie within 2 rows + 3 tiles of the row-major list: waiting on batch i - window's
    # users never waits on batch i or later, so the back-pressure cannot deadlock
    window = -(-(2 * spec.grid.cols + 3) // batch) + 2
    for (name, i), members in zip(predict_keys, batches):
        after = users[(name, i - window)] if i >= window else []
        tasks[(name, i)] = (predict_task, spec, members, after)
    return Graph(spec, tasks, predict_keys, chunk_keys)


@dataclass
class Counts:
    tiles: int = 0  # predicted
    chunks: int = 0  # blended and written


def run_local(graph: Graph, on_task: Callable[[Counts], None], threads: int = 4, band_rows: int = 64) -> Counts:
    """Run on the threaded scheduler, ``band_rows`` rows of chunks at a time; ``on_task`` sees the counts
    after every task (and may cancel).

    Bands keep the scheduler's bookkeeping to one band, so memory does not grow
    with the slide's height; each band ends with the pipeline drained, so bands
    are tall (64 rows: a 32k slide at 448 px chunks is 2 bands).  A batch that the next band also needs is carried
    over as a result (never predicted twice), and finished tasks are replaced by
    their results so that later bands never reach back into them.
    """
    import dask
    from dask.callbacks import Callback
    from dask.optimization import cull

    counts = Counts()

    def posttask(key, result, dsk, state, worker_id):
        _count(graph, key, result, counts)
        on_task(counts)

    tasks = dict(graph.tasks)
    rows = sorted({key[1] for key in graph.chunk_keys})
    band_of_row = {row: index // band_rows for index, row in enumerate(rows)}
    bands: dict[int, list[tuple]] = {}
    last_band: dict[tuple, int] = {}  # batch -> the last band that uses it
    for key in graph.chunk_keys:
        band = band_of_row[key[1]]
        bands.setdefault(band, []).append(key)
        for batch_key in tasks[key][4]:
            last_band[batch_key] = max(band, last_band.get(batch_key, band))
    carried: set[tuple] = set()
    with Callback(posttask=posttask):
        for band, keys in sorted(bands.items()):
            culled, _ = cull(tasks, keys)
            keep = [k for k in culled if k in graph.predict_keys and last_band[k] > band and k not in carried]
            results = dask.threaded.get(culled, [*keys, *keep], num_workers=threads)
            for key, result in zip([*keys, *keep], results):
                tasks[key] = result  # a literal from now on: done chunks and carried batches are not redone
            carried |= set(keep)
            for key in [k for k in carried if last_band[k] <= band]:  # no later band needs it: free it
                tasks[key] = None
                carried.discard(key)
    return counts


def run_distributed(graph: Graph, address: str, on_task: Callable[[Counts], None],
                    cancelled: Callable[[], bool]) -> Counts:
    """Run on the dask.distributed scheduler at ``address`` (its workers load the model themselves)."""
    from distributed import Client, as_completed

    counts = Counts()
    with Client(address, set_as_default=False) as client:
        futures = client.get(graph.tasks, graph.keys, sync=False)
        results = as_completed(futures, loop=client.loop)
        del futures  # each batch is released as soon as the chunks that need it are written
        for future in results:
            if future.status == "error":
                client.cancel(list(results.futures))
                future.result()  # raises the task's error here
            result = future.result() if future.key not in graph.predict_keys else True
            _count(graph, future.key, result, counts)
            on_task(counts)
            if cancelled():
                client.cancel(list(results.futures))
                break
    return counts


def _count(graph: Graph, key, result, counts: Counts) -> None:
    if key in graph.predict_keys and result is not None:
        counts.tiles += graph.predict_keys[key]
    elif result is True:
        counts.chunks += 1
