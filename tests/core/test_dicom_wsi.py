"""DICOM whole-slide images (VL Whole Slide Microscopy Image Storage) open as the whole slide, through OpenSlide.

The test slide is CMU-1-Small-Region.svs converted by wsidicomizer, which copies
its JPEG tiles as they are: the DICOM slide must give the SVS's pixels exactly.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from napari_cancerseg.inference.engine import predict_slide
from napari_cancerseg.io import dicom, open_layers, wsi
from napari_cancerseg.io.opening import backend_for

from ..conftest import data_path
from .test_inference import PixelModel, bundle  # noqa: F401 - the tiny bundle fixture

SVS = "wsi/CMU-1-Small-Region.svs"


@pytest.fixture(scope="module")
def dicom_slide(tmp_path_factory) -> str:
    """CMU-1-Small-Region as a DICOM WSI series: a folder of four instances (volume, label, overview, thumbnail)."""
    import importlib.util
    import subprocess
    import sys

    if importlib.util.find_spec("wsidicomizer") is None:  # found, never imported here (see below)
        pytest.skip("wsidicomizer is not installed (the testing extra has it)")
    folder = tmp_path_factory.mktemp("dicom_wsi") / "CMU-1-Small-Region"
    # in a child process: importing wsidicomizer switches pydicom to its future (v4) behaviour for the whole
    # process (config.future_behavior()), which removes convert_pixel_data for every later test
    script = "import sys; from wsidicomizer import WsiDicomizer; WsiDicomizer.convert(sys.argv[1], sys.argv[2])"
    done = subprocess.run([sys.executable, "-c", script, data_path(SVS), str(folder)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return str(folder)


def _instances(folder: str) -> dict[str, str]:
    """Image type (VOLUME, LABEL, OVERVIEW, THUMBNAIL) -> instance file."""
    import pydicom

    found = {}
    for name in os.listdir(folder):
        header = pydicom.dcmread(os.path.join(folder, name), stop_before_pixels=True)
        found[str(header.ImageType[2])] = os.path.join(folder, name)
    return found


def test_a_dicom_wsi_folder_opens_as_the_whole_slide(dicom_slide, fresh_slide_handles):
    assert backend_for(dicom_slide) is wsi  # before io.dicom, which would take it for a radiology series
    (levels, kwargs, layer_type), = open_layers(dicom_slide)
    assert layer_type == "image" and kwargs["rgb"] and kwargs["multiscale"]
    assert levels[0].shape == (2967, 2220, 3)  # the data README's facts of the SVS
    assert kwargs["scale"] == pytest.approx((0.499, 0.499), abs=5e-4) and kwargs["units"] == ("um", "um")
    assert kwargs["name"] == "CMU-1-Small-Region"
    assert set(kwargs["metadata"]["associated_images"]) == {"label", "macro", "thumbnail"}
    assert sum(fresh_slide_handles.shared(dicom_slide).reads.values()) == 0  # lazily: no pixels read to open


@pytest.mark.parametrize("kind", ["VOLUME", "LABEL", "THUMBNAIL"])
def test_any_instance_of_the_series_opens_the_whole_slide(dicom_slide, kind):
    """Not a 463 x 387 label at scale 1: OpenSlide finds the series' other files beside the one opened."""
    instance = _instances(dicom_slide)[kind]
    assert backend_for(instance) is wsi and dicom.claims(instance)  # io.dicom would claim it, wsi comes first
    (levels, kwargs, _), = open_layers(instance)
    assert levels[0].shape == (2967, 2220, 3) and kwargs["scale"] == pytest.approx((0.499, 0.499), abs=5e-4)
    assert kwargs["name"] == "CMU-1-Small-Region"


def test_pixels_and_label_equal_the_svs(dicom_slide):
    ours = wsi.SlideHandle.shared(dicom_slide)
    svs = wsi.SlideHandle.shared(data_path(SVS))
    for x, y in [(700, 300), (2000, 2800), (-30, 17)]:
        np.testing.assert_array_equal(ours.read(0, x, y, 400, 300), svs.read(0, x, y, 400, 300))
    label = wsi.read_associated_image(dicom_slide, "label")
    assert label.shape[2] == 3 and label.shape[:2] == wsi.read_associated_image(data_path(SVS), "label").shape[:2]


def test_radiology_dicom_stays_with_the_radiology_reader():
    series = data_path("mri/QIN-PROSTATE-001/ADC")
    assert not wsi.claims(series) and backend_for(series) is dicom


def test_a_dicom_wsi_predicts_what_its_svs_predicts(dicom_slide, bundle, tmp_path):  # noqa: F811
    from napari_cancerseg.io import stores

    runs = {}
    for name, slide in [("dicom", dicom_slide), ("svs", data_path(SVS))]:
        summary = predict_slide(slide, bundle, str(tmp_path / f"{name}.zarr"), model=PixelModel())
        assert not summary.cancelled and summary.tiles > 0
        (levels, _, _), = stores.read(str(tmp_path / f"{name}.zarr"))
        runs[name] = np.asarray(levels[0])
    assert 0 < (runs["svs"] == 1).mean() < 1  # the comparison can fail: dark and light pixels both
    np.testing.assert_array_equal(runs["dicom"], runs["svs"])
