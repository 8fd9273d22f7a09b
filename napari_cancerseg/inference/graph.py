"""The prediction as a dask graph: read tiles -> normalise -> batch -> model -> blend -> write.

Two kinds of task, named after the run so that two runs never share keys:

* ``predict``: decodes one batch of tiles (a reader pool of threads or
  processes), lets the model normalise and predict them, and returns uint8
  probabilities (N, C, T, T).  The model is loaded once per process and its
  forward passes are serialised by a lock: one model per process (per GPU).
* ``segment``: blends the tiles around a run of up to 16 neighbouring output
  chunks of one row, all at once, and writes each chunk's argmax labels and
  then its probabilities (which mark it done) to the store.

Chunks without tissue get no task at all: they stay at the store's fill value,
label 0 (background) and probability 0 for every class (not predicted).

The same graph runs on the local threaded scheduler, band by band (reading,
prediction and blending overlap in threads; OpenSlide and the models release
the GIL), or on a dask.distributed cluster (``scheduler=ADDRESS``), whose workers then need the
slide, the bundle and the store on shared storage.  This module imports
Keras only when a task loads a model.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from ..io.stores import ChunkFiles, chunk_writers
from .options import PredictOptions
from .readers import TileReaders, column_owners
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
    options: PredictOptions = field(default_factory=PredictOptions)  # batch, readers, reader_processes come from it

    @classmethod
    def new(cls, **fields: Any) -> RunSpec:
        return cls(name=f"cancerseg-{uuid.uuid4().hex[:12]}", **fields)

    @property
    def batch(self) -> int:
        return self.options.batch

    @property
    def readers(self) -> int:
        return self.options.readers

    @property
    def reader_processes(self) -> bool:
        return self.options.reader_processes


# ---- per-process state: models, reader pools, open stores, cancelled runs -------------------------

_models: dict[str, Any] = {}  # bundle path or run name -> object with predict_batch
_model_lock = threading.Lock()  # one model loaded at a time per process
# Every forward pass of a process runs on this one thread, one at a time (one model per device). The scheduler's
# threads take turns at the model otherwise, and PyTorch on the CPU then runs 20-30% slower (its OpenMP team is
# per calling thread: the idle teams spin while the next thread's works; measured with the nuclei U-Net, batches
# of 4 x 256 px on 2 cores: 1.21-1.44 s a batch from one thread, 1.44-1.82 s from four taking turns; TensorFlow's
# one shared pool showed no such cost). A GPU's context and streams also stay with one thread.
_model_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cancerseg-model")
_readers: dict[str, TileReaders] = {}  # run name -> its tile readers, in this process
_readers_lock = threading.Lock()
_cancelled: set[str] = set()
KEEP_READERS = 2  # runs whose readers a cluster worker keeps (older ones are closed)


def register_model(spec: RunSpec, model) -> None:
    """Use an already loaded model for this run (local scheduler only: it does not travel)."""
    _models[spec.name] = model


def forget_run(spec: RunSpec) -> None:
    """Drop this run's model and close its readers in this process."""
    _models.pop(spec.name, None)
    _cancelled.discard(spec.name)
    with _readers_lock:
        readers = _readers.pop(spec.name, None)
    if readers is not None:
        readers.close()


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


def _run_readers(spec: RunSpec) -> TileReaders:
    with _readers_lock:
        readers = _readers.get(spec.name)
        if readers is None:
            readers = TileReaders(spec.slide, spec.level, spec.grid.tile, spec.batch, spec.readers,
                                  spec.reader_processes)
            _readers[spec.name] = readers
            for name in list(_readers)[:-KEEP_READERS]:  # a cluster worker sees run after run
                _readers.pop(name).close()
        return readers


@lru_cache(maxsize=8)
def _store_writers(path: str, run: str) -> tuple[ChunkFiles, ChunkFiles]:
    """The store's arrays as chunk files, opened once per run and process (a later run may have recreated it)."""
    return chunk_writers(path)


# ---- tasks ------------------------------------------------------------------------------------------

def predict_task(spec: RunSpec, tiles: Sequence[Tile], owners: Sequence[int],
                 after: Sequence[int] = ()) -> np.ndarray | None:
    """Read, normalise and predict one batch: uint8 probabilities (N, C, T, T), or None if cancelled.

    ``owners``: the reader of each tile (see ``readers.column_owners``).
    ``after``: results of the segment tasks this batch waits for (back-pressure only, see ``build_graph``).
    """
    if spec.name in _cancelled:
        return None
    origins = [spec.grid.tile_origin(*t) for t in tiles]
    model = _model(spec)
    with _run_readers(spec).batch(origins, owners) as batch:  # a full batch: see TileReaders.batch
        if not getattr(model, "fixed_batch_shape", True):  # an eager model pays for the padding, nothing else
            batch = batch[:len(tiles)]
        probabilities = _model_thread.submit(model.predict_batch, batch, as_uint8=True).result()
    probabilities = np.asarray(probabilities)[:len(tiles), ..., :spec.n_classes]
    if probabilities.dtype != np.uint8:  # models that only give floats
        probabilities = np.clip(np.rint(probabilities * 255), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(probabilities.transpose(0, 3, 1, 2))


def blend_segment(grid: TileGrid, row: int, cols: range, tiles: dict[Tile, np.ndarray]) -> np.ndarray:
    """uint8 probabilities (k, C, stride, stride) of chunks ``cols`` of chunk row ``row``.

    ``tiles``: uint8 (C, T, T) probabilities of every grid tile next to those
    chunks (rows ``row`` +- 1, columns ``cols`` widened by one, within the grid).

    Each pixel is sum(w_t p_t) / sum(w_t) over the tiles t that cover it, with
    separable weights w_t(y, x) = ramp(y) ramp(x): every pixel's covering tiles
    form a rows x columns product, so that equals blending along x within each
    row of tiles and then along y, each pass normalised by its own weights.
    A chunk's interior is its own tile alone (weight 1, no other tile reaches
    it) and is copied; only the frame, ``margin`` wide, is blended in floating
    point, for all k chunks at once: a few large array operations per segment
    instead of dozens of small ones per chunk, which with many threads made
    the GIL, not the arithmetic, the limit.
    """
    s, m, t = grid.stride, grid.margin, grid.tile
    k = len(cols)
    own = _stack_row(tiles, row, range(cols.start - 1, cols.stop + 1))
    out = own.tiles[1:k + 1, :, m:m + s, m:m + s].copy()  # interior and frame; the frame is overwritten below
    if not m:
        return out
    ramp = grid.ramp.astype(np.float32)
    near, far = ramp[m:2 * m], ramp[t - m:]  # a tile's own weight in its frame, its neighbour's weight there
    # the own row of tiles, blended along x: the top and bottom bands of the frame, and its side columns between
    top = _blend_along_x(own, k, slice(m, 2 * m), s, m, near, far)
    bottom = _blend_along_x(own, k, slice(s, s + m), s, m, near, far)
    middle = _blend_along_x(own, k, slice(2 * m, s), s, m, near, far, middle=False)
    out[..., m:s - m, :m] = _round(middle[..., :m])
    out[..., m:s - m, s - m:] = _round(middle[..., s - m:])
    for band, neighbour_row, rows, own_weight, other_weight, place in (
            (top, row - 1, slice(t - m, t), near, far, slice(0, m)),
            (bottom, row + 1, slice(0, m), near[::-1], far[::-1], slice(s - m, s))):
        if 0 <= neighbour_row < grid.rows:  # blended along y with the row of tiles above or below
            # only the m rows of theirs that reach into these chunks are stacked
            other = _blend_along_x(_stack_row(tiles, neighbour_row, range(cols.start - 1, cols.stop + 1), rows),
                                   k, slice(None), s, m, near, far)
            band = (band * own_weight[:, None] + other * other_weight[:, None]) / (own_weight + other_weight)[:, None]
        out[..., place, :] = _round(band)
    return out


@dataclass
class _Row:
    tiles: np.ndarray  # (n, C, T, T) uint8, zeros where the grid has no tile
    present: np.ndarray  # (n,) float32: 1 where it has


def _stack_row(tiles: dict[Tile, np.ndarray], row: int, cols: range, rows: slice = slice(None)) -> _Row:
    """Tile rows ``rows`` of the tiles of grid row ``row`` in columns ``cols``, stacked."""
    present = [(row, c) in tiles for c in cols]
    sample = next(tiles[(row, c)] for c, p in zip(cols, present) if p)[:, rows]
    stacked = np.zeros((len(cols), *sample.shape), sample.dtype)
    for i, c in enumerate(cols):
        if present[i]:
            stacked[i] = tiles[(row, c)][:, rows]
    return _Row(stacked, np.asarray(present, np.float32))


def _blend_along_x(row: _Row, k: int, rows: slice, s: int, m: int, near: np.ndarray, far: np.ndarray,
                   middle: bool = True) -> np.ndarray:
    """float32 (k, C, len(rows), s): tile rows ``rows`` of the k chunks, blended along x with their neighbours.

    ``row`` holds the k chunks' own tiles at 1..k and their left and right
    neighbours at 0 and k + 1.  Without ``middle`` only the m columns at each
    side are filled (the middle is the own tile alone).
    """
    t = s + 2 * m
    own = row.tiles[1:k + 1, :, rows]
    left, right = row.tiles[0:k, :, rows, t - m:], row.tiles[2:k + 2, :, rows, :m]
    has_left, has_right = row.present[0:k, None, None, None], row.present[2:k + 2, None, None, None]
    out = np.empty(own.shape[:3] + (s,), np.float32)
    if middle:
        out[..., m:s - m] = own[..., 2 * m:s]
    out[..., :m] = (own[..., m:2 * m] * near + left * (far * has_left)) / (near + far * has_left)
    out[..., s - m:] = (own[..., s:s + m] * near[::-1] + right * (far[::-1] * has_right)) / (
        near[::-1] + far[::-1] * has_right)
    return out


def _round(values: np.ndarray) -> np.ndarray:
    return np.rint(values).astype(np.uint8)


def write_chunks(spec: RunSpec, row: int, cols: range, probabilities: np.ndarray) -> None:
    """Write each chunk's argmax labels and then its probabilities (C, h, w), which mark it done.

    The store's chunks are the grid's chunks, so each is one whole-chunk write.
    """
    labels, stored = _store_writers(spec.store, spec.name)
    for col, chunk_probabilities in zip(cols, probabilities):
        y0, y1, x0, x1 = spec.grid.chunk_box(row, col)
        chunk = chunk_probabilities[:, :y1 - y0, :x1 - x0]  # clipped at the slide's edges
        if len(chunk) == 2:  # 10x faster than argmax, same ties (class 0)
            labels.write((row, col), (chunk[1] > chunk[0]).view(np.uint8))
        else:
            labels.write((row, col), np.argmax(chunk, axis=0).astype(np.uint8))
        stored.write((0, row, col), chunk)  # last: a chunk whose probabilities exist is complete


def segment_task(spec: RunSpec, row: int, cols: range, tiles: Sequence[Tile],
                 batches: Sequence[np.ndarray | None], positions: Sequence[int]) -> int:
    """Blend and write chunks ``cols`` of chunk row ``row``; ``batches[i][positions[i]]`` is tile ``tiles[i]``.

    Returns the number of chunks written (0 if cancelled).
    """
    taken: dict[int, np.ndarray | None] = {}  # a batch carried from the previous band: taken once per segment
    for carried in batches:
        if isinstance(carried, Carried) and id(carried) not in taken:
            taken[id(carried)] = carried.take()
    batches = [taken[id(b)] if isinstance(b, Carried) else b for b in batches]
    ready = [b for b in batches if b is not None]
    if spec.name in _cancelled or len(ready) < len(batches):  # a batch is missing: its prediction was cancelled
        return 0
    around = {tile: batch[position] for tile, batch, position in zip(tiles, ready, positions)}
    write_chunks(spec, row, cols, blend_segment(spec.grid, row, cols, around))
    return len(cols)


# ---- the graph and its execution ---------------------------------------------------------------------

@dataclass
class Graph:
    spec: RunSpec
    tasks: dict
    predict_keys: dict[tuple, int]  # key -> tiles in that batch
    segment_batches: dict[tuple, set[tuple]]  # segment key -> the batches it blends

    @property
    def keys(self) -> list[tuple]:
        return [*self.predict_keys, *self.segment_batches]


SEGMENT_CHUNKS = 16  # chunks blended together: large array operations, yet many segments per row to share out
AHEAD = 4  # batches the model may predict beyond what the oldest unfinished segments read


def segments(chunks: Sequence[Tile], longest: int = SEGMENT_CHUNKS) -> list[tuple[int, range]]:
    """Chunks grouped into (row, columns): runs of neighbouring chunks in a row, at most ``longest`` long."""
    by_row: dict[int, list[int]] = {}
    for row, col in chunks:
        by_row.setdefault(int(row), []).append(int(col))
    out = []
    for row, cols in sorted(by_row.items()):
        cols.sort()
        start = previous = cols[0]
        for col in cols[1:]:
            if col != previous + 1 or col - start == longest:
                out.append((row, range(start, previous + 1)))
                start = col
            previous = col
        out.append((row, range(start, previous + 1)))  # the row's last run
    return out


def build_graph(spec: RunSpec, tiles: Sequence[Tile], chunks: Sequence[Tile]) -> Graph:
    """The graph predicting ``tiles`` (row-major) in batches of ``spec.batch`` and writing ``chunks`` from them.

    Back-pressure: batch i also waits for the segments that use batch i - window,
    where the window is the furthest any batch's segments read ahead of it
    (about two rows of the tiles actually predicted: glass is not) plus AHEAD
    batches.  Without it a scheduler may predict far ahead of the blending, and
    memory grows with the slide's area; with it, memory is a few rows of tiles
    whatever the slide's height.  It cannot deadlock: batch i waits only on
    segments that read batches before it.
    """
    batch = spec.batch
    batches = [[(int(r), int(c)) for r, c in tiles[start:start + batch]] for start in range(0, len(tiles), batch)]
    name = f"{spec.name}-predict"
    predict_keys = {(name, i): len(members) for i, members in enumerate(batches)}
    where = {t: ((name, i), j) for i, members in enumerate(batches) for j, t in enumerate(members)}
    tasks: dict = {}
    segment_batches: dict[tuple, set[tuple]] = {}
    users: dict[tuple, list[tuple]] = {key: [] for key in predict_keys}
    for row, cols in segments(chunks):
        around = [(r, c) for r in range(row - 1, row + 2) for c in range(cols.start - 1, cols.stop + 1)
                  if (r, c) in where]
        key = (f"{spec.name}-segment", row, cols.start)
        tasks[key] = (segment_task, spec, row, cols, around, [where[t][0] for t in around],
                      [where[t][1] for t in around])
        segment_batches[key] = {where[t][0] for t in around}
        for batch_key in segment_batches[key]:
            users[batch_key].append(key)
    # last_read[b]: the newest batch that any segment using batch b reads
    last_read = [-1] * len(batches)
    for used in segment_batches.values():
        newest = max(i for _, i in used)
        for _, i in used:
            last_read[i] = max(last_read[i], newest)
    # segments of batch i - window read nothing from batch i - AHEAD on: waiting on them cannot deadlock
    window = max([newest - i for i, newest in enumerate(last_read) if newest >= 0], default=0) + AHEAD
    owners = column_owners([t for members in batches for t in members], spec.readers)
    for i, members in enumerate(batches):
        after = users[(name, i - window)] if i >= window else []
        tasks[(name, i)] = (predict_task, spec, members, [owners[t] for t in members], after)
    return Graph(spec, tasks, predict_keys, segment_batches)


class Carried:
    """A batch that a band hands to the next, let go after its last segment there takes it.

    dask keeps every literal of a graph until the whole graph is done: a batch
    given as is would stay for the next band's whole run (with 512 px tiles and
    batch 64, about 100 MB on a 32k slide).
    """

    def __init__(self, batch: np.ndarray | None, segments: int):
        self._batch, self._left, self._lock = batch, segments, threading.Lock()

    def take(self) -> np.ndarray | None:
        with self._lock:
            batch = self._batch
            self._left -= 1
            if self._left <= 0:
                self._batch = None
            return batch


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
    over as a result (never predicted twice, let go once used: ``Carried``), and
    finished tasks are replaced by their results so that later bands never reach back into them.
    """
    import dask
    from dask.callbacks import Callback
    from dask.optimization import cull

    counts = Counts()

    def posttask(key, result, dsk, state, worker_id):
        _count(graph, key, result, counts)
        on_task(counts)

    tasks = dict(graph.tasks)
    rows = sorted({key[1] for key in graph.segment_batches})
    band_of_row = {row: index // band_rows for index, row in enumerate(rows)}
    bands: dict[int, list[tuple]] = {}
    users_by_band: dict[tuple, list[int]] = {}  # batch -> the band of each segment using it
    for key, batch_keys in graph.segment_batches.items():
        band = band_of_row[key[1]]
        bands.setdefault(band, []).append(key)
        for batch_key in batch_keys:
            users_by_band.setdefault(batch_key, []).append(band)
    last_band = {key: max(used) for key, used in users_by_band.items()}
    carried: set[tuple] = set()
    # our own pool, so that a failing task (a full disk...) returns only once the tasks already running have
    # ended: dask's get raises at the first error while its pool's threads go on writing into the store
    pool = ThreadPoolExecutor(threads, thread_name_prefix="cancerseg-graph")
    with Callback(posttask=posttask), contextlib.ExitStack() as stack:
        stack.callback(pool.shutdown, wait=True)
        for band, keys in sorted(bands.items()):
            culled, _ = cull(tasks, keys)
            keep = [k for k in culled if k in graph.predict_keys and last_band[k] > band and k not in carried]
            results = dask.threaded.get(culled, [*keys, *keep], num_workers=threads, pool=pool)
            for key, result in zip(keys, results):
                tasks[key] = result  # a literal from now on: later bands never reach back into done chunks
            for key, result in zip(keep, results[len(keys):]):  # not predicted again, and let go when used
                tasks[key] = Carried(result, sum(b > band for b in users_by_band[key]))
            results = result = None  # or they would hold the carried batches through the next band
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
            result = future.result() if future.key not in graph.predict_keys else True  # batches stay remote
            _count(graph, future.key, result, counts)
            on_task(counts)
            if cancelled():
                client.cancel(list(results.futures))
                break
    return counts


def _count(graph: Graph, key, result, counts: Counts) -> None:
    if key in graph.predict_keys:
        counts.tiles += graph.predict_keys[key] if result is not None else 0
    else:
        counts.chunks += result  # chunks the segment wrote
