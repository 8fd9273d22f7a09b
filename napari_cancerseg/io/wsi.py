"""Whole-slide images through OpenSlide (and their raw tiles), as lazy pyramids.

Nothing here reads pixels when a slide is opened: every level is a
``slide_levels.SlideLevel`` whose windows are read on demand through one shared
handle per file. OpenSlide handles are thread-safe, so napari's, the decoder
pool's and dask's threads share one.
"""

from __future__ import annotations

import collections
import ctypes
import math
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import openslide
import openslide.lowlevel

from ..errors import ReadError
from . import LayerData
from .rawtiles import RawTiles  # noqa: F401 - also wsi.RawTiles for tests
from .slide_levels import SlideLevel

#: Extensions that only whole-slide images use. ``.tif``/``.tiff`` are claimed
#: only when OpenSlide recognises the file, so plain TIFFs go to other readers.
WSI_EXTENSIONS = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif", ".svslide")
TIFF_EXTENSIONS = (".tif", ".tiff")

#: Chunks are grown to about this many pixels along each axis (a multiple of the
#: native tile where the tile is sane) so napari fetches few, aligned chunks.
TARGET_CHUNK = 512
#: Native tiles longer than this (NDPI strips are a whole row wide) are not
#: used as chunk sides: one chunk would then be a whole-row strip.
MAX_NATIVE_CHUNK = 2048
#: A single-level slide larger than this gets lazily downsampled levels.
SYNTHETIC_PYRAMID_ABOVE = 4096
#: ...until its smallest level fits in this many pixels.
SYNTHETIC_PYRAMID_TOP = 1024


#: openslide-python's ctypes binding of openslide_read_region, which fills a caller's
#: buffer (see SlideHandle._read_premultiplied).  A private name: without it (or on a
#: big-endian machine, whose ARGB words lie in another byte order) the public read_region is used.
_RAW_READ = getattr(openslide.lowlevel, "_read_region", None) if sys.byteorder == "little" else None


#: DICOM's VL Whole Slide Microscopy Image Storage: OpenSlide 4 opens a series of these as one slide.
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"
DICOM_EXTENSIONS = (".dcm", ".dicom")


def claims(path: str) -> bool:
    """True for paths this backend opens (by extension; TIFFs only if OpenSlide knows them; DICOM only
    whole-slide instances and folders of them, radiology DICOM stays with ``io.dicom``)."""
    lower = path.lower()
    if lower.endswith(WSI_EXTENSIONS):
        return True
    if os.path.isdir(path) or lower.endswith(DICOM_EXTENSIONS):
        try:
            return dicom_wsi_instance(path) is not None
        except ReadError:
            return True  # a folder of several slides: ours to refuse with a message
    if lower.endswith(TIFF_EXTENSIONS) and os.path.isfile(path):
        try:
            return openslide.OpenSlide.detect_format(path) is not None
        except openslide.OpenSlideError:
            return False
    return False


def _wsi_header(path: str):
    """The DICOM header of ``path`` if it is a whole-slide image instance, else None (never reads pixels)."""
    import pydicom

    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            if fh.read(4) != b"DICM":
                return None
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[
            "SOPClassUID", "SeriesInstanceUID", "ImageType", "TotalPixelMatrixColumns", "TotalPixelMatrixRows"])
    except (OSError, ValueError, EOFError):
        return None
    except Exception:  # noqa: BLE001 - pydicom's errors on broken files: not ours, io.dicom will say why
        return None
    return header if str(header.get("SOPClassUID", "")) == WSI_SOP_CLASS else None


def dicom_wsi_instance(path: str) -> str | None:
    """The instance OpenSlide opens for ``path``: the file itself if it is a DICOM WSI instance; for a folder
    holding one DICOM WSI series, its largest VOLUME instance (OpenSlide finds the series' other files beside
    it: lower levels, label, overview). None if ``path`` is not DICOM WSI; a ReadError for several series."""
    if not os.path.isdir(path):
        return path if _wsi_header(path) is not None else None
    names = sorted(n for n in os.listdir(path) if not n.startswith(".") and os.path.isfile(os.path.join(path, n)))
    if not names or _wsi_header(os.path.join(path, names[0])) is None:
        return None  # decided by the first file, so radiology folders of many slices cost one header
    volumes: dict[str, tuple[int, str]] = {}
    for name in names:
        header = _wsi_header(os.path.join(path, name))
        if header is not None and "VOLUME" in list(header.get("ImageType", [])):
            size = int(header.get("TotalPixelMatrixColumns", 0)) * int(header.get("TotalPixelMatrixRows", 0))
            series = str(header.get("SeriesInstanceUID", ""))
            if size > volumes.get(series, (-1, ""))[0]:
                volumes[series] = (size, os.path.join(path, name))
    if len(volumes) > 1:
        raise ReadError(path, f"holds {len(volumes)} DICOM whole-slide image series; open a file of the one you want")
    return next(iter(volumes.values()))[1] if volumes else None


class SlideHandle:
    """One shared, thread-safe OpenSlide per file, reopened by path after pickling.

    Pickling by path (not by C handle) lets dask.distributed workers that see
    the same shared storage read the slide themselves.  ``reads`` counts
    ``read_region`` calls per level, which tests and benchmarks use to prove
    that opening a slide reads no level-0 pixels.
    """

    _shared: dict[tuple[str, float], SlideHandle] = {}
    _shared_lock = threading.Lock()

    def __init__(self, path: str):
        self.path = os.fspath(path)
        try:
            self.slide = openslide.OpenSlide(self.path)
        except openslide.OpenSlideUnsupportedFormatError:
            raise ReadError(self.path, _diagnose_unsupported(self.path)) from None
        except openslide.OpenSlideError as err:
            raise ReadError(self.path, f"OpenSlide cannot open this slide: {err}") from None
        # OpenSlide's properties call into C and build new tuples on every access: read once (hot path)
        self.downsamples: tuple[float, ...] = tuple(self.slide.level_downsamples)
        self.reads: collections.Counter[int] = collections.Counter()
        self._buffers = threading.local()  # each reader thread's pixel buffer, reused read after read
        self._count_lock = threading.Lock()
        background = self.slide.properties.get(openslide.PROPERTY_NAME_BACKGROUND_COLOR)
        self.background = _parse_hex_colour(background) if background else (255, 255, 255)
        # levels stored as 8-bit RGB TIFF tiles are decoded straight from their bytes (5-8x OpenSlide's rate)
        self.raw: RawTiles | None = None
        if os.environ.get("CANCERSEG_RAW_TILES", "1") != "0":
            self.raw = RawTiles.open(self.path, self.slide, self.read_openslide)

    @classmethod
    def shared(cls, path: str | os.PathLike) -> SlideHandle:
        """The process-wide handle for ``path``; a file changed on disk is reopened."""
        real = os.path.realpath(os.fspath(path))
        if os.path.isdir(real):  # a DICOM WSI series: OpenSlide opens one of its instances
            real = dicom_wsi_instance(real) or real
        try:
            key = (real, os.stat(real).st_mtime)
        except OSError as err:
            raise ReadError(path, f"cannot open: {err.strerror}") from None
        with cls._shared_lock:
            handle = cls._shared.get(key)
            if handle is None:
                handle = cls(real)
                cls._shared[key] = handle
            return handle

    def __reduce__(self):
        return (SlideHandle.shared, (self.path,))

    def __dask_tokenize__(self):
        return ("SlideHandle", self.path, os.stat(self.path).st_mtime)

    def read(self, level: int, x: int, y: int, width: int, height: int, out: np.ndarray | None = None) -> np.ndarray:
        """RGB uint8 pixels of a region given in *level* pixel coordinates (written into ``out`` if given).

        Transparent pixels (outside scanned areas) are composited on the
        slide's background colour, as viewers show them.
        """
        with self._count_lock:
            self.reads[level] += 1
        if self.raw is not None and level in self.raw.levels:
            return self.raw.read(level, x, y, width, height, self.background, out)
        return self.read_openslide(level, x, y, width, height, out)

    def read_raw_tile(self, level: int, row: int, col: int) -> np.ndarray | None:
        """Native tile (row, col) of a raw level as decoded, read-only, uncropped at the level's edges; None where
        the slide has no such tile. Not kept in the slide's tile cache: for a caller with a cache of its own."""
        assert self.raw is not None and level in self.raw.levels, "a level read from its raw tiles"
        with self._count_lock:
            self.reads[level] += 1
        return self.raw.tile(level, row * self.raw.levels[level].columns + col, cache=False)

    def read_openslide(self, level: int, x: int, y: int, width: int, height: int,
                       out: np.ndarray | None = None) -> np.ndarray:
        """``read`` through OpenSlide itself, whatever the level's storage (the raw-tile reader's reference)."""
        downsample = self.downsamples[level]
        origin = (int(round(x * downsample)), int(round(y * downsample)))
        try:
            if _RAW_READ is not None and width > 0 and height > 0:
                return self._read_premultiplied(level, origin, width, height, out)
            rgba = np.asarray(self.slide.read_region(origin, level, (width, height)))
        except openslide.OpenSlideError as err:
            raise ReadError(
                self.path, f"failed to read level {level} region x={x} y={y} {width}x{height}: {err}"
            ) from None
        return composite_on_background(rgba, self.background, out)

    def _read_premultiplied(self, level: int, origin: tuple[int, int], width: int, height: int,
                            out: np.ndarray | None) -> np.ndarray:
        """OpenSlide's own premultiplied ARGB, read into this thread's reused buffer and composited from there.

        openslide-python's ``read_region`` allocates and zero-fills a new buffer,
        un-premultiplies it and wraps it in PIL, whose ``tobytes`` copies it
        again, all holding the GIL: with 16 reader threads that was a third of
        the tiled engine's GIL time.  Over an opaque colour, premultiplied
        pixels composite as C + (1 - alpha) * background, so nothing is lost.
        """
        buffer = getattr(self._buffers, "pixels", None)
        if buffer is None or buffer.shape != (height, width):
            buffer = self._buffers.pixels = np.empty((height, width), np.uint32)
        raw_read = _RAW_READ
        assert raw_read is not None  # read_openslide comes here only when it is there
        raw_read(self.slide._osr, buffer.ctypes.data_as(ctypes.POINTER(ctypes.c_uint32)),
                 origin[0], origin[1], level, width, height)
        bgra = buffer.view(np.uint8).reshape(height, width, 4)  # little-endian ARGB words: B, G, R, A bytes
        return composite_on_background(bgra, self.background, out, channels=(2, 1, 0), premultiplied=True)

    def close(self) -> None:
        if self.raw is not None:
            self.raw.close()
        self.slide.close()


def composite_on_background(pixels: np.ndarray, background: tuple[int, int, int], out: np.ndarray | None = None,
                            channels: tuple[int, int, int] = (0, 1, 2), premultiplied: bool = False) -> np.ndarray:
    """Alpha-composite (h, w, 4) uint8 pixels, alpha last, onto an opaque colour (into ``out`` if given).

    ``channels``: where red, green and blue are (OpenSlide's own buffer is B, G, R, A).
    ``premultiplied``: colours already multiplied by alpha (OpenSlide's), else straight (PIL's RGBA).
    """
    if out is None:
        out = np.empty(pixels.shape[:-1] + (3,), np.uint8)
    if _opaque(pixels):  # the usual case inside tissue: no arithmetic needed
        for index, channel in enumerate(channels):  # 3x faster than one strided 4 -> 3 channel copy
            out[..., index] = pixels[..., channel]
        return out
    a = pixels[..., 3:].astype(np.float32) / 255.0
    rgb = pixels[..., list(channels)].astype(np.float32)
    if not premultiplied:
        rgb *= a
    out[...] = np.clip(np.rint(rgb + np.asarray(background, np.float32) * (1.0 - a)), 0, 255)
    return out


def _opaque(pixels: np.ndarray) -> bool:
    """Every alpha (the 4th byte) is 255: on contiguous pixels, one SIMD min over little-endian 32-bit words."""
    if pixels.flags.c_contiguous:
        return int(pixels.view("<u4").min()) >= 0xFF000000
    return int(pixels[..., 3].min()) == 255


def _parse_hex_colour(text: str) -> tuple[int, int, int]:
    text = text.lstrip("#")
    return (int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16))


def _diagnose_unsupported(path: str) -> str:
    """Say why OpenSlide refused a file: empty, truncated, broken TIFF or unknown format."""
    import logging

    import tifffile

    size = os.path.getsize(path)
    if size == 0:
        return "the file is empty"
    tiff_log = logging.getLogger("tifffile")
    level, tiff_log.level = tiff_log.level, logging.CRITICAL  # we report the problem ourselves
    try:
        with tifffile.TiffFile(path) as tif:
            pages = len(tif.pages)
            data_end = max(
                (o + n for page in tif.pages for o, n in zip(page.dataoffsets, page.databytecounts)),
                default=0,
            )
            first = tif.pages[0] if pages else None
            what = (f"{first.shape[1] if len(first.shape) > 1 else first.shape[0]} x {first.shape[0]} px "
                    f"{first.dtype}, {'tiled' if first.is_tiled else 'in strips'}") if first is not None else ""
    except Exception as err:  # noqa: BLE001 - any TIFF failure is the diagnosis
        return (
            f"not a readable whole-slide image ({size} bytes): OpenSlide does not recognise it "
            f"and it is not a valid TIFF ({type(err).__name__}: {err})"
        )
    finally:
        tiff_log.level = level
    if pages == 0 or data_end > size:
        return (
            f"the file is truncated or corrupt ({size} bytes): its TIFF structure points "
            "to image data beyond the end of the file"
        )
    if not path.lower().endswith(TIFF_EXTENSIONS):
        return (
            f"OpenSlide does not recognise it as a whole-slide image ({size} bytes, a TIFF with "
            f"{pages} readable pages, the first {what}); the file may be truncated, or it is a plain TIFF, not a slide"
        )
    return (
        f"not a whole-slide image: it is a plain TIFF ({size} bytes, {pages} page(s), the first {what}) "
        "that OpenSlide does not recognise as a slide (no scanner metadata or tiled pyramid it knows), "
        "so this plugin does not read it; open it with napari's own TIFF reader"
    )


def explain_unread(path: str) -> str | None:
    """Why a .tif/.tiff no backend claimed is not read as a slide (None for other files)."""
    if not path.lower().endswith(TIFF_EXTENSIONS) or not os.path.isfile(path):
        return None
    return _diagnose_unsupported(path)


def chunk_length(tile: int, extent: int) -> int:
    """Chunk side along one axis: a multiple of the native tile near TARGET_CHUNK."""
    if 0 < tile <= MAX_NATIVE_CHUNK:
        length = tile * max(1, round(TARGET_CHUNK / tile))
    else:
        length = TARGET_CHUNK
    return max(1, min(length, extent))


def downsample_by_two(level: da.Array | SlideLevel) -> da.Array:
    """Area-average a (h, w, 3) uint8 level by 2, lazily and chunk by chunk."""
    if isinstance(level, SlideLevel):
        level = level.to_dask()
    height, width = (level.shape[0] // 2) * 2, (level.shape[1] // 2) * 2
    even = level[:height, :width].rechunk((2 * TARGET_CHUNK, 2 * TARGET_CHUNK, 3))
    halved = da.coarsen(np.mean, even, {0: 2, 1: 2}, dtype=np.float32)
    return da.round(halved).astype(np.uint8)


@dataclass
class SlideInfo:
    """What a reader shows of a slide: levels, scale and the metadata napari keeps."""

    path: str
    levels: list[SlideLevel | da.Array]  # the slide's own levels, then any synthetic (dask) ones
    mpp: tuple[float, float] | None  # (y, x) micrometres per level-0 pixel
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def scale(self) -> tuple[float, float]:
        return self.mpp if self.mpp is not None else (1.0, 1.0)


@dataclass(frozen=True)
class ReadLevel:
    """The OpenSlide level a tool reads: its index, downsample, µm/px (None if unknown) and size."""

    level: int
    downsample: float
    mpp: float | None
    width: int
    height: int

    def note(self, target_mpp: float | None, what: str) -> str | None:
        """A note when the level is more than 10% away from the µm/px asked for."""
        if target_mpp and self.mpp and abs(self.mpp / target_mpp - 1) > 0.1:
            return f"{what} level {self.level} at {self.mpp:.3f} µm/px, the nearest to {target_mpp} µm/px"
        return None


def read_level(path: str | os.PathLike, mpp: float | None = None, level: int | None = None) -> ReadLevel:
    """``level`` if given, else the OpenSlide level nearest ``mpp`` (log scale), else level 0."""
    slide = SlideHandle.shared(path).slide
    downsamples = list(slide.level_downsamples)
    if level is not None and not 0 <= level < len(downsamples):
        raise ReadError(os.fspath(path), f"level {level} does not exist (the slide has {len(downsamples)})")
    info = open_slide(path)
    base = info.mpp[0] if info.mpp else None
    if level is None:
        level = int(np.argmin([abs(np.log(base * d / mpp)) for d in downsamples])) if base and mpp else 0
    width, height = slide.level_dimensions[level]
    return ReadLevel(level, float(downsamples[level]), base * downsamples[level] if base else None, width, height)


def open_slide(path: str | os.PathLike) -> SlideInfo:
    """Open a slide lazily: array-like levels, µm/px and metadata, no pixels read."""
    handle = SlideHandle.shared(path)
    slide = handle.slide
    props = slide.properties
    levels: list[SlideLevel | da.Array] = [SlideLevel(handle, i) for i in range(slide.level_count)]

    synthetic = 0
    if slide.level_count == 1 and max(slide.dimensions) > SYNTHETIC_PYRAMID_ABOVE:
        while max(levels[-1].shape[:2]) > SYNTHETIC_PYRAMID_TOP:
            levels.append(downsample_by_two(levels[-1]))
            synthetic += 1

    mpp_x = _float_or_none(props.get(openslide.PROPERTY_NAME_MPP_X))
    mpp_y = _float_or_none(props.get(openslide.PROPERTY_NAME_MPP_Y))
    mpp = (mpp_y, mpp_x) if mpp_x and mpp_y else None
    base_h, base_w = levels[0].shape[:2]
    base_scale = mpp if mpp is not None else (1.0, 1.0)
    level_scales = [
        (base_scale[0] * base_h / lvl.shape[0], base_scale[1] * base_w / lvl.shape[1])
        for lvl in levels
    ]
    metadata = {
        "format": "whole-slide image",
        "path": handle.path,
        "vendor": props.get(openslide.PROPERTY_NAME_VENDOR),
        "objective_power": _float_or_none(props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER)),
        "mpp": mpp,
        "scale_units": "micrometre" if mpp is not None else "pixel",
        "scale_note": None if mpp is not None else "slide has no µm/px; scale set to 1 pixel",
        "level_dimensions": [tuple(lvl.shape[:2]) for lvl in levels],
        "level_downsamples": [base_w / lvl.shape[1] for lvl in levels],
        "level_scales": level_scales,
        "openslide_levels": slide.level_count,
        "synthetic_levels": synthetic,
        "chunks": [lvl.chunksize[:2] for lvl in levels],
        "background_color": handle.background,
        "associated_images": sorted(slide.associated_images.keys()),
        "properties": dict(props),
    }
    return SlideInfo(path=handle.path, levels=levels, mpp=mpp, metadata=metadata)


def read_associated_image(path: str | os.PathLike, name: str) -> np.ndarray:
    """An associated image (label, macro, thumbnail...) as RGB uint8, on request."""
    handle = SlideHandle.shared(path)
    images = handle.slide.associated_images
    if name not in images:
        raise ReadError(path, f"has no associated image {name!r} (it has: {', '.join(images) or 'none'})")
    return composite_on_background(np.asarray(images[name]), handle.background)


def read(path: str) -> list[LayerData]:
    """napari layer data: one RGB multiscale image layer."""
    info = open_slide(path)
    name = Path(path).name
    if info.metadata["vendor"] == "dicom" and not os.path.isdir(path):
        name = Path(path).parent.name  # a DICOM WSI instance is one file of the slide's folder
    kwargs = {
        "name": name,
        "rgb": True,
        "multiscale": True,
        "contrast_limits": [0, 255],  # napari would otherwise compute them from pixels
        "scale": info.scale,
        "units": ("um", "um") if info.mpp is not None else ("pixel", "pixel"),
        "metadata": info.metadata,
    }
    return [(info.levels, kwargs, "image")]


def _float_or_none(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) and value > 0 else None
