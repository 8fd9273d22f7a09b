"""Slide levels read as their compressed TIFF tiles, decoded by imagecodecs with the GIL released.

OpenSlide's ``read_region`` decodes each tile, then paints it through cairo
into a premultiplied ARGB buffer, all in one call: on 2 cores that is 72-103
windows of 512 px per second, where decoding the same JPEG tiles with
libjpeg-turbo through imagecodecs reaches 540-830 (issue 16).  So, for the
levels of TIFF-family slides (Aperio SVS, generic tiled and pyramidal TIFF)
that are stored as tiles of 8-bit RGB up to 1024 px, and Hamamatsu NDPI levels
whose JPEG restart intervals are strips of at most 16 x 8192 px, a window is read here
as the tiles it touches: ``os.pread`` of each tile's bytes and tifffile's
decoder for the page (JPEG with its tables, JPEG 2000,
Deflate, LZW...), pasted into the caller's buffer.

Pixels must be OpenSlide's, exactly: a level is taken only if the page's
size is the OpenSlide level's and a test tile decoded here equals OpenSlide's
own read of it (``RawTiles.open``).  Every other level (MRXS, VMS, SCN, BIF, NDPI
levels with longer intervals, levels OpenSlide makes by scaling, RGBA pages...) keeps OpenSlide.  Outside the
level, and where a tile is missing (sparse slides), the window shows the
slide's background colour, as OpenSlide's transparent pixels composited on it do.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

#: TIFF compressions that tifffile decodes with imagecodecs (the GIL released inside the codec).
DECODABLE = {1, 5, 7, 8, 32946, 33003, 33004, 33005, 34712, 50000}
#: Tiles longer than this are not read raw: a window would decode far more than it shows.
MAX_TILE_SIDE = 1024
#: NDPI restart intervals ("tiles" of a few rows) are read raw up to this size: a 1080-row screen decodes about
#: 135 of them, 26 MB at this width.
NDPI_MAX_STRIP_ROWS, NDPI_MAX_STRIP_WIDTH = 16, 8192
#: Decoded tiles a slide keeps (least recently used dropped first): overlapping windows decode each tile once.
#: 64 MiB holds 340 tiles of 256 px, three rows of tiles of a 28k px wide slide: the rows that the next row of
#: the engine's 512 px tiles (stride 448) shares with this one, and a viewer's few screens.
CACHE_BYTES = 64 << 20


@dataclass(frozen=True)
class RawLevel:
    """One slide level as a grid of compressed tiles in one TIFF page."""

    width: int
    height: int
    tile_width: int
    tile_height: int
    offsets: tuple[int, ...]
    byte_counts: tuple[int, ...]
    decode: Callable[..., Any]
    decode_options: dict[str, Any]

    @property
    def columns(self) -> int:
        return -(-self.width // self.tile_width)

    def tile(self, fd: int, index: int) -> np.ndarray | None:
        """Tile ``index`` (row-major) as (tile_height, tile_width, 3) uint8, or None if the slide has no such tile."""
        count = self.byte_counts[index]
        if count == 0:
            return None
        data = os.pread(fd, count, self.offsets[index])
        decoded, _, _ = self.decode(data, index, **self.decode_options)
        return decoded.reshape(decoded.shape[-3:])[..., :3]


class RawTiles:
    """The raw-tile levels of one slide file; ``read`` fills windows of them (thread-safe, one shared fd)."""

    def __init__(self, path: str, levels: dict[int, RawLevel], cache_bytes: int = CACHE_BYTES):
        self.path, self.levels = path, levels
        self._fd = os.open(path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple[int, int], np.ndarray | None] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._cached_bytes, self.cache_bytes = 0, cache_bytes
        self.decoded = 0  # tiles decoded (not found in the cache): what a benchmark or a test counts

    def clear_cache(self) -> None:
        with self._cache_lock:
            self._cache.clear()
            self._cached_bytes = 0

    def tile(self, index: int, tile_index: int, cache: bool = True) -> np.ndarray | None:
        """Tile ``tile_index`` of level ``index``, decoded once while it stays in the cache (read-only).

        ``cache=False``: decoded anew and not kept, for a caller with a cache of its own (the viewer's blocks).
        """
        key = (index, tile_index)
        if cache:
            with self._cache_lock:
                if key in self._cache:
                    self._cache.move_to_end(key)
                    return self._cache[key]
        tile = self.levels[index].tile(self._fd, tile_index)  # decoded outside the lock: threads decode at once
        if tile is not None:
            tile.flags.writeable = False  # shared by every window (or the caller's cache) that shows it
        size = _cached_size(tile)
        with self._cache_lock:
            self.decoded += 1
            if cache and key not in self._cache and size <= self.cache_bytes:
                self._cache[key] = tile
                self._cached_bytes += size
                while self._cached_bytes > self.cache_bytes:
                    _, dropped = self._cache.popitem(last=False)
                    self._cached_bytes -= _cached_size(dropped)
        return tile

    @classmethod
    def open(cls, path: str, slide: Any, read_openslide: Callable[..., np.ndarray]) -> RawTiles | None:
        """The raw levels of ``path`` that give OpenSlide's pixels exactly, or None if there are none.

        ``slide``: its OpenSlide object (level sizes); ``read_openslide(level, x, y, w, h)``: OpenSlide's
        read of a window, composited as the handle composites it, to check one tile per level against.
        """
        try:
            import tifffile
        except ImportError:  # pragma: no cover - tifffile is a dependency
            return None
        try:
            with tifffile.TiffFile(path) as tif:
                candidates = [_raw_level(page) for page in tif.pages]
        except Exception as err:  # noqa: BLE001 - not a TIFF tifffile can read: OpenSlide reads it
            log.debug("%s: no raw tiles (%s: %s)", path, type(err).__name__, err)
            return None
        by_size: dict[tuple[int, int], RawLevel] = {}
        for level in candidates:
            if level is not None:
                by_size.setdefault((level.width, level.height), level)
        matched = {index: by_size[dims] for index, dims in enumerate(slide.level_dimensions) if dims in by_size}
        if not matched:
            return None
        raw = cls(path, matched)
        for index in list(matched):
            if not raw._agrees_with_openslide(index, read_openslide):
                del raw.levels[index]
        if not raw.levels:
            raw.close()
            return None
        return raw

    def _agrees_with_openslide(self, index: int, read_openslide: Callable[..., np.ndarray]) -> bool:
        """One whole tile near the level's centre, decoded here and read by OpenSlide, is the same to the last bit."""
        level = self.levels[index]
        row, col = (level.height // 2) // level.tile_height, (level.width // 2) // level.tile_width
        x, y = col * level.tile_width, row * level.tile_height
        width, height = min(level.tile_width, level.width - x), min(level.tile_height, level.height - y)
        try:
            mine = self.read(index, x, y, width, height, background=(255, 255, 255))
        except Exception as err:  # noqa: BLE001 - a page tifffile cannot decode: OpenSlide reads it
            log.debug("%s level %d: raw decode failed (%s)", self.path, index, err)
            return False
        theirs = read_openslide(index, x, y, width, height)
        return bool(np.array_equal(mine, theirs))

    def read(self, index: int, x: int, y: int, width: int, height: int, background: tuple[int, int, int],
             out: np.ndarray | None = None) -> np.ndarray:
        """RGB pixels of level ``index`` in [x, x + width) x [y, y + height) (level pixels), into ``out`` if given."""
        level = self.levels[index]
        if out is None:
            out = np.empty((height, width, 3), np.uint8)
        x1, y1 = min(x + width, level.width), min(y + height, level.height)
        x0, y0 = max(x, 0), max(y, 0)
        if x0 >= x1 or y0 >= y1 or (x0, y0, x1, y1) != (x, y, x + width, y + height):
            out[...] = background  # part of the window lies outside the level
        if x0 >= x1 or y0 >= y1:
            return out
        tw, th = level.tile_width, level.tile_height
        for row in range(y0 // th, (y1 - 1) // th + 1):
            for col in range(x0 // tw, (x1 - 1) // tw + 1):
                tile = self.tile(index, row * level.columns + col)
                ty, tx = row * th, col * tw
                top, bottom = max(y0, ty), min(y1, ty + th)
                left, right = max(x0, tx), min(x1, tx + tw)
                target = out[top - y:bottom - y, left - x:right - x]
                if tile is None:
                    target[...] = background
                else:
                    target[...] = tile[top - ty:bottom - ty, left - tx:right - tx]
        return out

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def __del__(self) -> None:  # the handle is shared for the process's life; close the fd with it
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _cached_size(tile: np.ndarray | None) -> int:
    """What a cache entry counts for: a missing tile (sparse slides) too, so that the entries stay bounded."""
    return 1024 if tile is None else tile.nbytes


def _raw_level(page: Any) -> RawLevel | None:
    """A page that is a tiled 8-bit RGB image in a codec tifffile decodes, as a RawLevel; else None."""
    try:
        if not page.is_tiled or page.compression not in DECODABLE or page.dtype != np.uint8:
            return None
        if page.samplesperpixel != 3 or page.planarconfig != 1 or page.imagedepth != 1 or page.tiledepth != 1:
            return None
        if getattr(page, "is_ndpi", False):
            # NDPI: one JPEG per level, its restart intervals made "tiles" by tifffile (here 8-row strips as wide
            # as the level), decoded with the JPEG header tifffile builds for them. Taken while a strip stays
            # small: OpenSlide decodes the same whole intervals, but paints them through cairo
            if page.tilelength > NDPI_MAX_STRIP_ROWS or page.tilewidth > NDPI_MAX_STRIP_WIDTH:
                return None
        elif max(page.tilewidth, page.tilelength) > MAX_TILE_SIDE:
            return None
        height, width = page.imagelength, page.imagewidth
        options: dict[str, Any] = {}
        if getattr(page, "jpegtables", None) is not None:
            options["jpegtables"] = page.jpegtables
        if getattr(page, "jpegheader", None) is not None:  # NDPI: the header its intervals are decoded with
            options["jpegheader"] = page.jpegheader
        return RawLevel(int(width), int(height), int(page.tilewidth), int(page.tilelength),
                        tuple(int(o) for o in page.dataoffsets), tuple(int(n) for n in page.databytecounts),
                        page.decode, options)
    except Exception:  # noqa: BLE001 - an odd page is simply not read raw
        return None
