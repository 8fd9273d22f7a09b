"""Slide levels as plain array-likes for napari: windows read tile by tile, in parallel, through a shared cache.

napari slices a multiscale layer with ``np.asarray(level[y0:y1, x0:x1])``.  Through a
dask array that cost about 6 ms per slice in graph building, optimisation and thread
hand-off, and each window decoded every whole 512 px chunk it touched: panning read at
0.6-1.7x OpenSlide's own ``read_region`` (benchmarks/read_speed.txt), where the raw-tile
decoder alone is 2-4x.  A ``SlideLevel`` answers the same slice directly:

* the window is split into the level's *blocks* (the native tile where the level is read
  from its compressed tiles, else chunks of about 512 px read through OpenSlide);
* blocks already decoded come from one process-wide LRU cache with a byte budget
  (``CANCERSEG_VIEW_CACHE_MB``, 256 by default), so a pan decodes only the strip it uncovers;
* missing blocks are decoded on a small thread pool: libjpeg-turbo (through imagecodecs)
  and OpenSlide both release the GIL, so a screen decodes on every core.

Nothing is read when a level is made.  A window larger than ``MAX_WINDOW_BYTES`` is refused
with a ReadError (DESIGN.md: never load a whole slide level); napari only asks for what
the canvas shows and for the smallest level's thumbnail.  ``to_dask`` gives the same level
as a dask array for lazy arithmetic (the synthetic levels of single-level slides).
"""

from __future__ import annotations

import collections
import math
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ReadError
from .windows import WindowArray, read_plan, take

if TYPE_CHECKING:  # wsi imports this module: no import at run time, no cycle
    import dask.array as da

    from .wsi import SlideHandle

#: The largest window one slice may read (about 9,400 x 9,400 RGB pixels).
MAX_WINDOW_BYTES = 256 << 20
#: Default byte budget of the decoded-block cache shared by every slide of the process.
DEFAULT_CACHE_MB = 256
#: A window's missing blocks are decoded in this many groups at once: one in the calling thread, the rest on
#: the decoder pool.
DECODE_GROUPS = min(8, os.cpu_count() or 1) + 1

Block = tuple[Any, int, int, int]  # (handle, level, block row, block column)


class BlockCache:
    """A thread-safe LRU of decoded blocks, bounded in bytes."""

    def __init__(self, budget_bytes: int):
        self.budget = budget_bytes
        self.nbytes = 0
        self.hits = self.misses = 0
        self._blocks: collections.OrderedDict[Block, np.ndarray] = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Block) -> np.ndarray | None:
        with self._lock:
            block = self._blocks.get(key)
            if block is None:
                self.misses += 1
                return None
            self._blocks.move_to_end(key)
            self.hits += 1
            return block

    def put(self, key: Block, block: np.ndarray) -> None:
        if block.nbytes > self.budget:
            return
        with self._lock:
            old = self._blocks.pop(key, None)
            if old is not None:
                self.nbytes -= old.nbytes
            self._blocks[key] = block
            self.nbytes += block.nbytes
            while self.nbytes > self.budget:
                _, evicted = self._blocks.popitem(last=False)
                self.nbytes -= evicted.nbytes

    def clear(self) -> None:
        with self._lock:
            self._blocks.clear()
            self.nbytes = 0
            self.hits = self.misses = 0


def _cache_budget() -> int:
    try:
        megabytes = float(os.environ.get("CANCERSEG_VIEW_CACHE_MB", DEFAULT_CACHE_MB))
    except ValueError:
        megabytes = DEFAULT_CACHE_MB
    return int(max(0.0, megabytes) * (1 << 20)) if math.isfinite(megabytes) else DEFAULT_CACHE_MB << 20


#: The one cache of decoded slide blocks of this process.
CACHE = BlockCache(_cache_budget())
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def clear_cache() -> None:
    """Forget every decoded block (benchmarks start each reader cold)."""
    CACHE.clear()


def _decoder_pool() -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="cancerseg-decode")
        return _pool


class SlideLevel(WindowArray):
    """One level of a slide as a (height, width, 3) uint8 array-like: ``shape``, ``dtype``, ``__getitem__``."""

    dtype = np.dtype(np.uint8)

    def __init__(self, handle: SlideHandle, level: int):
        from .wsi import chunk_length  # at call time: wsi imports this module

        self.handle, self.level = handle, level
        width, height = handle.slide.level_dimensions[level]
        self.shape: tuple[int, int, int] = (int(height), int(width), 3)
        props = handle.slide.properties
        tile_w = int(props.get(f"openslide.level[{level}].tile-width", 0) or 0)
        tile_h = int(props.get(f"openslide.level[{level}].tile-height", 0) or 0)
        #: the chunks a dask view of this level uses (about 512 px, whole native tiles)
        self.chunksize: tuple[int, int, int] = (chunk_length(tile_h, height), chunk_length(tile_w, width), 3)
        raw = handle.raw.levels.get(level) if handle.raw is not None else None
        # raw levels decode one native tile per block, no more than the window needs; OpenSlide pays per call,
        # so its levels are read in the larger chunks
        self.block: tuple[int, int] = ((raw.tile_height, raw.tile_width) if raw is not None
                                       else self.chunksize[:2])

    def __reduce__(self):
        return (SlideLevel, (self.handle, self.level))

    def __dask_tokenize__(self):
        return ("SlideLevel", self.handle.__dask_tokenize__(), self.level)

    def __repr__(self) -> str:
        return (f"SlideLevel({os.path.basename(self.handle.path)!r}, level {self.level}, "
                f"{self.shape[1]} x {self.shape[0]} px, blocks {self.block[1]} x {self.block[0]})")

    def __getitem__(self, key: Any) -> np.ndarray:
        (rows, cols), channels = read_plan(key, self.shape, 2, "slide levels")
        return take(self.read(rows.low, rows.high, cols.low, cols.high), [rows, cols], channels)

    def read(self, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
        """Pixels of rows [y0, y1) and columns [x0, x1), inside the level, as a new (h, w, 3) array."""
        height, width = max(0, y1 - y0), max(0, x1 - x0)
        if height * width * 3 > MAX_WINDOW_BYTES:
            raise ReadError(self.handle.path, (
                f"level {self.level} window of {width} x {height} px is {height * width * 3 / 2**30:.1f} GB; "
                f"read smaller windows (whole slide levels are never loaded)"))
        out = np.empty((height, width, 3), np.uint8)
        if not height or not width:
            return out
        bh, bw = self.block
        keys = [(self.handle, self.level, r, c)
                for r in range(y0 // bh, (y1 - 1) // bh + 1) for c in range(x0 // bw, (x1 - 1) // bw + 1)]
        blocks: dict[Block, np.ndarray] = {}
        missing = []
        for key in keys:
            cached = CACHE.get(key)
            if cached is None:
                missing.append(key)
            else:
                blocks[key] = cached
        if missing:
            blocks.update(self._decode_all(missing))
        for key in keys:
            pixels = blocks[key]
            _, _, r, c = key
            top, left = r * bh, c * bw
            ty0, ty1 = max(y0, top), min(y1, top + pixels.shape[0])
            tx0, tx1 = max(x0, left), min(x1, left + pixels.shape[1])
            out[ty0 - y0:ty1 - y0, tx0 - x0:tx1 - x0] = pixels[ty0 - top:ty1 - top, tx0 - left:tx1 - left]
        return out

    def _decode_all(self, keys: list[Block]) -> dict[Block, np.ndarray]:
        """Decode ``keys`` on every core (the codecs release the GIL), a share of them in this thread.

        The blocks go to the pool in a few groups, not one task each: a 512 px window of 256 px JPEG tiles is
        9 decodes of ~0.2 ms, where a task's hand-off costs tens of microseconds under the GIL.
        """
        if len(keys) == 1:
            return {keys[0]: self._decode(keys[0])}
        pool = _decoder_pool()
        groups = [keys[i::DECODE_GROUPS] for i in range(min(DECODE_GROUPS, len(keys)))]
        futures: list[Future[list[np.ndarray]]] = [pool.submit(self._decode_group, group) for group in groups[1:]]
        decoded = dict(zip(groups[0], self._decode_group(groups[0])))
        for group, future in zip(groups[1:], futures):
            decoded.update(zip(group, future.result()))
        return decoded

    def _decode_group(self, keys: list[Block]) -> list[np.ndarray]:
        return [self._decode(key) for key in keys]

    def _decode(self, key: Block) -> np.ndarray:
        _, level, r, c = key
        bh, bw = self.block
        top, left = r * bh, c * bw
        height, width = min(bh, self.shape[0] - top), min(bw, self.shape[1] - left)
        raw = self.handle.raw
        if raw is not None and level in raw.levels:
            # the decoded tile itself, not a copy of it: the block cache is the viewer's only cache (the slide's
            # raw-tile cache would hold each tile a second time)
            pixels = self.handle.read_raw_tile(level, r, c)
            if pixels is None:  # a tile the slide does not have (sparse slides): its background, as read() shows
                pixels = np.empty((height, width, 3), np.uint8)
                pixels[...] = self.handle.background
            else:
                pixels = pixels[:height, :width]
        else:
            pixels = self.handle.read(level, left, top, width, height)
        CACHE.put(key, pixels)
        return pixels

    def to_dask(self) -> da.Array:
        """The same level as a lazy dask array in ``chunksize`` chunks (for lazy arithmetic on a level)."""
        import dask.array as da

        return da.from_array(self, chunks=self.chunksize, asarray=False, inline_array=True,
                             meta=np.empty((0, 0, 0), np.uint8),
                             name=f"slide-level-{da.core.tokenize(self)}")
