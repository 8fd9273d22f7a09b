"""Preprocessing against references: stain, tissue, contrast, geometry, augmentation, data splits."""

from __future__ import annotations

import numpy as np
import openslide
import pytest

from napari_cancerseg.preprocess import augment, contrast, geometry, stain, tissue

from ..conftest import data_path


@pytest.fixture(scope="module")
def he_tile():
    slide = openslide.OpenSlide(data_path("wsi/CMU-1-Small-Region.svs"))
    return np.asarray(slide.read_region((700, 1200), 0, (512, 512)).convert("RGB"))


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    """Mean angle (degrees) between corresponding unit stain vectors."""
    cos = np.clip((a * b).sum(axis=0) / np.linalg.norm(a, axis=0) / np.linalg.norm(b, axis=0), -1, 1)
    return float(np.degrees(np.arccos(cos)).mean())


def test_optical_density_uses_natural_log():
    value = 240 / np.e - 1  # OD = -ln((I + 1) / 240) = 1 exactly
    assert stain.optical_density(np.array([value]))[0] == pytest.approx(1.0)


def test_macenko_moves_stains_towards_reference_and_is_idempotent(he_tile):
    before = stain.fit_macenko(he_tile)
    result = stain.macenko_normalise(he_tile)
    assert result.normalised
    after = stain.fit_macenko(result.image)
    reference = stain.REFERENCE_STAIN_MATRIX
    assert _angle(after.matrix, reference) < _angle(before.matrix, reference)
    assert _angle(after.matrix, reference) < 3.0
    assert after.max_concentrations == pytest.approx(stain.REFERENCE_MAX_CONCENTRATIONS, rel=0.15)
    twice = stain.macenko_normalise(result.image).image
    first_change = np.abs(result.image.astype(int) - he_tile.astype(int)).mean()
    second_change = np.abs(twice.astype(int) - result.image.astype(int)).mean()
    assert second_change < 4.0 and second_change < 0.3 * first_change, (first_change, second_change)


def test_macenko_against_a_fitted_reference_tile(he_tile):
    """A tile normalised to itself is its own two-stain reconstruction (Beer-Lambert with its own vectors)."""
    reference = stain.fit_macenko(he_tile)
    result = stain.macenko_normalise(he_tile, reference)
    od = -np.log((he_tile.reshape(-1, 3).astype(float) + 1) / 240)
    concentrations = np.linalg.pinv(reference.matrix) @ od.T
    expected = np.clip(np.rint(240 * np.exp(-reference.matrix @ concentrations)).T, 0, 255).reshape(he_tile.shape)
    assert np.abs(result.image.astype(int) - expected).max() <= 1


def test_background_tile_is_returned_unchanged_with_flag():
    glass = np.full((256, 256, 3), 245, np.uint8)
    glass[::7, ::5] = 238  # faint texture, no tissue
    result = stain.macenko_normalise(glass)
    assert not result.normalised and result.image is glass and "background" in result.reason


def test_tissue_mask_finds_tissue_and_glass():
    slide = openslide.OpenSlide(data_path("wsi/CMU-1-Small-Region.svs"))
    thumb = np.asarray(slide.get_thumbnail((555, 742)).convert("RGB"))
    canvas = np.full((thumb.shape[0], thumb.shape[1] * 2, 3), 242, np.uint8)  # glass to the right
    canvas[:, : thumb.shape[1]] = thumb
    mask = tissue.tissue_mask(canvas)
    assert mask[:, thumb.shape[1]:].mean() < 0.01
    darkness = canvas.mean(axis=-1)
    assert mask[darkness < 150].mean() > 0.95  # stained nuclei/stroma are tissue


def test_slide_tissue_mask_reads_a_low_level():
    mask, downsample = tissue.slide_tissue_mask(data_path("wsi/test3-DAPI-2-387.ndpi"), max_side=700)
    assert max(mask.shape) <= 700 and downsample == 8.0


def test_clahe_and_intensity_normalisation():
    rng = np.random.default_rng(1)
    image = rng.normal(1000, 50, (128, 128)).astype(np.float32)
    image[:, 64:] += 2000
    equalised = contrast.clahe(image)
    assert equalised.dtype == np.float32 and 0 <= equalised.min() and equalised.max() <= 1
    volume = rng.normal(100, 10, (4, 32, 32)).astype(np.float32)
    normalised = contrast.normalise_intensity(volume)
    low, high = np.percentile(volume, [0.5, 99.5])
    np.testing.assert_allclose(normalised, (np.clip(volume, low, high) - low) / (high - low), atol=1e-6)


@pytest.mark.parametrize("source, target", [((100, 80), (128, 128)), ((300, 200), (256, 256)),
                                            ((301, 99), (256, 128)), ((7, 9), (4, 16))])
def test_pad_crop_inverse_is_exact(source, target):
    rng = np.random.default_rng(2)
    array = rng.integers(1, 255, source + (3,)).astype(np.uint8)
    out, transform = geometry.pad_crop(array, target)
    assert out.shape == target + (3,)
    back = transform.invert(out)
    kept = tuple(slice(*(((s - t) // 2, (s - t) // 2 + t) if t < s else (0, s))) for s, t in zip(source, target))
    np.testing.assert_array_equal(back[kept], array[kept])  # every pixel that survived comes back in place
    assert (back == 0).sum() == back.size - back[kept].size  # and only the cropped-away border is lost
    np.testing.assert_array_equal(transform.apply(back), out)  # apply(invert(y)) == y exactly


def test_resize_nearest_never_mixes_labels():
    labels = np.random.default_rng(3).integers(0, 5, (37, 23)).astype(np.uint8)
    np.testing.assert_array_equal(geometry.resize_nearest(labels, (74, 46)), labels.repeat(2, 0).repeat(2, 1))
    assert set(np.unique(geometry.resize_nearest(labels, (50, 31)))) <= set(np.unique(labels))


def test_breast_box_maps_back_to_full_resolution():
    from napari_cancerseg.io import dicom

    image, _, _ = dicom.read(data_path("mammo/cbis-ddsm-P00820-malignant-1-280.dcm"))[0]
    box = geometry.breast_box(image)
    height, width = image.shape
    assert 0 <= box.top < box.bottom <= height and 0 <= box.left < box.right <= width
    assert box.shape[0] * box.shape[1] < 0.9 * image.size  # something was cropped away
    from skimage.filters import threshold_otsu

    inner = image[height // 50: -height // 50, width // 50: -width // 50]
    bright = image > threshold_otsu(inner[::8, ::8])
    inside = np.zeros_like(bright)
    inside[box.top:box.bottom, box.left:box.right] = True
    assert bright[inside].sum() / bright[height // 50: -height // 50, width // 50: -width // 50].sum() > 0.95
    # a mask predicted on a 512 x 512 resize of the crop lands back exactly in the box
    small = np.zeros((512, 512), np.uint8)
    small[100:200, 50:60] = 3
    full = box.paste(small, image.shape)
    assert set(np.unique(full)) == {0, 3}
    rows, cols = np.nonzero(full == 3)
    top, left = box.to_full(100, 50, scale=(box.shape[0] / 512, box.shape[1] / 512))
    assert abs(rows.min() - top) <= 1 and abs(cols.min() - left) <= 1


def test_augmentation_keeps_masks_integer_and_aligned(he_tile):
    mask = (he_tile[..., 0] < 150).astype(np.uint8) * 2
    rng = np.random.default_rng(4)
    geometric_only = augment.Augmenter(affine_probability=0.0, colour_probability=0.0)
    for _ in range(8):
        image, out_mask = geometric_only(he_tile, mask, rng)
        np.testing.assert_array_equal(out_mask, (image[..., 0] < 150).astype(np.uint8) * 2)
    full = augment.Augmenter(affine_probability=1.0, colour_probability=0.0)
    image, out_mask = full(he_tile, mask, rng)
    assert out_mask.dtype == np.uint8 and set(np.unique(out_mask)) <= {0, 2}
    agreement = (out_mask == (image[..., 0] < 150) * 2).mean()
    assert agreement > 0.95
    coloured, colour_mask = augment.Augmenter(flips=False, rotate90=False, affine_probability=0.0,
                                              colour_probability=1.0)(he_tile, mask, rng)
    np.testing.assert_array_equal(colour_mask, mask)  # colour never touches the mask
    assert not np.array_equal(coloured, he_tile)


def test_patch_pipeline_augments_every_epoch():
    pytest.importorskip("keras")
    from napari_cancerseg.errors import CancersegError
    from napari_cancerseg.training.data import RandomPatches, load_pairs, split_by_case

    pairs = load_pairs(data_path("nuclei"))
    assert len(pairs) == 11 and all(set(np.unique(p.mask)) <= {0, 1} for p in pairs)
    train, held = split_by_case(pairs, ["image02", "image09"])
    assert {p.name for p in held} == {"image02", "image09"} and not {p.name for p in train} & {"image02", "image09"}
    with pytest.raises(CancersegError, match="image99"):
        split_by_case(pairs, ["image99"])
    data = RandomPatches(train, 64, 4, 2, augmenter=augment.Augmenter(), seed=1)
    first_x, first_y = data[0]
    data.on_epoch_end()
    second_x, _ = data[0]
    assert first_x.shape == (4, 64, 64, 3) and first_x.dtype == np.uint8
    assert first_y.shape == (4, 64, 64, 1) and set(np.unique(first_y)) <= {0.0, 1.0}
    assert not np.array_equal(first_x, second_x)
