"""Raw-tile reads (compressed TIFF tiles decoded by imagecodecs) give OpenSlide's pixels, to the last bit.

Every case compares ``SlideHandle.read`` (raw tiles where the level allows) with
``SlideHandle.read_openslide`` (OpenSlide's read_region) on real tissue, and
checks that the comparison can fail: the same window moved by one pixel differs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import openslide
import pytest
import tifffile

from napari_cancerseg.io import wsi

from ..conftest import data_path


@dataclass(frozen=True)
class Case:
    """A slide, which of its levels must be read raw, and which must stay with OpenSlide."""

    name: str
    raw_levels: tuple[int, ...]
    openslide_levels: tuple[int, ...] = ()


def pyramid_tiff(path, tile: int = 256, levels: int = 3, jpeg: bool = True) -> str:
    """A pyramidal tiled TIFF of real H&E (OpenSlide reads it as generic tiled TIFF), level 0 not a tile multiple."""
    source = openslide.OpenSlide(data_path("wsi/CMU-1-Small-Region.svs"))
    tissue = np.asarray(source.read_region((0, 0), 0, source.dimensions).convert("RGB"))[:2900, :2100]
    images = [tissue]
    for _ in range(levels - 1):
        prev = images[-1]
        h, w = prev.shape[0] // 2 * 2, prev.shape[1] // 2 * 2
        images.append(prev[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8))
    with tifffile.TiffWriter(path) as tif:
        for index, image in enumerate(images):
            tif.write(image, tile=(tile, tile), compression="jpeg" if jpeg else "zlib", photometric="rgb",
                      subfiletype=1 if index else 0)
    return str(path)


SLIDES = {
    "svs": (lambda tmp: data_path("wsi/CMU-1-Small-Region.svs"), Case("svs", (0,))),
    # NDPI: its restart intervals, 8-row strips as wide as the level, read raw; 4-6 are levels OpenSlide scales
    "ndpi": (lambda tmp: data_path("wsi/test3-DAPI-2-387.ndpi"), Case("ndpi", (0, 1, 2, 3), (4, 5, 6))),
    "tiff-jpeg": (lambda tmp: pyramid_tiff(tmp / "pyramid.tif"), Case("tiff-jpeg", (0, 1, 2))),
    "tiff-deflate": (lambda tmp: pyramid_tiff(tmp / "deflate.tif", tile=128, jpeg=False),
                     Case("tiff-deflate", (0, 1, 2))),
}

#: (x, y, width, height) as fractions of the level: inside, across tile edges at odd offsets, past each edge.
WINDOWS = {
    "inside": (0.3, 0.4, 300, 200),
    "odd offset": (0.51, 0.23, 517, 263),
    "past right and bottom": (0.9, 0.95, 512, 512),
    "before left and top": (-0.02, -0.01, 256, 256),
}


@pytest.fixture(params=list(SLIDES))
def slide(request, tmp_path, fresh_slide_handles):
    make, case = SLIDES[request.param]
    return wsi.SlideHandle.shared(make(tmp_path)), case


def _window(handle, level, fx, fy, width, height):
    level_width, level_height = handle.slide.level_dimensions[level]
    return int(fx * level_width), int(fy * level_height), width, height


@pytest.mark.parametrize("window", list(WINDOWS))
@pytest.mark.parametrize("background", [None, (240, 230, 10)])
def test_raw_reads_equal_openslide(slide, window, background):
    handle, case = slide
    assert set(handle.raw.levels if handle.raw else ()) == set(case.raw_levels)
    if background:
        handle.background = background
    for level in case.raw_levels:
        x, y, width, height = _window(handle, level, *WINDOWS[window])
        raw = handle.read(level, x, y, width, height)
        reference = handle.read_openslide(level, x, y, width, height)
        np.testing.assert_array_equal(raw, reference, err_msg=f"{case.name} level {level} at {x}, {y}")
        shifted = handle.read_openslide(level, x + 1, y, width, height)
        assert not np.array_equal(raw, shifted), "a one-pixel shift must show (no texture in the window?)"
        if window.startswith(("past", "before")):  # the edge was reached: background there, as OpenSlide composites it
            assert (raw == np.asarray(handle.background, np.uint8)).all(axis=-1).any()


def test_openslide_levels_still_read(slide):
    handle, case = slide
    for level in case.openslide_levels:
        x, y, width, height = _window(handle, level, 0.1, 0.1, 64, 64)
        np.testing.assert_array_equal(handle.read(level, x, y, width, height),
                                      handle.read_openslide(level, x, y, width, height))


def test_reads_into_a_callers_buffer(slide):
    handle, case = slide
    level = (case.raw_levels or case.openslide_levels)[0]
    out = np.zeros((128, 96, 3), np.uint8)
    x, y, _, _ = _window(handle, level, 0.4, 0.4, 96, 128)
    assert handle.read(level, x, y, 96, 128, out=out) is out
    np.testing.assert_array_equal(out, handle.read_openslide(level, x, y, 96, 128))


def test_a_level_whose_test_tile_disagrees_falls_back_to_openslide(tmp_path, fresh_slide_handles):
    """The guard itself: a reference that differs by one grey level keeps every level with OpenSlide."""
    path = data_path("wsi/CMU-1-Small-Region.svs")
    handle = wsi.SlideHandle(path)

    def off_by_one(level, x, y, width, height):
        return handle.read_openslide(level, x, y, width, height) ^ np.uint8(1)

    assert wsi.RawTiles.open(path, handle.slide, off_by_one) is None
    assert wsi.RawTiles.open(path, handle.slide, handle.read_openslide) is not None


def test_raw_reads_can_be_switched_off(monkeypatch, fresh_slide_handles):
    monkeypatch.setenv("CANCERSEG_RAW_TILES", "0")
    assert wsi.SlideHandle(data_path("wsi/CMU-1-Small-Region.svs")).raw is None


def test_overlapping_windows_decode_each_tile_once_and_the_cache_stays_bounded(tmp_path, fresh_slide_handles):
    """The engine's tiles overlap (stride 448 for 512 px): a tile the last window decoded is not decoded again."""
    handle = wsi.SlideHandle.shared(pyramid_tiff(tmp_path / "pyramid.tif"))
    raw, level = handle.raw, 0
    tile = raw.levels[level].tile_width
    windows = [(x, y) for y in range(0, 1300, 448) for x in range(0, 1300, 448)]
    touched = {(row, col) for x, y in windows for row in range(y // tile, (y + 511) // tile + 1)
               for col in range(x // tile, (x + 511) // tile + 1)}
    raw.clear_cache()  # opening decoded one tile to check it against OpenSlide
    before = raw.decoded
    first = [handle.read(level, x, y, 512, 512).copy() for x, y in windows]
    assert raw.decoded - before == len(touched)  # each tile once, where each window alone would decode 9
    again = [handle.read(level, x, y, 512, 512) for x, y in windows]
    assert raw.decoded - before == len(touched)  # all from the cache...
    for x_y, one, two in zip(windows, first, again):
        np.testing.assert_array_equal(one, two)  # ...the same pixels, and OpenSlide's
        np.testing.assert_array_equal(two, handle.read_openslide(level, *x_y, 512, 512))

    raw.cache_bytes = 4 * tile * tile * 3  # room for four tiles: the oldest go first
    raw.clear_cache()
    for x, y in windows:
        handle.read(level, x, y, 512, 512)
        assert raw._cached_bytes <= raw.cache_bytes and len(raw._cache) <= 4
