"""NIfTI: the prostate volume and its masks, orientation against nibabel, writers and bad files."""

from __future__ import annotations

import gzip
import os

import dask.array as da
import nibabel as nib
import numpy as np
import pytest

from napari_cancerseg._writer import write_labels_nifti
from napari_cancerseg.errors import ReadError
from napari_cancerseg.io import nifti

from ..conftest import data_path, stand_in_path

MASKS = ["prostate_seg_one_label", "prostate_seg_two_labels", "prostate_seg_empty", "prostate_seg_single_slice"]
NIBABEL_DATA = os.path.join(os.path.dirname(nib.__file__), "tests", "data")


def test_prostate_volume_facts():
    data, kwargs, layer_type = nifti.read(data_path("mri/prostate_t2.nii.gz"))[0]
    assert layer_type == "image"
    assert data.shape == (15, 81, 105)  # 105 x 81 x 15 voxels, shown as (z, y, x)
    assert kwargs["scale"] == pytest.approx((4.0, 0.6, 0.6), abs=1e-4)
    assert kwargs["units"] == ("mm", "mm", "mm")
    assert kwargs["metadata"]["original_axcodes"] == "RAS"
    low, high = kwargs["contrast_limits"]
    assert np.asarray(data).min() <= low < high <= np.asarray(data).max()


@pytest.mark.parametrize("mask", MASKS)
def test_masks_are_labels_aligned_with_their_image(mask):
    image, image_kwargs, _ = nifti.read(stand_in_path("mri/prostate_t2.nii.gz"))[0]
    labels, kwargs, layer_type = nifti.read(stand_in_path(f"mri/{mask}.nii.gz"))[0]
    assert layer_type == "labels"
    assert labels.shape == image.shape
    assert kwargs["scale"] == image_kwargs["scale"] and kwargs["translate"] == image_kwargs["translate"]
    raw = np.asanyarray(nib.load(stand_in_path(f"mri/{mask}.nii.gz")).dataobj)
    assert sorted(np.unique(labels)) == sorted(np.unique(raw))
    assert int((labels > 0).sum()) == int((raw > 0).sum())


def _expected_canonical(image: nib.Nifti1Image) -> np.ndarray:
    """Independent reference: nibabel's RAS+ canonical image, flipped to L, P and transposed to (z, y, x)."""
    ras = np.asanyarray(nib.as_closest_canonical(image).dataobj)
    lps = ras[::-1, ::-1]
    return np.moveaxis(lps, (0, 1, 2), (-1, -2, -3)) if ras.ndim == 3 else np.moveaxis(lps, (0, 1, 2, 3), (3, 2, 1, 0))


@pytest.mark.parametrize("name", ["anatomical.nii", "example4d.nii.gz", "reoriented_anat_moved.nii",
                                  "resampled_anat_moved.nii"])
def test_orientation_matches_nibabel_canonical(name):
    path = os.path.join(NIBABEL_DATA, name)
    data, kwargs, _ = nifti.read(path)[0]
    image = nib.load(path)
    np.testing.assert_array_equal(np.asarray(data), _expected_canonical(image))
    # the translate is the LPS position of voxel (0, 0, 0) of the displayed array
    canonical = nib.as_closest_canonical(image)
    ras_shape = canonical.shape[:3]
    corner_ras = canonical.affine @ np.array([ras_shape[0] - 1, ras_shape[1] - 1, 0, 1])
    expected_lps = (-corner_ras[0], -corner_ras[1], corner_ras[2])
    assert kwargs["translate"][-3:] == pytest.approx(expected_lps[::-1], abs=1e-3)
    assert kwargs["scale"][-3:] == pytest.approx(canonical.header.get_zooms()[:3][::-1], rel=1e-5)


def test_4d_keeps_its_extra_axis():
    data, kwargs, _ = nifti.read(os.path.join(NIBABEL_DATA, "example4d.nii.gz"))[0]
    assert data.shape == (2, 24, 96, 128)
    assert len(kwargs["scale"]) == 4 and kwargs["scale"][0] == 1.0


def test_uncompressed_nifti_is_lazy():
    data, _, _ = nifti.read(os.path.join(NIBABEL_DATA, "anatomical.nii"))[0]
    assert isinstance(data, da.Array)


def test_labels_round_trip_to_nifti(tmp_path):
    source = stand_in_path("mri/prostate_seg_two_labels.nii.gz")
    labels, kwargs, _ = nifti.read(source)[0]
    out = str(tmp_path / "saved.nii.gz")
    write_labels_nifti(out, labels, kwargs)
    saved, original = nib.load(out), nib.load(source)
    np.testing.assert_array_equal(np.asanyarray(saved.dataobj), np.asanyarray(original.dataobj))
    np.testing.assert_allclose(saved.affine, original.affine, atol=1e-5)


def test_new_labels_without_source_file_land_on_the_image(tmp_path):
    """Labels painted in napari (no metadata) are saved on the grid their scale/translate give."""
    image, kwargs, _ = nifti.read(stand_in_path("mri/prostate_t2.nii.gz"))[0]
    painted = np.zeros(image.shape, np.uint8)
    z, y, x = (side // 2 for side in image.shape)
    painted[z, y - 2:y + 3, x - 5:x + 5] = 1
    out = str(tmp_path / "painted.nii.gz")
    write_labels_nifti(out, painted, {"scale": kwargs["scale"], "translate": kwargs["translate"]})
    reread, reread_kwargs, _ = nifti.read(out)[0]
    np.testing.assert_array_equal(reread, painted)
    assert reread_kwargs["translate"] == pytest.approx(kwargs["translate"], abs=1e-4)
    assert reread_kwargs["scale"] == pytest.approx(kwargs["scale"], abs=1e-5)


def test_random_bytes_nii_gz(tmp_path):
    path = tmp_path / "random.nii.gz"
    path.write_bytes(np.random.default_rng(2).bytes(2048))
    with pytest.raises(ReadError) as info:
        nifti.read(str(path))
    assert str(path) in str(info.value)


def test_broken_header(tmp_path):
    raw = bytearray(gzip.decompress(open(stand_in_path("mri/prostate_t2.nii.gz"), "rb").read()))
    raw[40:42] = (42).to_bytes(2, "little")  # dim[0]: number of dimensions, must be 1..7
    path = tmp_path / "broken_header.nii"
    path.write_bytes(bytes(raw))
    with pytest.raises(ReadError, match="broken_header.nii"):
        nifti.read(str(path))


def test_truncated_nii_gz(tmp_path):
    compressed = open(stand_in_path("mri/prostate_t2.nii.gz"), "rb").read()
    path = tmp_path / "truncated.nii.gz"
    path.write_bytes(compressed[: len(compressed) // 2])
    with pytest.raises(ReadError, match="truncated or corrupt"):
        nifti.read(str(path))


def test_truncated_nii(tmp_path):
    raw = gzip.decompress(open(stand_in_path("mri/prostate_t2.nii.gz"), "rb").read())
    path = tmp_path / "truncated.nii"
    path.write_bytes(raw[: len(raw) - 1000])
    with pytest.raises(ReadError, match="truncated"):
        nifti.read(str(path))
