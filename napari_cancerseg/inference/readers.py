"""Tile readers for the tiled engine: threads, or processes that decode straight into shared memory.

Reading is the engine's bottleneck on a GPU (issue 5): OpenSlide spends about
4 ms of C on a 512 px read even when its JPEG tiles are cached, so a GPU that
predicts 1,000 tiles/s needs many cores reading at once.

* Threads share one OpenSlide handle and its tile cache.  A read holds the
  GIL only around OpenSlide's C call (``SlideHandle`` fills a reused buffer),
  but the blending and the scheduler in the same process hold it too (on 16
  cores threads still read faster than processes, see benchmarks/).
* Processes each own a column band of every row of tiles (``owners``), so
  that a process's OpenSlide cache already holds the JPEG tiles that its
  previous tiles shared with the next ones (overlapping tiles, rows below).
  They write the pixels into shared memory that the model reads: no tile is
  pickled or copied between processes.

Either way a batch is read into one of a few fixed buffers ("slots"), which
bounds the memory that reading ahead can take.
"""

from __future__ import annotations

import ctypes
import multiprocessing
import queue
import threading
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from ..errors import ReadError
from ..io.wsi import SlideHandle


def column_owners(tiles: Sequence[tuple[int, int]], workers: int) -> dict[tuple[int, int], int]:
    """Reader of each (row, col) tile: each row's tiles split into ``workers`` runs of neighbouring columns.

    Runs are by rank within the row, so that every reader gets a share of
    every row (balanced) and, row after row, about the same columns (its
    cached JPEG tiles are reused).
    """
    rows: dict[int, list[int]] = {}
    for row, col in tiles:
        rows.setdefault(row, []).append(col)
    owners = {}
    for row, cols in rows.items():
        cols.sort()
        for rank, col in enumerate(cols):
            owners[(row, col)] = rank * workers // len(cols)
    return owners


Items = list[tuple[int, int, int]]  # (index in the batch, x, y) of the tiles one reader reads


def tiles_by_owner(origins: Sequence[tuple[int, int]], owners: Sequence[int], workers: int) -> dict[int, Items]:
    """Each reader's share of a batch: one task (threads) or message (processes) per reader, not per tile."""
    by_owner: dict[int, Items] = {}
    for index, ((y, x), owner) in enumerate(zip(origins, owners)):
        by_owner.setdefault(owner % workers, []).append((index, x, y))
    return by_owner


def read_tiles(handle: SlideHandle, level: int, size: int, items: Items, out: np.ndarray) -> None:
    for index, x, y in items:
        handle.read(level, x, y, size, size, out=out[index])


class TileReaders:
    """``workers`` readers of ``size`` px tiles from one slide level, in batches of at most ``batch``."""

    def __init__(self, slide: str, level: int, size: int, batch: int, workers: int, processes: bool,
                 slots: int = 4):
        self.slide, self.level, self.size, self.workers = slide, level, size, max(1, workers)
        shape = (batch, size, size, 3)
        self._free: queue.Queue[int] = queue.Queue()
        for slot in range(slots):
            self._free.put(slot)
        if processes:
            self._backend: _Backend = _ProcessBackend(slide, level, size, shape, slots, self.workers)
        else:
            self._backend = _ThreadBackend(slide, level, size, shape, slots, self.workers)

    @contextmanager
    def batch(self, origins: Sequence[tuple[int, int]], owners: Sequence[int] = ()) -> Iterator[np.ndarray]:
        """A full (batch, size, size, 3) uint8 slot whose first N rows are the tiles at level (y, x) ``origins``.

        The rows after N hold whatever an earlier batch left: a model always
        given full batches compiles once per run (XLA and tf.function compile
        again for every new batch shape, seconds on a GPU).  Valid inside the
        ``with`` only.  ``owners``: the reader of each tile (processes; see ``column_owners``).
        """
        slot = self._free.get()  # waits while every slot is in use: bounded read-ahead
        try:
            yield self._backend.read(slot, origins, owners or [i % self.workers for i in range(len(origins))])
        finally:
            self._free.put(slot)

    def close(self) -> None:
        self._backend.close()


class _Backend:
    def read(self, slot: int, origins: Sequence[tuple[int, int]], owners: Sequence[int]) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        pass


class _ThreadBackend(_Backend):
    def __init__(self, slide, level, size, shape, slots, workers):
        self.slide, self.level, self.size, self.workers = slide, level, size, workers
        self.buffers = [np.empty(shape, np.uint8) for _ in range(slots)]
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="cancerseg-read")

    def read(self, slot, origins, owners):
        out = self.buffers[slot]
        handle = SlideHandle.shared(self.slide)
        futures = [self.pool.submit(read_tiles, handle, self.level, self.size, items, out)
                   for items in tiles_by_owner(origins, owners, self.workers).values()]
        for future in futures:
            future.result()
        return out

    def close(self):
        self.pool.shutdown(wait=False, cancel_futures=True)


class _ProcessBackend(_Backend):
    """Reader processes (spawned: no inherited model or GPU state) sharing the slots' memory."""

    def __init__(self, slide, level, size, shape, slots, workers):
        self.slide = slide
        context = multiprocessing.get_context("spawn")
        # anonymous shared memory handed to the children at start: nothing is left in /dev/shm if we are killed
        raw = [context.RawArray(ctypes.c_uint8, int(np.prod(shape))) for _ in range(slots)]
        self.buffers = [np.frombuffer(memoryview(r), np.uint8).reshape(shape) for r in raw]  # views, not copies
        self.requests = 0
        self.pending: list[dict[int, Future]] = [{} for _ in range(workers)]  # per reader: request -> future
        self.dead: set[int] = set()  # readers whose process has ended
        self.lock = threading.Lock()
        self.send_locks = [threading.Lock() for _ in range(workers)]
        self.connections, self.processes = [], []
        for index in range(workers):
            ours, theirs = context.Pipe()
            process = context.Process(target=_reader_process, args=(theirs, raw, shape, slide, level, size),
                                      name=f"cancerseg-reader-{index}", daemon=True)
            process.start()
            theirs.close()
            receiver = threading.Thread(target=self._receive, args=(index, ours), daemon=True,
                                        name=f"cancerseg-reader-{index}-replies")
            receiver.start()
            self.connections.append(ours)
            self.processes.append(process)

    def _receive(self, worker: int, connection) -> None:
        pending = self.pending[worker]
        while True:
            try:
                request, error = connection.recv()
            except (EOFError, OSError):  # the process ended: fail what it still owed (read() fails the rest)
                with self.lock:
                    self.dead.add(worker)
                    owed = list(pending.values())
                    pending.clear()
                for future in owed:
                    self._fail(future)
                return
            with self.lock:
                future = pending.pop(request)
            future.set_exception(ReadError(*error)) if error else future.set_result(None)

    def _fail(self, future: Future) -> None:
        future.set_exception(ReadError(self.slide, "a tile reader process ended unexpectedly"))

    def read(self, slot, origins, owners):
        by_owner = tiles_by_owner(origins, owners, len(self.connections))
        futures = []
        for owner, items in by_owner.items():
            future: Future = Future()
            futures.append(future)
            with self.lock:
                if owner in self.dead:
                    self._fail(future)
                    continue
                self.requests += 1
                request = self.requests
                self.pending[owner][request] = future
            try:
                with self.send_locks[owner]:
                    self.connections[owner].send((request, slot, items))
            except OSError:  # that process is gone (its receiver may have failed the request already)
                with self.lock:
                    unanswered = self.pending[owner].pop(request, None)
                if unanswered is not None:
                    self._fail(unanswered)
        # every request answered before the slot is given back, failed or not: no late writes into a reused slot
        errors = [future.exception() for future in futures]
        for error in errors:
            if error is not None:
                raise error
        return self.buffers[slot]

    def close(self):
        for connection, lock in zip(self.connections, self.send_locks):
            try:
                with lock:
                    connection.send(None)
            except OSError:
                pass
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
        for connection in self.connections:
            connection.close()


def _reader_process(connection, raw, shape, slide: str, level: int, size: int) -> None:
    buffers = [np.frombuffer(r, np.uint8).reshape(shape) for r in raw]
    while True:
        message = connection.recv()
        if message is None:
            return
        request, slot, items = message
        error = None
        try:
            read_tiles(SlideHandle.shared(slide), level, size, items, buffers[slot])
        except ReadError as err:
            error = (err.path, err.problem)
        except Exception as err:  # noqa: BLE001 - reported to the engine, which names the slide
            error = (slide, f"{type(err).__name__}: {err}")
        connection.send((request, error))
