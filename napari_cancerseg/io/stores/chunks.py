"""Whole chunks of a local zarr v2 array, read and written as files (the engine's hot path)."""

from __future__ import annotations

import itertools
import os
import threading
from concurrent.futures import Executor
from typing import Sequence, overload

import numpy as np
import zarr
from zarr.core.metadata import ArrayV2Metadata

from ...errors import ReadError, WriteError
from ..windows import WindowArray, read_plan, take
from .attributes import describe_os_error


class ChunkFiles:
    """Whole chunks of a local zarr (format 2) array, written and read straight from their files.

    zarr 3 spends about 1 ms of Python on every write, holding the GIL: a
    process then writes a few hundred chunks per second however many cores it
    has, and the tiled engine writes two or three arrays per tile.  Here a
    chunk costs its compression (the array's own codec) and one atomic file
    write, both outside the GIL.  The files are exactly what zarr writes:
    zarr reads them back, and tests compare the two byte for byte.
    """

    def __init__(self, array: zarr.Array):
        meta = array.metadata
        store = array.store_path.store
        if not isinstance(meta, ArrayV2Metadata) or meta.filters or meta.order != "C" or not hasattr(store, "root"):
            raise WriteError(str(array.store_path), "direct chunk writes need a local zarr v2 array without filters")
        self.array = array
        self.chunks, self.shape = tuple(meta.chunks), tuple(meta.shape)
        self.dtype = np.dtype(array.dtype)
        self.fill = meta.fill_value
        self.compressor = meta.compressor
        self.separator = meta.dimension_separator
        self.store, self.name = str(store.root), array.store_path.path
        self.folder = os.path.join(self.store, self.name)
        self._made: set[str] = set()

    def box(self, index: Sequence[int]) -> tuple[slice, ...]:
        """The array region that chunk ``index`` covers (clipped at the array's edge)."""
        return tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, self.chunks, self.shape))

    def path(self, index: Sequence[int]) -> str:
        return os.path.join(self.folder, *(self.separator.join(map(str, index)).split("/")))

    def write(self, index: Sequence[int], data: np.ndarray) -> None:
        """Replace chunk ``index`` by ``data``, the chunk's region of the array (smaller at the edges)."""
        expected = tuple(b.stop - b.start for b in self.box(index))
        if data.shape != expected:
            raise ValueError(f"chunk {tuple(index)} covers {expected}, not {data.shape}")
        block = np.asarray(data, dtype=self.dtype)
        if expected != self.chunks:  # edge chunks are stored whole, padded with the fill value
            block = np.full(self.chunks, self.fill, self.dtype)
            block[tuple(slice(0, e) for e in expected)] = data
        raw = np.ascontiguousarray(block)
        encoded = self.compressor.encode(raw) if self.compressor is not None else raw.tobytes()
        path = self.path(index)
        folder = os.path.dirname(path)
        temporary = f"{path}.{os.getpid()}-{threading.get_ident()}.partial"  # readers never see half a chunk
        try:
            if folder not in self._made:
                os.makedirs(folder, exist_ok=True)
                self._made.add(folder)
            with open(temporary, "wb") as fh:
                fh.write(encoded)
            os.replace(temporary, path)
        except OSError as err:  # a full disk above all: say which store, keep what is done, leave no partial
            try:
                os.unlink(temporary)
            except OSError:
                pass
            raise WriteError(self.store, f"cannot write chunk {tuple(index)} of {self.name!r}: "
                                         f"{describe_os_error(err)}") from None

    @overload
    def read(self, index: Sequence[int]) -> np.ndarray: ...
    @overload
    def read(self, index: Sequence[int], fill_missing: bool) -> np.ndarray | None: ...

    def read(self, index: Sequence[int], fill_missing: bool = True) -> np.ndarray | None:
        """Chunk ``index`` (clipped at the array's edge); where it was never written, the fill value (None with
        ``fill_missing=False``: one open tells both, no separate existence check)."""
        expected = tuple(b.stop - b.start for b in self.box(index))
        try:
            with open(self.path(index), "rb") as fh:
                encoded = fh.read()
        except FileNotFoundError:
            return np.full(expected, self.fill, self.dtype) if fill_missing else None
        except OSError as err:
            raise ReadError(self.store, f"cannot read chunk {tuple(index)} of {self.name!r}: {err.strerror}") from None
        try:
            raw = self.compressor.decode(encoded) if self.compressor is not None else encoded
            block = np.frombuffer(raw, self.dtype).reshape(self.chunks)
        except Exception as err:  # noqa: BLE001 - codecs raise RuntimeError, ValueError...: name the file, not the codec
            raise ReadError(self.store, f"chunk {tuple(index)} of {self.name!r} is corrupt (it does not decode: "
                                        f"{err}); predict or write that region again") from None
        return block[tuple(slice(0, e) for e in expected)]

    def written(self) -> np.ndarray:
        """True for every chunk (over the chunk grid) whose file exists: what a run has written so far."""
        grid = tuple(-(-s // c) for s, c in zip(self.shape, self.chunks))
        out = np.zeros(grid, bool)
        for folder, _, names in os.walk(self.folder):
            relative = os.path.relpath(folder, self.folder)
            prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
            for name in names:
                if name.startswith(".") or name.endswith(".partial"):  # metadata, chunks being written
                    continue
                key = prefix + name
                try:
                    index = tuple(int(i) for i in (key.split("/") if self.separator == "/" else key.split(".")))
                except ValueError:
                    continue
                if len(index) == len(grid) and all(0 <= i < n for i, n in zip(index, grid)):
                    out[index] = True
        return out

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of a 2-D array, every column."""
        height, width = self.chunks
        stop = min(stop, self.shape[0])
        out = np.empty((stop - start, self.shape[1]), self.dtype)
        for row in range(start // height, -(-stop // height)):
            top, bottom = max(start, row * height), min(stop, (row + 1) * height)
            for col in range(-(-self.shape[1] // width)):
                block = self.read((row, col))
                out[top - start:bottom - start, col * width:col * width + block.shape[1]] = \
                    block[top - row * height:bottom - row * height]
        return out

    def write_rows(self, start: int, rows: np.ndarray, pool: Executor | None = None) -> None:
        """Replace rows [start, start + len(rows)) of a 2-D array: whole chunk rows (the last may be clipped).

        ``pool``: threads to write the chunks with.  Creating a file is most of a chunk's cost on a virtual
        disk (0.7 ms on this project's ext4 VM, where encoding is 0.05 ms) and releases the GIL, so the
        chunks of a pyramid level are written in parallel.
        """
        height, width = self.chunks
        if start % height or (len(rows) % height and start + len(rows) != self.shape[0]):
            raise ValueError(f"rows {start}..{start + len(rows)} are not whole chunk rows of {height}")
        chunks = [(((start + y) // height, col), rows[y:y + height, col * width:(col + 1) * width])
                  for y in range(0, len(rows), height) for col in range(-(-self.shape[1] // width))]
        if pool is None:
            for index, data in chunks:
                self.write(index, data)
        else:
            for _ in pool.map(lambda chunk: self.write(*chunk), chunks):  # the first error is raised here
                pass

    def lazy(self, name: str | None = None):
        """The whole array as a lazy dask array read chunk by chunk through ``read`` (errors name the chunk).

        ``name``: the dask name; by default one derived from the array's folder, its shape and its
        metadata file's modification time (a rewritten store gets a new name).  The graph stays
        lazy (``from_array``): a 100k x 100k level of 96 px chunks has a million chunks, and a
        graph listing each would cost seconds at every refresh of a live layer.
        """
        import dask.array as da

        if name is None:
            try:
                stamp = os.stat(os.path.join(self.folder, ".zarray")).st_mtime_ns
            except OSError:
                stamp = 0
            name = f"store-{abs(hash((self.folder, self.shape, stamp))):x}"
        return da.from_array(_ChunkReader(self), chunks=self.chunks, name=name, asarray=False, lock=False,
                             fancy=False, meta=np.empty((0,) * len(self.shape), self.dtype))


class _ChunkReader:
    """An array-like over ``ChunkFiles`` for dask: a window is assembled from the chunks it covers."""

    def __init__(self, files: ChunkFiles):
        self.files = files
        self.shape, self.dtype, self.ndim = files.shape, files.dtype, len(files.shape)

    def __getitem__(self, key) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (self.ndim - len(key))
        window = [k.indices(s) for k, s in zip(key, self.shape)]
        if any(step != 1 for _, _, step in window):
            raise IndexError("chunk windows are read with step 1")
        out = np.empty(tuple(max(0, stop - start) for start, stop, _ in window), self.dtype)
        if not out.size:
            return out
        ranges = [range(start // c, -(-stop // c)) for (start, stop, _), c in zip(window, self.files.chunks)]
        for index in np.ndindex(*(len(r) for r in ranges)):
            chunk = tuple(r[i] for r, i in zip(ranges, index))
            block = self.files.read(chunk)
            source, target = [], []
            for (start, stop, _), c, i in zip(window, self.files.chunks, chunk):
                lo, hi = max(start, i * c), min(stop, (i + 1) * c)
                source.append(slice(lo - i * c, hi - i * c))
                target.append(slice(lo - start, hi - start))
            out[tuple(target)] = block[tuple(source)]
        return out


class StridedLevel(WindowArray):
    """Every ``stride``-th pixel (along the last two axes) of a ``ChunkFiles`` array, an array-like napari slices.

    A prediction's pyramid: no dask graph per refresh (building, ordering and running it cost
    0.4-1.6 s of the GUI thread at each refresh of a 110-tile slide), and chunks once read are kept
    (``cache``, shared by the levels of one layer) since the engine writes each chunk once, whole;
    a chunk not written yet is read again at the next refresh.
    """

    def __init__(self, files: ChunkFiles, stride: int, cache: dict[tuple[int, ...], np.ndarray] | None = None):
        self.files, self.stride = files, stride
        self.cache = cache if cache is not None else {}
        self.dtype = files.dtype
        self.shape = tuple(files.shape[:-2]) + tuple(-(-s // stride) for s in files.shape[-2:])

    def _chunk(self, index: tuple[int, ...]) -> np.ndarray:
        block = self.cache.get(index)
        if block is None:
            block = self.files.read(index, fill_missing=False)
            if block is None:  # not written yet: the fill value now, read again once the engine writes it
                return np.full(tuple(b.stop - b.start for b in self.files.box(index)), self.files.fill,
                               self.dtype)
            self.cache[index] = block
        return block

    def __getitem__(self, key) -> np.ndarray:
        axes, _ = read_plan(key, self.shape, len(self.shape), "live levels")
        # along each axis the level-0 pixels read are a + i * d, i < n (forwards): per chunk, one strided slice
        strides = (1,) * (len(self.shape) - 2) + (self.stride, self.stride)  # leading axes (classes): not strided
        plans = []
        for axis, c, stride in zip(axes, self.files.chunks, strides):
            step = axis.step if axis.step > 0 else 1  # a reversed axis is read forwards, reversed by take()
            a, d, n = axis.low * stride, step * stride, len(range(axis.low, axis.high, step))
            spans = []
            if n:
                for chunk in range(a // c, (a + (n - 1) * d) // c + 1):
                    lo = max(0, -(-(chunk * c - a) // d))
                    hi = min(n, -(-((chunk + 1) * c - a) // d))
                    if lo < hi:
                        first = a + lo * d - chunk * c
                        spans.append((chunk, slice(lo, hi), slice(first, first + (hi - lo - 1) * d + 1, d)))
            plans.append((n, spans))
        out = np.empty(tuple(n for n, _ in plans), self.dtype)
        if out.size:
            for parts in itertools.product(*(spans for _, spans in plans)):
                block = self._chunk(tuple(chunk for chunk, _, _ in parts))
                out[tuple(target for _, target, _ in parts)] = block[tuple(source for _, _, source in parts)]
        # positive steps are already taken; the reversed axes and the dropped ones are left to take()
        return take(out, [a._replace(step=1) if a.step > 0 else a for a in axes])


def strided_pyramid(files: ChunkFiles, top: int, cache: dict[tuple[int, ...], np.ndarray] | None = None,
                    ) -> list[StridedLevel]:
    """Nearest-neighbour levels (stride 2**k) of ``files`` until the longest side is at most ``top``, sharing
    one chunk cache (a chunk read for one zoom serves the others)."""
    cache = cache if cache is not None else {}
    levels = [StridedLevel(files, 1, cache)]
    while max(levels[-1].shape[-2:]) > top:
        levels.append(StridedLevel(files, levels[-1].stride * 2, cache))
    return levels
