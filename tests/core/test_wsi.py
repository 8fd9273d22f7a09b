"""Whole-slide images: the facts of ../shared/data/README.md, laziness, and bad files."""

from __future__ import annotations

import numpy as np
import openslide
import pytest
import tifffile
from PIL import Image

from napari_cancerseg.errors import ReadError
from napari_cancerseg.io import wsi

from ..conftest import data_path

# (file, level-0 (height, width), levels, µm/px, objective, associated images) from the data README
SLIDES = [
    ("wsi/CMU-1-Small-Region.svs", (2967, 2220), 1, 0.499, 20, {"label", "macro", "thumbnail"}),
    ("wsi/test3-DAPI-2-387.ndpi", (4864, 3968), 7, 0.228, 40, {"macro"}),
]


@pytest.mark.parametrize("relative, shape, n_levels, mpp, objective, associated", SLIDES)
def test_slide_facts(relative, shape, n_levels, mpp, objective, associated, fresh_slide_handles):
    (levels, kwargs, layer_type), = wsi.read(data_path(relative))
    assert layer_type == "image" and kwargs["rgb"] and kwargs["multiscale"]
    assert len(levels) == n_levels
    assert levels[0].shape == shape + (3,)
    assert all(level.dtype == np.uint8 for level in levels)
    assert kwargs["scale"] == pytest.approx((mpp, mpp), abs=5e-4)
    assert kwargs["contrast_limits"] == [0, 255]
    meta = kwargs["metadata"]
    assert meta["objective_power"] == objective
    assert set(meta["associated_images"]) == associated
    # every level's scale is µm per pixel of that level: level extent in µm is constant
    for level, level_scale in zip(levels, meta["level_scales"]):
        assert level.shape[0] * level_scale[0] == pytest.approx(shape[0] * mpp, rel=2e-3)
    # opening reads no pixels at all
    assert sum(fresh_slide_handles.shared(data_path(relative)).reads.values()) == 0


def test_chunks_follow_native_tiles():
    (levels, _, _), = wsi.read(data_path("wsi/CMU-1-Small-Region.svs"))
    assert levels[0].chunksize[:2] == (480, 480)  # Aperio tiles are 240 px: two per chunk
    (levels, _, _), = wsi.read(data_path("wsi/test3-DAPI-2-387.ndpi"))
    # NDPI stores whole-row strips 8 px high: chunks are 512-row bands, not 8-px strips
    assert levels[0].chunksize[:2] == (512, 512)


def test_ndpi_lowest_level_reads_no_level0_tile(fresh_slide_handles):
    path = data_path("wsi/test3-DAPI-2-387.ndpi")
    (levels, _, _), = wsi.read(path)
    lowest = np.asarray(levels[-1])
    reads = fresh_slide_handles.shared(path).reads
    assert lowest.shape == (76, 62, 3)
    assert reads[6] >= 1 and reads[0] == 0
    assert set(reads) == {6}


def test_pixels_equal_openslide_composited_on_white():
    path = data_path("wsi/CMU-1-Small-Region.svs")
    (levels, _, _), = wsi.read(path)
    region = levels[0][300:812, 700:1400]  # spans several blocks (tiles of 240 px)
    reference = Image.new("RGBA", (700, 512), (255, 255, 255, 255))
    reference.alpha_composite(openslide.OpenSlide(path).read_region((700, 300), 0, (700, 512)))
    np.testing.assert_array_equal(region, np.asarray(reference)[..., :3])


@pytest.mark.parametrize("relative, level, x, y, size", [
    ("wsi/CMU-1-Small-Region.svs", 0, 700, 300, 512),  # tissue: opaque
    ("wsi/CMU-1-Small-Region.svs", 0, 2000, 2800, 512),  # past the right and bottom edges: transparent there
    ("wsi/CMU-1-Small-Region.svs", 0, -100, -40, 256),  # before the left and top edges
    ("wsi/test3-DAPI-2-387.ndpi", 2, 900, 1100, 300),  # another format, a lower level, across its edges
])
@pytest.mark.parametrize("background", [None, (240, 230, 10)])
def test_direct_reads_equal_openslide_public_reads(relative, level, x, y, size, background, monkeypatch):
    """The engine's reads (OpenSlide's premultiplied pixels in a reused buffer) equal the public read_region's."""
    handle = wsi.SlideHandle(data_path(relative))
    if background:
        handle.background = background
    assert wsi._RAW_READ is not None  # else this test compares the public path with itself
    read = handle.read_openslide  # OpenSlide's own path (levels of TIFF tiles are read raw by handle.read)
    direct = [read(level, x, y, size, size), read(level, x + 7, y, size, size)]  # the buffer reused
    monkeypatch.setattr(wsi, "_RAW_READ", None)
    public = [read(level, x, y, size, size), read(level, x + 7, y, size, size)]
    for ours, theirs in zip(direct, public):
        np.testing.assert_array_equal(ours, theirs)
    if x < 0 or x + size > handle.slide.level_dimensions[level][0]:
        assert (direct[0] == np.asarray(handle.background, np.uint8)).all(axis=-1).any()  # the edge was reached


def test_composite_on_background_matches_pil():
    rng = np.random.default_rng(0)
    rgba = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
    background = (240, 230, 10)
    reference = Image.new("RGBA", (64, 64), background + (255,))
    reference.alpha_composite(Image.fromarray(rgba, "RGBA"))
    ours = wsi.composite_on_background(rgba, background)
    assert np.abs(ours.astype(int) - np.asarray(reference)[..., :3]).max() <= 1


def test_premultiplied_bgra_composites_as_straight_rgba():
    """OpenSlide's own pixels (B, G, R, A, colours times alpha) give what PIL's straight RGBA gives, within rounding."""
    rng = np.random.default_rng(2)
    rgba = rng.integers(0, 256, (64, 64, 4), dtype=np.uint8)
    premultiplied = np.rint(rgba[..., :3] * (rgba[..., 3:] / 255.0)).astype(np.uint8)
    bgra = np.concatenate([premultiplied[..., ::-1], rgba[..., 3:]], axis=-1)
    background = (240, 230, 10)
    straight = wsi.composite_on_background(rgba, background)
    ours = wsi.composite_on_background(bgra, background, channels=(2, 1, 0), premultiplied=True)
    assert np.abs(ours.astype(int) - straight).max() <= 1


@pytest.mark.parametrize("transparent", [None, (0, 0), (63, 63), (31, 17)])
def test_composite_of_opaque_and_one_transparent_pixel(transparent):
    """The opaque fast path must see a single non-opaque pixel anywhere (it tests all alphas at once)."""
    rgba = np.random.default_rng(1).integers(0, 256, (64, 64, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    if transparent:
        rgba[transparent + (3,)] = 0
    ours = wsi.composite_on_background(rgba, (10, 20, 30))
    expected = rgba[..., :3].copy()
    if transparent:
        expected[transparent] = (10, 20, 30)
    np.testing.assert_array_equal(ours, expected)
    np.testing.assert_array_equal(wsi.composite_on_background(rgba[:, ::-1], (10, 20, 30)), expected[:, ::-1])


def test_associated_image_on_request():
    label = wsi.read_associated_image(data_path("wsi/CMU-1-Small-Region.svs"), "label")
    assert label.ndim == 3 and label.shape[2] == 3 and label.dtype == np.uint8
    with pytest.raises(ReadError, match="no associated image 'overview'"):
        wsi.read_associated_image(data_path("wsi/CMU-1-Small-Region.svs"), "overview")


def _tissue_mosaic(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A slide-like image built from real H&E crops, a third of it left as white glass."""
    source = openslide.OpenSlide(data_path("wsi/CMU-1-Small-Region.svs"))
    tissue = np.asarray(source.read_region((0, 0), 0, source.dimensions).convert("RGB"))
    rng = np.random.default_rng(seed)
    canvas = np.full((height, width, 3), 255, np.uint8)
    for y in range(0, height, 512):
        for x in range(0, int(width * 0.66), 512):
            sy, sx = rng.integers(0, tissue.shape[0] - 512), rng.integers(0, tissue.shape[1] - 512)
            crop = tissue[sy:sy + 512, sx:sx + 512]
            canvas[y:y + 512, x:x + 512] = crop[: height - y, : width - x]
    return canvas


def test_single_level_big_slide_gets_lazy_levels(tmp_path, fresh_slide_handles):
    image = _tissue_mosaic(5000, 4500)
    path = tmp_path / "single_level.tif"
    tifffile.imwrite(path, image, tile=(256, 256), compression="jpeg", photometric="rgb")
    (levels, kwargs, _), = wsi.read(str(path))
    assert [lvl.shape[:2] for lvl in levels] == [(5000, 4500), (2500, 2250), (1250, 1125), (625, 562)]
    assert kwargs["metadata"]["synthetic_levels"] == 3
    # no µm/px in the file: scale 1, and the metadata says so
    assert kwargs["scale"] == (1.0, 1.0) and "no µm/px" in kwargs["metadata"]["scale_note"]
    assert sum(fresh_slide_handles.shared(str(path)).reads.values()) == 0
    level0 = np.asarray(levels[0]).astype(np.float64)
    expected = level0[:5000, :4500].reshape(2500, 2, 2250, 2, 3).mean(axis=(1, 3))
    expected = expected[:1250 * 2].reshape(1250, 2, 1125, 2, 3).mean(axis=(1, 3))
    assert np.abs(levels[2].compute().astype(float) - expected).max() <= 1.0


def test_plain_tiff_is_not_claimed(tmp_path):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, np.zeros((64, 64), np.uint8))  # striped, not a slide
    assert not wsi.claims(str(path))


@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_truncated_svs_names_file_and_problem(tmp_path, fraction):
    original = open(data_path("wsi/CMU-1-Small-Region.svs"), "rb").read()
    path = tmp_path / "truncated.svs"
    path.write_bytes(original[: int(len(original) * fraction)])
    with pytest.raises(ReadError, match="truncated") as info:
        wsi.read(str(path))
    assert str(path) in str(info.value)


def test_random_bytes_svs(tmp_path):
    path = tmp_path / "random.svs"
    path.write_bytes(np.random.default_rng(1).bytes(4096))
    with pytest.raises(ReadError, match="not a valid TIFF") as info:
        wsi.read(str(path))
    assert str(path) in str(info.value)


def test_handle_pickles_by_path():
    import pickle

    handle = wsi.SlideHandle.shared(data_path("wsi/CMU-1-Small-Region.svs"))
    assert pickle.loads(pickle.dumps(handle)) is handle
