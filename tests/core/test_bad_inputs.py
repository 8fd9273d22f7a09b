"""The bad-input corpus (issue 15): inputs built from the real sample data, each refused with a clear error
naming the file, or read to the right answer.  Never "it did not crash".

Each case carries ``@pytest.mark.bad_input("clean error")`` or ``("right answer")``; tests/conftest.py
counts them at the end of the run.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from napari_cancerseg.errors import CancersegError, ReadError

from ..conftest import ROOT, data_path, stand_in_path

CLEAN = pytest.mark.bad_input("clean error")
RIGHT = pytest.mark.bad_input("right answer")

APERIO = "annotations/TCGA-EJ-5519-01Z-00-DX1.xml"
QUPATH = "annotations/TCGA-EJ-5519-01Z-00-DX1.qupath.json"
ASAP = "annotations/asap1.xml"
PROSTATE_SEG = "mri/prostate_seg_one_label.nii.gz"  # 1.6 kB on disk, 105 x 81 x 15 uint16
ADC = "mri/QIN-PROSTATE-001/ADC"
MAMMO = "mammo/cbis-ddsm-P00173-benign-1-130.dcm"
BUNDLE = ROOT / "napari_cancerseg" / "resources" / "nuclei_unet.keras"


def assert_names_file(error: BaseException, path, *words: str) -> None:
    """The message names the file and says the problem in words a person can act on."""
    message = str(error)
    assert str(path) in message, message
    for word in words:
        assert re.search(word, message, re.IGNORECASE), f"{word!r} not in {message!r}"


# ------------------------------------------------------------------ numbers in annotation files


def _aperio_variant(tmp_path, name: str, edit) -> Path:
    text = Path(stand_in_path(APERIO)).read_text()
    out = tmp_path / f"{name}.xml"
    out.write_text(edit(text))
    return out


def _mpp(value: str):
    """Edit the file's MicronsPerPixel, whatever it was."""
    return lambda text: re.sub(r'MicronsPerPixel="[^"]*"', f'MicronsPerPixel="{value}"', text, count=1)


def _first_vertex(text: str, value: str, axis: str = "X") -> str:
    return re.sub(rf'{axis}="[^"]+"', f'{axis}="{value}"', text, count=1)


APERIO_NUMBERS = {
    "mpp NaN": (_mpp("nan"), "MicronsPerPixel.*finite"),
    "mpp negative": (_mpp("-0.252"), "MicronsPerPixel.*not a real scale"),
    "mpp infinite": (_mpp("inf"), "finite"),
    "mpp 1e300": (_mpp("1e300"), "not a real scale"),
    "vertex 1e300": (lambda t: _first_vertex(t, "1e300"), "Vertex 1 X.*outside any slide"),
    "vertex NaN": (lambda t: _first_vertex(t, "NaN", "Y"), "Vertex 1 Y.*finite"),
    "vertex -1e12": (lambda t: _first_vertex(t, "-1e12"), "outside any slide"),
}


@CLEAN
@pytest.mark.parametrize("case", sorted(APERIO_NUMBERS))
def test_aperio_bad_numbers_are_refused_naming_the_file(tmp_path, case):
    from napari_cancerseg.annotations import read
    from napari_cancerseg.grading.report import grade_annotations

    edit, words = APERIO_NUMBERS[case]
    path = _aperio_variant(tmp_path, case.replace(" ", "_"), edit)
    with pytest.raises(ReadError) as error:
        read(path)
    assert_names_file(error.value, path, words)
    with pytest.raises(ReadError):  # grade reads the same file: never a NaN or infinite area
        grade_annotations(str(path))


@RIGHT
def test_aperio_zero_mpp_means_unknown_and_areas_stay_in_pixels(tmp_path):
    import xml.etree.ElementTree as ET

    from napari_cancerseg.annotations import read
    from napari_cancerseg.grading.report import grade_annotations

    source = stand_in_path(APERIO)
    root = ET.parse(source).getroot()  # the reference: the file's own regions and scale
    regions, mpp = len(root.findall(".//Region")), float(root.get("MicronsPerPixel"))
    path = _aperio_variant(tmp_path, "mpp0", _mpp("0"))
    annotation_set = read(path)
    assert annotation_set.mpp is None and len(annotation_set.annotations) == regions
    real = read(source)
    assert real.mpp == pytest.approx(mpp) and mpp > 0
    report = grade_annotations(str(path)).to_dict()
    in_um2 = grade_annotations(source).to_dict()
    assert report["unit"] == "px2" and in_um2["unit"] == "um2"
    # the same outlines: px² of the unknown scale times mpp² is the µm² of the real file
    assert report["tumour_area"] * mpp**2 == pytest.approx(in_um2["tumour_area"], rel=1e-9)
    assert report["tumour_area"] > 0
    json.dumps(report, allow_nan=False)  # valid JSON: no bare NaN or Infinity


def _qupath() -> list:
    return json.loads(Path(stand_in_path(QUPATH)).read_text())


def _geojson_variant(tmp_path, name: str, edit) -> Path:
    data = _qupath()
    data = edit(data)
    out = tmp_path / f"{name}.geojson"
    out.write_text(data if isinstance(data, str) else json.dumps(data))  # json.dumps writes NaN as NaN
    return out


def _set(path_keys, value):
    def edit(data):
        target = data[0]
        for key in path_keys[:-1]:
            target = target[key]
        target[path_keys[-1]] = value
        return data
    return edit


GEOJSON_BAD = {
    "features is 5": (lambda d: {"type": "FeatureCollection", "features": 5}, "'features' is int"),
    "feature is a number": (lambda d: [5, *d], "feature 1 is int"),
    "geometry is a string": (_set(["geometry"], "POLYGON ((0 0, 1 0, 1 1, 0 0))"),
                             "feature 1: geometry.*not a GeoJSON"),
    "classification is a number": (_set(["properties", "classification"], 5), "classification 5"),
    "colorRGB red": (_set(["properties", "classification", "colorRGB"], "red"), "colorRGB 'red' is not an integer"),
    "color out of range": (_set(["properties", "classification", "color"], [300, 0, 0]), "color.*0-255"),
    "properties is a string": (_set(["properties"], "tumour"), "properties 'tumour'"),
    "class name is a list": (_set(["properties", "classification", "name"], ["Tumor"]), "classification name"),
    "NaN coordinate": (lambda d: (d[0]["geometry"]["coordinates"][0][1].__setitem__(0, float("nan")), d)[1],
                       "feature 1: has NaN or infinite coordinates"),
    "coordinate 1e300": (lambda d: (d[0]["geometry"]["coordinates"][0][1].__setitem__(1, 1e300), d)[1],
                         "feature 1: a coordinate .* outside any slide"),
    "mpp NaN": (lambda d: {"type": "FeatureCollection", "features": d, "cancerseg": {"mpp": float("nan")}},
                "cancerseg.mpp.*finite"),
    "mpp negative": (lambda d: {"type": "FeatureCollection", "features": d, "cancerseg": {"mpp": -0.25}},
                     "cancerseg.mpp.*not a real scale"),
}


@CLEAN
@pytest.mark.parametrize("case", sorted(GEOJSON_BAD))
def test_geojson_malformed_members_are_refused_naming_the_file(tmp_path, case):
    from napari_cancerseg.annotations import read

    edit, words = GEOJSON_BAD[case]
    path = _geojson_variant(tmp_path, re.sub(r"\W+", "_", case), edit)
    with pytest.raises(ReadError) as error:
        read(path)
    assert_names_file(error.value, path, words)


@RIGHT
def test_geojson_classification_given_as_a_name_reads_the_same_polygons(tmp_path):
    from napari_cancerseg.annotations import read

    path = _geojson_variant(tmp_path, "class_string",
                            lambda d: [dict(f, properties={"classification": "Tumor"}) for f in d])
    as_names = read(path)
    reference = read(stand_in_path(APERIO))  # the README: the JSON gives the same polygons as the XML
    assert as_names.classes() == ["Tumor"] and len(as_names.annotations) == len(reference.annotations) > 0
    assert sorted(a.geometry.area for a in as_names.annotations) == pytest.approx(
        sorted(a.geometry.area for a in reference.annotations), rel=1e-6)


@CLEAN
@pytest.mark.parametrize("where", ["group", "annotation", "coordinate"])
def test_asap_bad_colour_or_coordinate_is_refused_naming_the_file(tmp_path, where):
    from napari_cancerseg.annotations import read

    text = Path(data_path(ASAP)).read_text()
    if where == "group":
        text = text.replace("<AnnotationGroups />", '<AnnotationGroups><Group Name="tumour" PartOfGroup="None" '
                                                     'Color="#zzzzzz"><Attributes /></Group></AnnotationGroups>')
        words = "Group 'tumour'.*colour '#zzzzzz' is not a #RRGGBB"
    elif where == "annotation":
        text = text.replace('Color="#F4FA58"', 'Color="#zzzzzz"')
        words = "colour '#zzzzzz'"
    else:
        text = re.sub(r'X="[^"]+"', 'X="1e300"', text, count=1)
        words = "Coordinate .* X.*outside any slide"
    assert "#zzzzzz" in text or "1e300" in text
    path = tmp_path / f"asap_{where}.xml"
    path.write_text(text)
    with pytest.raises(ReadError) as error:
        read(path)
    assert_names_file(error.value, path, words)


# ------------------------------------------------------------------ NIfTI headers


def _nifti_variant(tmp_path, name: str, mutate, compressed: bool = True) -> Path:
    """The real mask with its header edited byte for byte (nibabel would refuse to save some of these)."""
    import nibabel as nib

    with gzip.open(stand_in_path(PROSTATE_SEG)) as fh:
        raw = fh.read()
    header = nib.Nifti1Header.from_fileobj(io.BytesIO(raw[:348]), check=False)
    mutate(header)
    out = tmp_path / (f"{name}.nii.gz" if compressed else f"{name}.nii")
    body = header.binaryblock + raw[348:]
    if compressed:
        with gzip.open(out, "wb") as fh:
            fh.write(body)
    else:
        out.write_bytes(body)
    return out


def nib_header(path: str):
    import nibabel as nib

    return nib.load(path).header


def _setitem(key, index, value, **extra):
    def mutate(header):
        array = np.array(header[key])
        array[index] = value
        header[key] = array
        for k, v in extra.items():
            header[k] = v
    return mutate


NIFTI_BAD = {
    "NaN sform": (_setitem("srow_x", 0, np.nan, sform_code=1), "orientation .* NaN"),
    "NaN pixdim": (_setitem("pixdim", 1, np.nan, sform_code=0, qform_code=1), r"voxel size \(pixdim\).*not finite"),
    "infinite pixdim": (_setitem("pixdim", 2, np.inf, sform_code=0, qform_code=1), "not finite"),
    "singular affine": (_setitem("srow_x", slice(0, 4), 0.0, sform_code=1), "singular"),
    "vox_offset 1e12": (lambda h: h.__setitem__("vox_offset", 1e12), "vox_offset"),
}


@CLEAN
@pytest.mark.parametrize("compressed", [True, False], ids=["nii.gz", "nii"])
@pytest.mark.parametrize("case", sorted(NIFTI_BAD))
def test_nifti_broken_headers_are_refused_naming_the_file(tmp_path, case, compressed):
    from napari_cancerseg.io import open_layers

    mutate, words = NIFTI_BAD[case]
    path = _nifti_variant(tmp_path, re.sub(r"\W+", "_", case), mutate, compressed)
    with pytest.raises(ReadError) as error:
        open_layers(str(path))
    assert_names_file(error.value, path, words)


@RIGHT
@pytest.mark.parametrize("compressed", [True, False], ids=["nii.gz", "nii"])
def test_nifti_zero_pixdim_is_noted_not_silent(tmp_path, compressed):
    from napari_cancerseg.io import open_layers

    path = _nifti_variant(tmp_path, "zero_pixdim", _setitem("pixdim", 3, 0.0, sform_code=0, qform_code=1), compressed)
    ((data, kwargs, kind),) = open_layers(str(path))
    source = nib_header(stand_in_path(PROSTATE_SEG))  # the reference: the mask's own header (i, j, k order)
    assert kind == "labels" and data.shape == source.get_data_shape()[::-1]  # canonical (z, y, x)
    assert kwargs["scale"][1:] == pytest.approx(source.get_zooms()[1::-1], abs=1e-3)  # the other axes keep theirs
    assert kwargs["scale"][0] == 1.0
    (note,) = kwargs["metadata"]["notes"]
    assert path.name in note and "voxel size 0 along k" in note and "1 mm" in note


@CLEAN
@pytest.mark.parametrize("side", [1500, 30000])
@pytest.mark.parametrize("compressed", [True, False], ids=["nii.gz", "nii"])
def test_nifti_oversize_declaration_is_refused_before_allocating(tmp_path, side, compressed):
    path = _nifti_variant(tmp_path, f"big{side}", _setitem("dim", slice(1, 4), side), compressed)
    # in a child held to 1.5 GB of address space: a reader that allocated the declared volume (13.5 GB for
    # 1500^3 float32) would die with a MemoryError there instead of giving the header's problem
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (3 * 2**29, 3 * 2**29))\n"
        "from napari_cancerseg.io import open_layers\n"
        "try:\n    open_layers(sys.argv[1])\n"
        "except Exception as err:\n    print(type(err).__name__, err)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, timeout=120,
                            check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    kind, _, message = result.stdout.strip().partition(" ")
    assert kind == "ReadError", result.stdout + result.stderr
    words = "more than a .* gzip file can hold" if compressed else "is truncated: the header describes"
    assert str(path) in message and re.search(words, message) and f"{side} x {side} x {side}" in message, message


@CLEAN
def test_nifti_gz_larger_than_the_memory_available_is_refused(tmp_path, monkeypatch):
    from napari_cancerseg.io import nifti, open_layers

    path = tmp_path / "mask.nii.gz"
    shutil.copy(stand_in_path(PROSTATE_SEG), path)
    i, j, k = nib_header(str(path)).get_data_shape()  # the shared mask: 105 x 81 x 15 uint16, 255,150 bytes
    assert open_layers(str(path))[0][0].shape == (k, j, i)  # it reads while memory is plentiful
    monkeypatch.setattr(nifti, "available_memory", lambda: i * j * k // 3)  # a third of what its voxels need
    with pytest.raises(ReadError) as error:
        open_layers(str(path))
    assert_names_file(error.value, path, f"{i} x {j} x {k} voxels.*would not fit in the .* of memory available")
    uncompressed = tmp_path / "mask.nii"  # lazy on disk, but labels are painted in memory
    with gzip.open(path) as source:
        uncompressed.write_bytes(source.read())
    with pytest.raises(ReadError) as error:
        open_layers(str(uncompressed))
    assert_names_file(error.value, uncompressed, "label volume .*would not fit")


# ------------------------------------------------------------------ DICOM


@CLEAN
@pytest.mark.parametrize("fraction", [0.002, 0.5, 0.99])
def test_truncated_mammogram_is_called_truncated(tmp_path, fraction):
    from napari_cancerseg.io import open_layers

    raw = Path(data_path(MAMMO)).read_bytes()
    path = tmp_path / f"cut_{fraction}.dcm"
    path.write_bytes(raw[: int(len(raw) * fraction)])
    with pytest.raises(ReadError) as error:
        open_layers(str(path))
    assert_names_file(error.value, path, "is truncated")
    assert "PixelData" not in str(error.value)


@CLEAN
@pytest.mark.parametrize("source", ["mri", "mammogram"])
def test_dicom_rows_smaller_than_the_data_is_refused(tmp_path, source):
    import pydicom

    from napari_cancerseg.io import open_layers

    original = min(Path(stand_in_path(ADC)).glob("*.dcm")) if source == "mri" else Path(data_path(MAMMO))
    ds = pydicom.dcmread(original)
    ds.Rows = int(ds.Rows) - 10
    path = tmp_path / f"rows_{source}.dcm"
    ds.save_as(path)
    with pytest.raises(ReadError) as error:
        open_layers(str(path))
    assert_names_file(error.value, path, f"{int(ds.Rows)} rows")


DICOM_GEOMETRY = {
    "PixelSpacing NaN": (lambda ds: setattr(ds, "PixelSpacing", ["nan", "0.7031"]), "PixelSpacing .* not a positive"),
    "PixelSpacing negative": (lambda ds: setattr(ds, "PixelSpacing", [-0.7031, 0.7031]), "not a positive size"),
    "PixelSpacing zero": (lambda ds: setattr(ds, "PixelSpacing", [0, 0.7031]), "not a positive size"),
    "position NaN": (lambda ds: setattr(ds, "ImagePositionPatient", [0, "nan", 0]), "ImagePositionPatient .* finite"),
    "orientation zeros": (lambda ds: setattr(ds, "ImageOrientationPatient", [0] * 6),
                          "ImageOrientationPatient .* perpendicular unit vectors"),
}


@CLEAN
@pytest.mark.parametrize("case", sorted(DICOM_GEOMETRY))
def test_dicom_series_with_impossible_geometry_is_refused_naming_the_slice(tmp_path, case):
    import pydicom

    from napari_cancerseg.io import open_layers

    edit, words = DICOM_GEOMETRY[case]
    files = sorted(Path(stand_in_path(ADC)).glob("*.dcm"))
    for source in files:
        shutil.copy(source, tmp_path / source.name)
    broken = tmp_path / files[0].name  # the first slice: its spacing and orientation stand for the series
    ds = pydicom.dcmread(broken)
    edit(ds)
    ds.save_as(broken)
    with pytest.raises(ReadError) as error:
        open_layers(str(tmp_path))
    assert_names_file(error.value, broken, words)


@RIGHT
def test_two_acquisitions_sharing_a_series_uid_are_split_and_noted(tmp_path):
    import pydicom

    from napari_cancerseg.io import open_layers

    files = sorted(Path(stand_in_path(ADC)).glob("*.dcm"))
    # the reference, from the headers (the shared series: 256 x 256 x 20, 0.7031 mm pixels, 3 mm slices)
    first = pydicom.dcmread(files[0])
    normal = np.cross(*np.asarray(first.ImageOrientationPatient, float).reshape(2, 3))
    along = sorted(np.dot(np.asarray(pydicom.dcmread(f).ImagePositionPatient, float), normal) for f in files)
    gap = float(np.median(np.diff(along)))
    for index, source in enumerate(files):
        for acquisition in (1, 2):
            ds = pydicom.dcmread(source)
            ds.AcquisitionNumber = acquisition
            if acquisition == 2:  # a re-scan half a slice further: stacked, it interleaves into twice the slices
                ds.ImagePositionPatient = [float(v) for v in np.asarray(ds.ImagePositionPatient, float)
                                           + normal * gap / 2]
                ds.SOPInstanceUID = pydicom.uid.generate_uid()
            ds.save_as(tmp_path / f"{acquisition}-{index:02d}.dcm")
    layers = open_layers(str(tmp_path))
    assert len(layers) == 2
    for data, kwargs, kind in layers:
        assert kind == "image" and data.shape == (len(files), first.Rows, first.Columns)
        assert kwargs["scale"][0] == pytest.approx(gap, abs=0.01)  # whole slices, not half of one interleaved
        assert kwargs["scale"][1:] == pytest.approx([float(v) for v in first.PixelSpacing], abs=1e-3)
        assert any("holds 2 acquisitions" in note for note in kwargs["metadata"]["notes"])
    assert {kwargs["metadata"]["acquisition"] for _, kwargs, _ in layers} == {
        f"acquisition 1, {len(files)} slices", f"acquisition 2, {len(files)} slices"}


# ------------------------------------------------------------------ files that are not slides


@CLEAN
@pytest.mark.parametrize("case", ["plain tiff", "truncated tiff", "unknown kind", "missing"])
def test_files_no_reader_takes_get_a_reason(tmp_path, case):
    import openslide
    import tifffile

    from napari_cancerseg.io import open_layers

    # real tissue pixels, saved as the plain TIFF a user exports from any viewer
    region = np.asarray(openslide.OpenSlide(data_path("wsi/CMU-1-Small-Region.svs"))
                        .read_region((0, 0), 0, (300, 200)).convert("RGB"))
    plain = tmp_path / "region.tif"
    tifffile.imwrite(plain, region[..., :3])
    path, words = {
        "plain tiff": (plain, "plain TIFF .* 300 x 200 px uint8.*not recognise.*napari's own TIFF reader"),
        "truncated tiff": (tmp_path / "cut.tif", "not a valid TIFF"),
        "unknown kind": (tmp_path / "notes.docx", "not a kind of file this plugin reads"),
        "missing": (tmp_path / "absent.svs", "no such file"),
    }[case]
    if case == "truncated tiff":
        path.write_bytes(plain.read_bytes()[:100])
    if case == "unknown kind":
        path.write_bytes(b"PK\x03\x04 not ours")
    with pytest.raises(CancersegError) as error:
        open_layers(str(path))
    assert_names_file(error.value, path, words)


# ------------------------------------------------------------------ evaluation


@CLEAN
@pytest.mark.parametrize("spacing", [(-0.6, 0.6, 4.0), (np.nan, 0.6, 4.0), (0.0, 0.6, 4.0)],
                         ids=["negative", "NaN", "zero"])
def test_evaluate_refuses_spacings_that_would_give_wrong_distances(spacing):
    from napari_cancerseg.evaluation import LabelImage, evaluate_pair, read_label_image

    truth = read_label_image(stand_in_path(PROSTATE_SEG))
    (same,) = evaluate_pair(truth, truth)
    assert same.hd95 == 0.0  # the reference: a mask against itself
    bad = LabelImage(truth.case, truth.labels, spacing, "mm", "/data/bad_scale.zarr")
    with pytest.raises(CancersegError) as error:
        evaluate_pair(bad, truth)
    assert_names_file(error.value, "/data/bad_scale.zarr", "spacing .* not positive and finite")


@RIGHT
def test_negative_pixdim_in_nifti_still_measures_a_mask_against_itself_as_zero(tmp_path):
    from napari_cancerseg.evaluation import evaluate_pair, read_label_image

    along_i = float(nib_header(stand_in_path(PROSTATE_SEG))["pixdim"][1])  # 0.6 mm in the shared mask
    path = _nifti_variant(tmp_path, "neg_pixdim_seg", _setitem("pixdim", 1, -along_i, sform_code=0, qform_code=1))
    image = read_label_image(str(path))
    assert sorted(image.spacing) == pytest.approx(sorted(nib_header(stand_in_path(PROSTATE_SEG)).get_zooms()),
                                                  abs=1e-3)  # the shared mask: 0.6 x 0.6 x 4 mm
    (same,) = evaluate_pair(image, image)
    assert same.hd95 == 0.0 and same.dice == 1.0


@CLEAN
@pytest.mark.parametrize("empty", ["prediction", "truth", "both"])
def test_evaluate_on_empty_folders_is_an_error(tmp_path, empty, capsys):
    from napari_cancerseg.evaluation import evaluate_paths

    prediction, truth = tmp_path / "pred", tmp_path / "truth"
    prediction.mkdir()
    truth.mkdir()
    for folder in {"prediction": [truth], "truth": [prediction], "both": []}[empty]:
        for name in ("image01_labels.png", "image02_labels.png"):
            shutil.copy(stand_in_path(f"nuclei/{name}"), folder / name)
    with pytest.raises(CancersegError) as error:
        evaluate_paths(str(prediction), str(truth))
    empty_folder = truth if empty == "truth" else prediction
    assert_names_file(error.value, empty_folder, "empty.*nothing to evaluate")
    from napari_cancerseg.cli import main

    assert main(["evaluate", str(prediction), str(truth), "--json"]) == 2  # not 0 with zero cases
    assert "nothing to evaluate" in capsys.readouterr().err


# ------------------------------------------------------------------ bundles (metadata: no Keras)


def _bundle_variant(tmp_path, name: str, meta_edit=None, config_edit=None, raw_meta: bytes | None = None) -> Path:
    """The packaged real bundle with its bundle.json or Keras config.json rewritten."""
    out = tmp_path / f"{name}.keras"
    with zipfile.ZipFile(BUNDLE) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for member in source.namelist():
            data = source.read(member)
            if member == "cancerseg/bundle.json" and (meta_edit or raw_meta is not None):
                data = raw_meta if raw_meta is not None else json.dumps(meta_edit(json.loads(data))).encode()
            if member == "config.json" and config_edit:
                data = json.dumps(config_edit(json.loads(data))).encode()
            target.writestr(member, data, compress_type=source.getinfo(member).compress_type)  # weights stored
    return out


def _recipe(**changes):
    def edit(meta):
        meta["recipe"].update(changes)
        return meta
    return edit


def _meta(key, value):
    def edit(meta):
        if value is KeyError:
            del meta[key]
        else:
            meta[key] = value
        return meta
    return edit


BUNDLE_BAD = {
    "tile_size 4096": (_recipe(tile_size=4096), "tile_size 4096 .* from 8 to 2048"),
    "tile_size text": (_recipe(tile_size="512"), "tile_size '512'"),
    "divisor 0": (_recipe(divisor=0), "divisor 0"),
    "channels text": (_recipe(channels="three"), "channels 'three'"),
    "channels 0": (_recipe(channels=0), "channels 0"),
    "dtype int128": (_recipe(input_dtype="int128"), "input_dtype 'int128'"),
    "stain method": (_recipe(stain={"method": "reinhard"}), "stain method 'reinhard'"),
    "stain matrix": (_recipe(stain={"method": "macenko", "matrix": [[1, 2]], "max_concentrations": [1, 1]}),
                     "stain matrix has shape"),
    "stain text": (_recipe(stain="macenko"), "stain 'macenko' is not an object"),
    "mpp negative": (_recipe(mpp=-0.5), "mpp -0.5"),
    "mpp NaN": (_recipe(mpp=float("nan")), "mpp nan"),
    "overlap past half": (_recipe(overlap=200), "overlap 200"),
    "unknown recipe field": (_recipe(tilesize=256), "unknown recipe field.*tilesize"),
    "recipe a list": (_meta("recipe", [256, 32]), "'recipe' is list"),
    "classes text": (_meta("classes", "nuclei"), "'classes' must be a list"),
    "class label text": (_meta("classes", [{"label": "0", "name": "background"}]), "integer label"),
    "class labels repeat": (_meta("classes", [{"label": 1, "name": "a"}, {"label": 1, "name": "b"}]), "repeat"),
    "recipe missing": (_meta("recipe", KeyError), "missing recipe"),
    "name missing": (_meta("name", KeyError), "missing name"),
    "architecture text": (_meta("architecture", "unet"), "'architecture' must be an object"),
    "format_version text": (_meta("format_version", "1"), "unsupported bundle format"),
}


@CLEAN
@pytest.mark.parametrize("case", sorted(BUNDLE_BAD))
def test_broken_bundle_metadata_is_refused_before_keras(tmp_path, case):
    from napari_cancerseg.models.bundle import BundleError, bundle_info

    edit, words = BUNDLE_BAD[case]
    path = _bundle_variant(tmp_path, re.sub(r"\W+", "_", case), meta_edit=edit)
    with pytest.raises(BundleError) as error:
        bundle_info(path)
    assert_names_file(error.value, path, words)


@CLEAN
@pytest.mark.parametrize("raw", [b"[1, 2, 3]", b'{"format": ', b"\xff\xfe not text", b"null"],
                         ids=["a list", "cut short", "not UTF-8", "null"])
def test_malformed_bundle_json_is_a_bundle_error_not_a_python_one(tmp_path, raw):
    from napari_cancerseg.models.bundle import BundleError, bundle_info

    path = _bundle_variant(tmp_path, "raw", raw_meta=raw)
    with pytest.raises(BundleError) as error:
        bundle_info(path)
    assert_names_file(error.value, path, "corrupt bundle metadata")


def _input_shape(shape):
    def edit(config):
        config["config"]["layers"][0]["config"]["batch_shape"] = shape
        return config
    return edit


def _head_class(name):
    def edit(config):
        outputs = config["config"]["output_layers"]  # ["head", 0, 0] for one output, else a list of those
        head = outputs[0] if isinstance(outputs[0], str) else outputs[0][0]
        assert head == "head"
        for layer in config["config"]["layers"]:
            if layer["name"] == head:
                layer["class_name"] = name
        return config
    return edit


MISFITS = {
    "classifier builder": ({"meta_edit": _meta("architecture", {"builder": "efficientnetb0_classifier"})}, {},
                           "image classifier"),
    "grey slide": ({}, {"channels": 1}, "takes 3-channel tiles but the slide has 1"),
    "--tile 4096": ({}, {"tile": 4096}, "a 4096 px tile is outside 8-2048 px"),
    "fixed input size": ({"config_edit": _input_shape([None, 128, 128, 3])}, {}, "fixed 128 x 128 inputs"),
    "input channels": ({"config_edit": _input_shape([None, None, None, 4])}, {}, "input has 4 channels"),
    "classifier head": ({"config_edit": _head_class("Dense")}, {}, "Dense layer: a classifier head"),
}


@CLEAN
@pytest.mark.parametrize("case", sorted(MISFITS))
def test_bundle_that_cannot_segment_the_slide_is_refused_up_front(tmp_path, case):
    from napari_cancerseg.models.bundle import BundleError, bundle_info, check_segmentation_bundle

    variant, arguments, words = MISFITS[case]
    path = _bundle_variant(tmp_path, re.sub(r"\W+", "_", case), **variant)
    with pytest.raises(BundleError) as error:
        check_segmentation_bundle(bundle_info(path), **arguments)
    assert_names_file(error.value, path, "cannot segment the slide", words)


@RIGHT
def test_the_packaged_bundle_fits_an_rgb_slide():
    from napari_cancerseg.models.bundle import bundle_info, check_segmentation_bundle

    info = bundle_info(BUNDLE)
    assert (info.recipe.tile_size, info.recipe.divisor, info.recipe.channels) == (256, 16, 3)
    assert info.class_names == {0: "background", 1: "nucleus"}
    check_segmentation_bundle(info, channels=3)  # refusing the real bundle would be a wrong answer too
    check_segmentation_bundle(info, channels=3, tile=500)


# ------------------------------------------------------------------ model outputs (Keras)


def _model(kind: str):
    keras = pytest.importorskip("keras")
    inputs = keras.Input((None, None, 3), dtype="uint8")
    x = keras.layers.Rescaling(1 / 255)(inputs)
    if kind == "nan":
        x = keras.layers.Rescaling(float("nan"))(x)  # broken weights: every output is NaN
        x = keras.layers.Conv2D(1, 1, activation="sigmoid")(x)
    elif kind == "logits":
        x = keras.layers.Conv2D(1, 1, kernel_initializer="ones", bias_initializer=keras.initializers.Constant(2.0))(x)
    elif kind == "half":
        x = keras.layers.MaxPooling2D(2)(keras.layers.Conv2D(1, 1, activation="sigmoid")(x))
    elif kind == "three classes":
        x = keras.layers.Conv2D(3, 1, activation="softmax")(x)
    elif kind == "classifier":
        x = keras.layers.Dense(2, activation="softmax")(keras.layers.GlobalAveragePooling2D()(x))
    else:
        x = keras.layers.Conv2D(1, 1, activation="sigmoid")(x)
    return keras.Model(inputs, x)


def _tiles() -> np.ndarray:
    from PIL import Image

    image = np.asarray(Image.open(stand_in_path("nuclei/image01.png")).convert("RGB"))
    return np.stack([image[:64, :64], image[64:128, 64:128]])


@CLEAN
@pytest.mark.parametrize("as_uint8", [True, False], ids=["uint8 path", "float path"])
@pytest.mark.parametrize("kind", ["nan", "logits"])
def test_model_output_that_is_not_probabilities_is_refused_naming_the_bundle(kind, as_uint8):
    from napari_cancerseg.models.bundle import Bundle, BundleError, bundle_info

    bundle = Bundle(bundle_info(BUNDLE), _model(kind))
    with pytest.raises(BundleError) as error:
        bundle.predict_batch(_tiles(), as_uint8=as_uint8)
    words = "NaN or infinite" if kind == "nan" else "not probabilities in \\[0, 1\\]"
    assert_names_file(error.value, BUNDLE, "model's output", words)


@RIGHT
def test_a_sound_model_output_passes_the_check_unchanged():
    from napari_cancerseg.models.bundle import Bundle, bundle_info

    model = _model("sound")
    bundle = Bundle(bundle_info(BUNDLE), model)
    tiles = _tiles()
    quantised = bundle.predict_batch(tiles, as_uint8=True)
    probabilities = bundle.predict_batch(tiles)
    direct = np.asarray(model.predict_on_batch(tiles))[..., 0]  # 64 is a multiple of 16: no padding
    assert quantised.shape == probabilities.shape == (2, 64, 64, 2)
    np.testing.assert_allclose(probabilities[..., 1], direct, atol=1e-6)
    np.testing.assert_array_equal(quantised[..., 1], np.round(direct * 255).astype(np.uint8))


@CLEAN
@pytest.mark.parametrize("kind,words", [("half", "128 x 128 map for a 256 x 256 tile"),
                                        ("three classes", "3 output channel.*2 classes"),
                                        ("classifier", "not a per-pixel map")])
def test_model_whose_output_does_not_fit_the_recipe_is_refused_at_load(kind, words):
    from napari_cancerseg.models.bundle import BundleError, bundle_info, check_model_output

    with pytest.raises(BundleError) as error:
        check_model_output(bundle_info(BUNDLE), _model(kind))
    assert_names_file(error.value, BUNDLE, words)


# ------------------------------------------------------------------ notes reach the user


def _split_series(tmp_path) -> Path:
    import pydicom

    folder = tmp_path / "series"
    folder.mkdir()
    for index, source in enumerate(sorted(Path(stand_in_path(ADC)).glob("*.dcm"))[:4]):
        for acquisition in (1, 2):
            ds = pydicom.dcmread(source)
            ds.AcquisitionNumber = acquisition
            ds.SOPInstanceUID = pydicom.uid.generate_uid()
            ds.save_as(folder / f"{acquisition}-{index:02d}.dcm")
    return folder


@RIGHT
@pytest.mark.parametrize("kind", ["zero pixdim", "split series", "skipped feature"])
def test_reader_notes_reach_napari_and_the_cli(tmp_path, kind, monkeypatch, capsys):
    """What a reader repaired, split or skipped is shown (a napari notification, and `cancerseg info`)."""
    pytest.importorskip("napari")
    from napari.utils import notifications

    from napari_cancerseg._reader import get_reader
    from napari_cancerseg.cli import main

    if kind == "zero pixdim":
        path = _nifti_variant(tmp_path, "zero_pixdim", _setitem("pixdim", 3, 0.0, sform_code=0, qform_code=1))
        expected = "voxel size 0 along k"
    elif kind == "split series":
        path = _split_series(tmp_path)
        expected = "holds 2 acquisitions"
    else:
        path = _geojson_variant(tmp_path, "no_geometry", lambda d: [*d, {"type": "Feature", "geometry": None}])
        expected = "feature 4: no geometry, skipped"
    shown: list[str] = []
    monkeypatch.setattr(notifications, "show_info", shown.append)
    layers = get_reader(str(path))(str(path))
    assert layers and any(expected in message for message in shown), shown
    assert main(["info", str(path)]) == 0
    assert expected in capsys.readouterr().out
