"""Tissue detection never drops stained tissue, pale included, and still skips glass (issue 19)."""

from __future__ import annotations

import numpy as np
import openslide
import pytest
import tifffile

from napari_cancerseg.inference.tiling import TileGrid, tissue_fractions
from napari_cancerseg.preprocess import tissue

from ..conftest import data_path

GLASS = np.array([246, 243, 243], np.float32)  # CMU-1's own glass
CELL = 256


@pytest.fixture(scope="module")
def cmu_tissue() -> np.ndarray:
    source = openslide.OpenSlide(data_path("wsi/CMU-1-Small-Region.svs"))
    return np.asarray(source.read_region((0, 0), 0, source.dimensions).convert("RGB"))


def mosaic(tissue_pixels: np.ndarray, cells: int, glass_cells: int, strengths, seed: int = 0) -> np.ndarray:
    """cells x cells crops of real tissue, each stained at one of ``strengths`` of its optical density;
    the last ``glass_cells`` columns are glass."""
    rng = np.random.default_rng(seed)
    dense = tissue_pixels[1200:2700, 300:1900]  # the core of the section: stained almost everywhere
    out = np.empty((cells * CELL, cells * CELL, 3), np.uint8)
    out[:] = GLASS.astype(np.uint8)
    for row in range(cells):
        for col in range(cells - glass_cells):
            y, x = rng.integers(0, dense.shape[0] - CELL), rng.integers(0, dense.shape[1] - CELL)
            density = np.log10((GLASS + 1) / (dense[y:y + CELL, x:x + CELL].astype(np.float32) + 1))
            density *= rng.choice(strengths)
            crop = np.clip((GLASS + 1) / 10 ** density - 1, 0, 255).round().astype(np.uint8)
            out[row * CELL:(row + 1) * CELL, col * CELL:(col + 1) * CELL] = crop
    return out


def stained_fraction(image: np.ndarray, stride: int) -> np.ndarray:
    """Per chunk, the share of pixels at least 11% darker than glass in some channel (optical density > 0.05)."""
    stained = np.log10((GLASS + 1) / (image.astype(np.float32) + 1)).max(axis=-1) > 0.05
    rows, cols = -(-image.shape[0] // stride), -(-image.shape[1] // stride)
    return np.array([[stained[r * stride:(r + 1) * stride, c * stride:(c + 1) * stride].mean()
                      for c in range(cols)] for r in range(rows)])


def predicted_chunks(path: str, image: np.ndarray, threshold: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """What the engine predicts (its tissue mask and chunk fractions, 256 px tiles, 32 overlap) and the truth."""
    grid = TileGrid(image.shape[0], image.shape[1], 256, 32)
    mask, downsample = tissue.slide_tissue_mask(path, max_side=1024)
    return tissue_fractions(grid, mask, downsample, 1.0) >= threshold, stained_fraction(image, grid.stride)


def write_pyramid(path, image: np.ndarray) -> str:
    with tifffile.TiffWriter(path) as tif:
        level = image
        for index in range(3):  # down to 1024 px at 4x, as a scanner's pyramid would be
            tif.write(level, tile=(256, 256), compression="jpeg", photometric="rgb", subfiletype=1 if index else 0)
            h, w = level.shape[0] // 2 * 2, level.shape[1] // 2 * 2
            level = level[:h, :w].reshape(h // 2, 2, w // 2, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8)
    return str(path)


@pytest.mark.parametrize("strengths", [(1.0,), (0.6, 0.35), (0.35,)], ids=["as scanned", "pale", "very pale"])
def test_no_chunk_that_is_stained_is_skipped_and_glass_still_is(cmu_tissue, tmp_path, strengths, fresh_slide_handles):
    image = mosaic(cmu_tissue, cells=16, glass_cells=6, strengths=strengths)
    predicted, stained = predicted_chunks(write_pyramid(tmp_path / "pale.tif", image), image)
    assert stained.max() > 0.5  # the truth has stained chunks to lose
    assert not (predicted & (stained < 0.001))[:, -(6 * CELL) // 224 + 1:].any()  # pure glass: skipped
    assert (~predicted[stained >= 0.3]).sum() == 0  # no chunk that is at least 30% stained is skipped
    skipped_share = (stained * ~predicted).sum() / stained.sum()
    assert skipped_share <= 0.01


def test_the_old_otsu_mask_dropped_pale_tissue(cmu_tissue, tmp_path):
    """The test's slide is one where the problem shows: Otsu within the slide skipped stained chunks."""
    from skimage import filters

    image = mosaic(cmu_tissue, cells=16, glass_cells=6, strengths=(1.0, 0.35))
    low = image[::4, ::4].astype(np.float32)
    brightest = low.max(axis=-1)
    score = (brightest - low.min(axis=-1)) / np.maximum(brightest, 1) * 0.5 + (1 - brightest / 255) * 0.5
    otsu = score > filters.threshold_otsu(score)
    grid = TileGrid(image.shape[0], image.shape[1], 256, 32)
    stained = stained_fraction(image, grid.stride)
    assert ((tissue_fractions(grid, otsu, 4.0, 1.0) < 0.1) & (stained >= 0.3)).sum() > 10


def test_a_slide_without_glass_is_predicted_everywhere(cmu_tissue, tmp_path, fresh_slide_handles):
    image = mosaic(cmu_tissue, cells=12, glass_cells=0, strengths=(1.0, 0.6, 0.35), seed=3)
    predicted, stained = predicted_chunks(write_pyramid(tmp_path / "noglass.tif", image), image)
    assert predicted[stained >= 0.01].all()
    assert predicted.mean() >= 0.98


def test_the_real_slide_keeps_its_stained_area(fresh_slide_handles, cmu_tissue):
    path = data_path("wsi/CMU-1-Small-Region.svs")
    grid = TileGrid(cmu_tissue.shape[0], cmu_tissue.shape[1], 256, 32)
    mask, downsample = tissue.slide_tissue_mask(path, max_side=1024)
    predicted = tissue_fractions(grid, mask, downsample, 1.0) >= 0.1
    glass = tissue.glass_colour(cmu_tissue)
    assert np.abs(glass - GLASS).max() <= 4  # the glass is found: CMU-1's glass is (246, 243, 243)
    stained = np.log10((glass + 1) / (cmu_tissue.astype(np.float32) + 1)).max(axis=-1) > 0.05
    per_chunk = np.array([[stained[r * 224:(r + 1) * 224, c * 224:(c + 1) * 224].mean() for c in range(grid.cols)]
                          for r in range(grid.rows)])
    assert (per_chunk * ~predicted).sum() / per_chunk.sum() <= 0.01
    assert (~predicted).sum() >= 0.3 * predicted.size  # and the glass is still skipped (41% of chunks on CMU-1)


def _reference_mask(rgb: np.ndarray, grow_px: int) -> tuple[np.ndarray, np.ndarray]:
    """The glass colour and tissue mask written out plainly: float32 per pixel, np.percentile, np.log10 per pixel."""
    from scipy import ndimage
    from skimage import morphology

    rgb = rgb[..., :3].astype(np.float32)
    flat = rgb.reshape(-1, 3)
    brightest = flat.max(axis=1)
    saturation = (brightest - flat.min(axis=1)) / np.maximum(brightest, 1.0)
    candidates = flat[(saturation < tissue.MIN_SATURATION) & (brightest > 180)]
    glass = (np.percentile(candidates, 75, axis=0).astype(np.float32) if len(candidates) >= 0.01 * len(flat)
             else np.full(3, 255.0, np.float32))
    density = np.log10((glass + 1.0) / (rgb + 1.0)).max(axis=-1)
    saturation = saturation.reshape(rgb.shape[:2])
    mask = (density > tissue.MIN_DENSITY) | (saturation - (glass.max() - glass.min()) / glass.max()
                                             > tissue.MIN_SATURATION)
    mask = morphology.remove_small_objects(mask, max_size=max(4, int(0.00002 * mask.size)))
    return glass, ndimage.binary_dilation(ndimage.binary_fill_holes(mask), iterations=grow_px)


@pytest.mark.parametrize("region", ["whole", "tissue only", "glass only"])
def test_the_uint8_fast_path_gives_the_plain_formulas_values_exactly(cmu_tissue, region):
    """Histogram quartile, lookup-table densities and channel-wise max/min: the same glass and mask, bit for bit."""
    pixels = {"whole": cmu_tissue, "tissue only": cmu_tissue[1200:2700, 300:1900],  # no glass: white is the glass
              "glass only": cmu_tissue[:200, :300]}[region]
    glass, mask = _reference_mask(pixels, grow_px=2)
    np.testing.assert_array_equal(tissue.glass_colour(pixels), glass)
    np.testing.assert_array_equal(tissue.tissue_mask(pixels, grow_px=2), mask)
    assert 0 < mask.mean() < 1 or region != "whole"


def test_the_glass_quartile_matches_numpy_on_any_count():
    rng = np.random.default_rng(3)
    for _ in range(200):  # counts odd and even, so the quartile falls on and between order statistics
        count = int(rng.integers(100, 4000))
        pixels = rng.integers(181, 256, (count, 1, 3)).astype(np.uint8)
        pixels[..., 1:] = pixels[..., :1] - rng.integers(0, 3, (count, 1, 2)).astype(np.uint8)  # unsaturated
        expected = np.percentile(pixels.reshape(-1, 3).astype(np.float32), 75, axis=0).astype(np.float32)
        np.testing.assert_array_equal(tissue.glass_colour(pixels), expected)
