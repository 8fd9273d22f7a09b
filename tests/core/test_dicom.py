"""DICOM: mammograms, the QIN-PROSTATE ADC series and its SEG, compressed syntaxes and bad files."""

from __future__ import annotations

import glob
import os
import shutil

import numpy as np
import pydicom
import pytest
from pydicom.uid import JPEG2000Lossless, RLELossless

from napari_cancerseg.errors import ReadError
from napari_cancerseg.io import dicom

from ..conftest import data_path, stand_in_path

MAMMOGRAMS = [("mammo/cbis-ddsm-P00173-benign-1-130.dcm", (4432, 2864)),
              ("mammo/cbis-ddsm-P00820-malignant-1-280.dcm", (4736, 2624))]
ADC = "mri/QIN-PROSTATE-001/ADC"
SEG = "mri/QIN-PROSTATE-001/seg/1-1.dcm"


@pytest.mark.parametrize("relative, shape", MAMMOGRAMS)
def test_mammogram_full_size_sane_range(relative, shape):
    path = data_path(relative)
    data, kwargs, layer_type = dicom.read(path)[0]
    assert layer_type == "image" and data.shape == shape
    raw = pydicom.dcmread(path)
    assert raw.file_meta.TransferSyntaxUID == RLELossless and raw.PhotometricInterpretation == "MONOCHROME2"
    # no Modality/VOI LUT in these files: display values are the stored 16-bit values
    np.testing.assert_array_equal(data, raw.pixel_array.astype(np.float32))
    assert 0 <= data.min() and data.max() <= 65535 and data.std() > 1000
    low, high = kwargs["contrast_limits"]
    assert data.min() <= low < high <= data.max()
    meta = kwargs["metadata"]
    assert meta["laterality"] == "L" and meta["modality"] == "MG"
    assert meta["view"] in {"CC", "MLO"}
    assert kwargs["scale"] == (1.0, 1.0) and "no PixelSpacing" in meta["scale_note"]


def _small_mammogram(tmp_path, **changes) -> str:
    ds = pydicom.dcmread(data_path(MAMMOGRAMS[0][0]))
    ds.decompress()
    pixels = ds.pixel_array[::16, ::16].copy()
    ds.Rows, ds.Columns = pixels.shape
    ds.PixelData = pixels.tobytes()
    for key, value in changes.items():
        setattr(ds, key, value)
    path = str(tmp_path / "mammo.dcm")
    ds.save_as(path)
    return path


def test_monochrome1_is_inverted(tmp_path):
    path = _small_mammogram(tmp_path, PhotometricInterpretation="MONOCHROME1")
    raw = pydicom.dcmread(path).pixel_array.astype(np.float32)
    data, kwargs, _ = dicom.read(path)[0]
    np.testing.assert_array_equal(data, 65535 - raw)  # 16 bits stored: the range is 0..65535
    assert "MONOCHROME1 inverted" in kwargs["metadata"]["display_steps"]


def test_window_and_rescale_applied(tmp_path):
    path = _small_mammogram(tmp_path, RescaleSlope=2, RescaleIntercept=-100, WindowCenter=30000, WindowWidth=20000,
                            ImagerPixelSpacing=[0.05, 0.05])
    raw = pydicom.dcmread(path).pixel_array.astype(np.float64)
    data, kwargs, _ = dicom.read(path)[0]
    modality = raw * 2 - 100
    # DICOM linear window (PS3.3 C.11.2.1.2.1) onto the rescaled stored range (pydicom's choice)
    c, w, y_min, y_max = 30000, 20000, -100, 65535 * 2 - 100
    expected = np.clip(((modality - (c - 0.5)) / (w - 1) + 0.5) * (y_max - y_min) + y_min, y_min, y_max)
    np.testing.assert_allclose(data, expected, atol=0.5)
    assert kwargs["contrast_limits"] == [y_min, y_max]
    assert kwargs["scale"] == (0.05, 0.05) and kwargs["units"] == ("mm", "mm")


def _adc_files(series: str | None = None):
    return sorted(glob.glob(os.path.join(series or data_path(ADC), "*.dcm")))


def _series_files():
    """The slices of a real MR series: the shared ADC series, or its stand-in (tests/data_sources.py)."""
    return _adc_files(stand_in_path(ADC))


def test_adc_series_assembles_in_slice_order():
    data, kwargs, layer_type = dicom.read(data_path(ADC))[0]
    assert layer_type == "image" and data.shape == (20, 256, 256)
    assert kwargs["scale"] == pytest.approx((3.0, 0.7031, 0.7031), abs=1e-3)
    # reference order: each file's position along the normal of its own orientation
    headers = [pydicom.dcmread(f) for f in _adc_files()]
    iop = np.asarray(headers[0].ImageOrientationPatient, float).reshape(2, 3)
    normal = np.cross(iop[0], iop[1])
    ordered = sorted(headers, key=lambda h: np.dot(np.asarray(h.ImagePositionPatient, float), normal))
    for k, header in enumerate(ordered):
        np.testing.assert_array_equal(data[k], header.pixel_array.astype(np.float32))
    assert kwargs["translate"] == pytest.approx(tuple(float(v) for v in ordered[0].ImagePositionPatient)[::-1])


def test_series_order_does_not_depend_on_file_names(tmp_path):
    for index, path in enumerate(_series_files()[::-1]):  # names now run against the slice order
        shutil.copy(path, tmp_path / f"{index:02d}.dcm")
    shuffled, _, _ = dicom.read(str(tmp_path))[0]
    reference, _, _ = dicom.read(stand_in_path(ADC))[0]
    assert reference.shape[0] > 2 and len(np.unique([np.asarray(s).mean() for s in reference])) > 2
    np.testing.assert_array_equal(shuffled, reference)


def test_z_spacing_comes_from_positions_not_thickness(tmp_path):
    headers = [pydicom.dcmread(path) for path in _series_files()]
    for path, ds in zip(_series_files(), headers):
        ds.SliceThickness = 9.0
        ds.SpacingBetweenSlices = 9.0
        ds.save_as(tmp_path / os.path.basename(path))
    _, kwargs, _ = dicom.read(str(tmp_path))[0]
    # reference: the distance between neighbouring slices' positions along the normal (3 mm in the ADC series)
    gaps = np.diff(sorted(np.dot(np.asarray(h.ImagePositionPatient, float),
                                 np.cross(*np.asarray(h.ImageOrientationPatient, float).reshape(2, 3)))
                          for h in headers))
    assert np.ptp(gaps) < 1e-3 and gaps[0] != pytest.approx(9.0)
    assert kwargs["scale"][0] == pytest.approx(gaps[0], abs=1e-3)


def test_seg_with_its_series_overlays_it():
    image, seg = dicom.read(data_path("mri/QIN-PROSTATE-001"))
    assert image[2] == "image" and seg[2] == "labels"
    assert seg[0].shape == image[0].shape
    assert seg[1]["scale"] == image[1]["scale"] and seg[1]["translate"] == image[1]["translate"]
    assert seg[1]["metadata"]["segments"] == {1: "Normal", 2: "Peripheral zone of the prostate", 3: "Lesion",
                                              4: "Prostate"}
    assert set(np.unique(seg[0])) == {0, 1, 2, 3, 4}
    # reference: every SEG frame's pixels are labelled on the slice at that frame's position
    ds = pydicom.dcmread(data_path(SEG))
    frames = ds.pixel_array
    slice_positions = np.asarray(image[1]["metadata"]["slice_positions_mm"])
    normal = np.cross(*np.asarray(ds.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
                                  .ImageOrientationPatient, float).reshape(2, 3))
    union = np.zeros(seg[0].shape, bool)
    for index, item in enumerate(ds.PerFrameFunctionalGroupsSequence):
        distance = np.dot(np.asarray(item.PlanePositionSequence[0].ImagePositionPatient, float), normal)
        union[int(np.argmin(np.abs(slice_positions - distance)))] |= frames[index].astype(bool)
    np.testing.assert_array_equal(seg[0] > 0, union)
    assert folder_summary(seg) == "1 series and 1 SEG object(s), opened as 2 layers"


def folder_summary(layer) -> str:
    return layer[1]["metadata"]["folder_summary"]


def test_seg_alone_uses_its_own_geometry():
    alone, kwargs, _ = dicom.read(data_path(SEG))[0]
    _, with_series = dicom.read(data_path("mri/QIN-PROSTATE-001"))
    np.testing.assert_array_equal(alone, with_series[0])
    assert kwargs["translate"] == pytest.approx(with_series[1]["translate"], abs=1e-3)
    assert kwargs["scale"] == pytest.approx(with_series[1]["scale"], abs=1e-3)


def test_jpeg2000_slice_decodes_losslessly(tmp_path):
    source = _series_files()[len(_series_files()) // 2]
    ds = pydicom.dcmread(source)
    ds.compress(JPEG2000Lossless)
    path = tmp_path / "j2k.dcm"
    ds.save_as(path)
    assert pydicom.dcmread(path).file_meta.TransferSyntaxUID == JPEG2000Lossless
    data, kwargs, _ = dicom.read(str(path))[0]
    uncompressed, _, _ = dicom.read(source)[0]
    assert "JPEG 2000" in kwargs["metadata"]["transfer_syntax"]
    np.testing.assert_array_equal(data, uncompressed)
    assert data.std() > 0


def test_folder_of_several_series_opens_each(tmp_path):
    series = stand_in_path(ADC)
    shutil.copytree(series, tmp_path / "adc")
    _small_mammogram(tmp_path)
    (tmp_path / "notes.txt").write_text("not dicom")
    layers = dicom.read(str(tmp_path))
    shapes = sorted(layer[0].shape for layer in layers)
    # the reference, from the files' headers: the series' slices (the shared one: 256 x 256 x 20) and the mammogram
    slices, mammogram = [pydicom.dcmread(f) for f in _adc_files(series)], pydicom.dcmread(tmp_path / "mammo.dcm")
    assert shapes == sorted([(len(slices), slices[0].Rows, slices[0].Columns), (mammogram.Rows, mammogram.Columns)])
    assert (mammogram.Rows, mammogram.Columns) == (277, 179)  # 4432 x 2864 taken every 16th pixel
    summary = folder_summary(layers[0])
    assert summary.startswith("2 series and 0 SEG object(s), opened as 2 layers") and "notes.txt" in summary


def test_dicom_without_pixel_data(tmp_path):
    ds = pydicom.dcmread(_series_files()[0])
    del ds.PixelData
    path = tmp_path / "no_pixels.dcm"
    ds.save_as(path)
    with pytest.raises(ReadError, match="no pixel data") as info:
        dicom.read(str(path))
    assert str(path) in str(info.value)


def test_random_bytes_dcm(tmp_path):
    path = tmp_path / "random.dcm"
    path.write_bytes(np.random.default_rng(3).bytes(4096))
    with pytest.raises(ReadError, match="not a DICOM file") as info:
        dicom.read(str(path))
    assert str(path) in str(info.value)


def test_multiframe_file_equals_its_series(tmp_path):
    """An enhanced multi-frame file made from the ADC slices (frames shuffled) gives the series' volume."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    headers = [pydicom.dcmread(f) for f in _series_files()]
    pixels = [h.pixel_array for h in headers]
    order = np.random.default_rng(6).permutation(len(headers))
    ds = pydicom.dcmread(_series_files()[0])
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"  # Enhanced MR Image Storage
    ds.NumberOfFrames = len(headers)
    ds.PixelData = b"".join(pixels[i].tobytes() for i in order)
    shared = Dataset()
    orientation, measures = Dataset(), Dataset()
    orientation.ImageOrientationPatient = headers[0].ImageOrientationPatient
    measures.PixelSpacing = headers[0].PixelSpacing
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelMeasuresSequence = Sequence([measures])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for i in order:
        frame, position = Dataset(), Dataset()
        position.ImagePositionPatient = headers[i].ImagePositionPatient
        frame.PlanePositionSequence = Sequence([position])
        per_frame.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "WindowCenter", "WindowWidth"):
        if keyword in ds:
            delattr(ds, keyword)
    path = tmp_path / "multiframe.dcm"
    ds.save_as(path)
    data, kwargs, _ = dicom.read(str(path))[0]
    series, series_kwargs, _ = dicom.read(stand_in_path(ADC))[0]
    np.testing.assert_array_equal(data, series)
    assert kwargs["scale"] == pytest.approx(series_kwargs["scale"])
    assert kwargs["translate"] == pytest.approx(series_kwargs["translate"])


def test_a_series_made_from_a_nifti_volume_reads_as_that_volume(tmp_path):
    """Two readers, one volume: nibabel's anatomical MRI written as DICOM slices (tests/data_sources.py, the ADC
    series' stand-in) gives the NIfTI reader's array, scale and translate: both show patient space the same way."""
    from napari_cancerseg.io import nifti

    from ..data_sources import anatomical, make_mri_series

    series, kwargs, _ = dicom.read(str(make_mri_series(tmp_path)))[0]
    volume, volume_kwargs, _ = nifti.read(str(anatomical()))[0]
    assert series.shape == volume.shape and series.shape[0] > 2
    np.testing.assert_array_equal(np.asarray(series), np.asarray(volume).astype(np.float32))
    assert kwargs["scale"] == pytest.approx(volume_kwargs["scale"], abs=1e-4)
    assert kwargs["translate"] == pytest.approx(volume_kwargs["translate"], abs=1e-3)
