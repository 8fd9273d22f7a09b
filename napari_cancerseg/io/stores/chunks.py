"""Whole chunks of a local zarr v2 array, read and written as files (the engine's hot path)."""

from __future__ import annotations

import os
import threading
from typing import Sequence

import numpy as np
import zarr

from ...errors import WriteError


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
        if getattr(meta, "zarr_format", None) != 2 or meta.filters or meta.order != "C" or not hasattr(store, "root"):
            raise WriteError(str(array.store_path), "direct chunk writes need a local zarr v2 array without filters")
        self.array = array
        self.chunks, self.shape = tuple(meta.chunks), tuple(meta.shape)
        self.dtype = np.dtype(array.dtype)
        self.fill = meta.fill_value
        self.compressor = meta.compressor
        self.separator = meta.dimension_separator
        self.folder = os.path.join(str(store.root), array.store_path.path)
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
        if folder not in self._made:
            os.makedirs(folder, exist_ok=True)
            self._made.add(folder)
        temporary = f"{path}.{os.getpid()}-{threading.get_ident()}.partial"  # readers never see half a chunk
        with open(temporary, "wb") as fh:
            fh.write(encoded)
        os.replace(temporary, path)

    def read(self, index: Sequence[int]) -> np.ndarray:
        """Chunk ``index`` (clipped at the array's edge); the fill value where it was never written."""
        expected = tuple(b.stop - b.start for b in self.box(index))
        try:
            with open(self.path(index), "rb") as fh:
                encoded = fh.read()
        except FileNotFoundError:
            return np.full(expected, self.fill, self.dtype)
        raw = self.compressor.decode(encoded) if self.compressor is not None else encoded
        block = np.frombuffer(raw, self.dtype).reshape(self.chunks)
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

    def write_rows(self, start: int, rows: np.ndarray) -> None:
        """Replace rows [start, start + len(rows)) of a 2-D array: whole chunk rows (the last may be clipped)."""
        height, width = self.chunks
        if start % height or (len(rows) % height and start + len(rows) != self.shape[0]):
            raise ValueError(f"rows {start}..{start + len(rows)} are not whole chunk rows of {height}")
        for y in range(0, len(rows), height):
            for col in range(-(-self.shape[1] // width)):
                self.write(((start + y) // height, col), rows[y:y + height, col * width:(col + 1) * width])
