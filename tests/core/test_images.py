"""MRI volumes slice by slice and mammograms at model size: geometry round trips and end-to-end runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from napari_cancerseg.inference.images import predict_mammogram, predict_volume, prepare_mammogram
from napari_cancerseg.io.opening import layer_reader
from napari_cancerseg.models.bundle import Recipe
from napari_cancerseg.preprocess.contrast import normalise_intensity

from ..conftest import data_path

PROSTATE = "mri/prostate_t2.nii.gz"


class Thresholder:
    """A 'model' labelling pixels above a value: its output is known exactly at every pixel."""

    def __init__(self, size: int, channels: int = 1, threshold: float = 0.5):
        self.recipe = Recipe(tile_size=size, overlap=0, mpp=None, channels=channels, input_dtype="float32")
        self.threshold, self.seen = threshold, []

    def predict_batch(self, batch, as_uint8=False):
        batch = np.asarray(batch, np.float32)
        self.seen.append(batch.shape)
        foreground = (batch[..., 0] > self.threshold).astype(np.float32)
        return np.stack([1 - foreground, foreground], axis=-1)


def _image(path):
    data, kwargs, _ = next(layer for layer in layer_reader(data_path(path))() if layer[2] == "image")
    return np.asarray(data), kwargs


@pytest.mark.parametrize("size", [128, 64])  # padded (slices are 81 x 105), then cropped
def test_volume_slices_go_back_to_their_voxels(size):
    volume, _ = _image(PROSTATE)
    assert volume.shape == (15, 81, 105)
    model = Thresholder(size)
    labels = predict_volume(volume, model, batch=4)
    assert model.seen[0] == (4, size, size, 1) and labels.shape == volume.shape
    expected = (normalise_intensity(volume) > 0.5).astype(np.uint8)
    if size == 128:
        np.testing.assert_array_equal(labels, expected)  # pad + exact inverse: every voxel
    else:  # the centre 64 x 64 was seen; the cropped borders come back as background
        y0, x0 = (81 - 64) // 2, (105 - 64) // 2
        np.testing.assert_array_equal(labels[:, y0:y0 + 64, x0:x0 + 64], expected[:, y0:y0 + 64, x0:x0 + 64])
        assert labels.sum() == labels[:, y0:y0 + 64, x0:x0 + 64].sum()


def test_mammogram_mask_maps_back_to_the_original_coordinates():
    image, kwargs = _image("mammo/cbis-ddsm-P00173-benign-1-130.dcm")
    assert image.shape == (4432, 2864)
    prepared, box = prepare_mammogram(image, 256)
    assert prepared.shape == (256, 256) and 0 <= prepared.min() and prepared.max() <= 1

    class Square(Thresholder):  # marks one known square of the model's input
        def predict_batch(self, batch, as_uint8=False):
            out = np.zeros((*np.shape(batch)[:3], 2), np.float32)
            out[..., 0] = 1
            out[:, 64:128, 32:96] = (0, 1)
            return out

    prediction = predict_mammogram(image, Square(256))
    labels = prediction.labels
    assert labels.shape == image.shape and set(np.unique(labels)) == {0, 1}
    top, left, bottom, right = prediction.box
    rows, cols = np.nonzero(labels)
    scale_y, scale_x = (bottom - top) / 256, (right - left) / 256
    # the square's pixel centres, mapped through the box, bound the full-resolution mask
    assert rows.min() == pytest.approx(top + 64 * scale_y, abs=1)
    assert rows.max() == pytest.approx(top + 128 * scale_y, abs=1)
    assert cols.min() == pytest.approx(left + 32 * scale_x, abs=1)
    assert cols.max() == pytest.approx(left + 96 * scale_x, abs=1)
    assert labels.dtype == np.uint8 and labels[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()  # no blur


def _tiny_trained_volume_bundle(tmp_path):
    from napari_cancerseg.cli import main

    out = str(tmp_path / "prostate.keras")
    assert main(["train", "--volumes", data_path(PROSTATE), "--masks", data_path("mri/prostate_seg_one_label.nii.gz"),
                 "--out", out, "--size", "64", "--filters", "4,8", "--epochs", "1", "--steps", "2", "--batch", "2",
                 "--no-augment"]) == 0
    return out


def test_mri_model_trained_on_volume_slices_segments_nifti_and_dicom(tmp_path, capsys):
    pytest.importorskip("keras")
    import nibabel as nib

    from napari_cancerseg.cli import main
    from napari_cancerseg.models.bundle import bundle_info

    bundle = _tiny_trained_volume_bundle(tmp_path)
    info = bundle_info(bundle)
    assert info.recipe.channels == 1 and info.recipe.input_dtype == "float32"
    assert info.card["split"]["train"][0].startswith("prostate_t2[")
    capsys.readouterr()
    out = str(tmp_path / "seg.nii.gz")
    assert main(["segment", data_path(PROSTATE), "--model", bundle, "--out", out, "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    result = lines[-1]
    assert result["kind"] == "volume" and result["shape"] == [15, 81, 105]
    # the dock's bar: started (the model loading), then the slices done of 15, in order, up to all of them
    assert lines[0]["event"] == "started"
    slices = [(m["done"], m["total"]) for m in lines if m["event"] == "progress"]
    assert slices[-1] == (15, 15) and [d for d, _ in slices] == sorted({d for d, _ in slices}) and len(slices) >= 2
    source, written = nib.load(data_path(PROSTATE)), nib.load(out)
    assert written.shape == source.shape and np.allclose(written.affine, source.affine)
    (_, seg_kwargs, seg_type), = layer_reader(out)()
    _, image_kwargs = _image(PROSTATE)
    assert seg_type == "labels" and np.allclose(seg_kwargs["scale"], image_kwargs["scale"])
    assert np.allclose(seg_kwargs["translate"], image_kwargs["translate"])

    # a DICOM series gets a NIfTI that lands on the same voxels in the same place
    series = data_path("mri/QIN-PROSTATE-001/ADC")
    dicom_out = str(tmp_path / "adc.nii.gz")
    assert main(["segment", series, "--model", bundle, "--out", dicom_out]) == 0
    (_, kwargs, _), = layer_reader(dicom_out)()
    dicom_image, dicom_kwargs = _image("mri/QIN-PROSTATE-001/ADC")
    assert nib.load(dicom_out).shape == (256, 256, 20)
    assert np.allclose(kwargs["scale"], dicom_kwargs["scale"], atol=1e-4)
    assert np.allclose(kwargs["translate"], dicom_kwargs["translate"], atol=1e-3)


def test_lgg_slices_train_a_few_steps_and_run_end_to_end(tmp_path):
    pytest.importorskip("keras")
    from napari_cancerseg.cli import main
    from napari_cancerseg.evaluation import score
    from napari_cancerseg.models.bundle import load_bundle
    from napari_cancerseg.training.data import load_pairs

    lgg = data_path("brain/lgg-slices")
    out = str(tmp_path / "lgg.keras")
    assert main(["train", "--images", f"{lgg}/images", "--masks", f"{lgg}/masks", "--mask-threshold", "128",
                 "--case-pattern", r"(TCGA_CS_\d+)", "--test-cases", "TCGA_CS_4944", "--out", out, "--size", "128",
                 "--filters", "4,8,16", "--epochs", "1", "--steps", "2", "--batch", "2"]) == 0
    bundle = load_bundle(out)
    held_out = [p for p in load_pairs(f"{lgg}/images", f"{lgg}/masks", r"(TCGA_CS_\d+)", 128)
                if p.case == "TCGA_CS_4944"]
    assert len(held_out) == 4
    for pair in held_out:
        probabilities = bundle.predict_tile(pair.image)
        assert probabilities.shape == (512, 512, 2)
        result = score(probabilities.argmax(-1), pair.mask, 1, (1.0, 1.0), pair.name, "px")
        assert 0.0 <= result.dice <= 1.0
    assert bundle.metadata.card["split"]["test (held out, reported)"] == sorted(p.name for p in held_out)


def test_organ_classifier_from_class_folders_trains_and_routes(tmp_path, capsys):
    pytest.importorskip("keras")
    from napari_cancerseg.cli import main
    from napari_cancerseg.models.bundle import bundle_info

    root = tmp_path / "organ"
    (root / "brain").mkdir(parents=True)
    (root / "breast").mkdir()
    lgg = sorted((p for p in __import__("pathlib").Path(data_path("brain/lgg-slices/images")).iterdir()))[:4]
    for path in lgg:
        (root / "brain" / path.name).symlink_to(path)
    for name in ("cbis-ddsm-P00173-benign-1-130.dcm", "cbis-ddsm-P00820-malignant-1-280.dcm"):
        (root / "breast" / name).symlink_to(data_path(f"mammo/{name}"))
    out = str(tmp_path / "organ.keras")
    assert main(["train", "--task", "organ", "--images", str(root), "--out", out, "--size", "64", "--epochs", "1",
                 "--steps", "2", "--batch", "4"]) == 0
    info = bundle_info(out)
    assert [c["name"] for c in info.classes] == ["brain", "breast"] and info.name == "organ"
    assert info.card["class_counts"]["train"] == {"brain": 4, "breast": 2}
    assert info.card["class_weights"] == {"brain": 0.75, "breast": 1.5}  # 6 / (2 x 4), 6 / (2 x 2)
    capsys.readouterr()
    mammogram = data_path("mammo/cbis-ddsm-P00173-benign-1-130.dcm")
    assert main(["classify", mammogram, "--model", out, "--route", "breast=mammo.keras", "brain=brain.keras",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result["probabilities"]) == {"brain", "breast"}
    assert sum(result["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
    assert result["class"] == max(result["probabilities"], key=result["probabilities"].get)
    assert result["route"] == {"brain": "brain.keras", "breast": "mammo.keras"}[result["class"]]


@pytest.mark.parametrize("mask", ["mri/prostate_seg_one_label.nii.gz", "mri/prostate_seg_two_labels.nii.gz"])
def test_label_volumes_in_ml_are_voxel_count_times_voxel_volume(mask):
    import nibabel as nib

    from napari_cancerseg.inference.images import label_volumes_ml

    image = nib.load(data_path(mask))
    zooms = image.header.get_zooms()[:3]
    assert np.allclose(sorted(zooms), [0.6, 0.6, 4.0], atol=1e-4)  # the README's voxels: 1.44 mm³ each
    data = np.asarray(image.dataobj)
    volumes = label_volumes_ml(data_path(mask))
    labels = [int(v) for v in np.unique(data)]
    assert sorted(map(int, volumes)) == labels and len(labels) >= 2
    for label in labels:
        expected = np.count_nonzero(data == label) * float(np.prod(zooms)) / 1000.0
        assert volumes[str(label)] == pytest.approx(expected, rel=1e-6)
    assert sum(volumes.values()) == pytest.approx(105 * 81 * 15 * 0.6 * 0.6 * 4 / 1000, rel=1e-4)


def test_a_label_volume_that_is_no_nifti_is_named(tmp_path):
    from napari_cancerseg.errors import CancersegError
    from napari_cancerseg.inference.images import label_volumes_ml

    bad = tmp_path / "labels.nii.gz"
    bad.write_bytes(b"not a volume")
    with pytest.raises(CancersegError, match=str(bad)):
        label_volumes_ml(str(bad))


MAMMOGRAM = "mammo/cbis-ddsm-P00173-benign-1-130.dcm"


class Square(Thresholder):
    """A segmentation 'bundle' marking one known square of its input: what segment_file runs, without Keras."""

    is_classifier = False

    def __init__(self):
        super().__init__(256)
        from types import SimpleNamespace

        self.info = SimpleNamespace(name="square", version="0.1", path="square.keras",
                                    classes=[{"label": 0, "name": "background"}, {"label": 1, "name": "mass"}])

    def predict_batch(self, batch, as_uint8=False):
        out = np.zeros((*np.shape(batch)[:3], 2), np.float32)
        out[..., 0] = 1
        out[:, 64:128, 32:96] = (0, 1)
        return out


def test_mammogram_areas_are_pixel_count_times_spacing_squared(tmp_path, monkeypatch):
    import pydicom
    import zarr

    from napari_cancerseg.errors import WriteError
    from napari_cancerseg.inference.images import label_areas, segment_file
    from napari_cancerseg.io import stores
    from napari_cancerseg.models import bundle

    # the shared mammogram records no spacing: areas stay pixel counts, said to be so
    image, kwargs = _image(MAMMOGRAM)
    source = pydicom.dcmread(data_path(MAMMOGRAM))
    assert "PixelSpacing" not in source and "ImagerPixelSpacing" not in source
    labels = predict_mammogram(image, Square()).labels
    count = int(np.count_nonzero(labels == 1))
    assert 0 < count < labels.size
    areas, unit = label_areas(labels, kwargs["scale"], kwargs["units"])
    assert unit == "px2" and areas["1"] == count and areas["0"] == labels.size - count

    # the same pixels with the detector's spacing (ImagerPixelSpacing, mm; rows then columns) written into a copy,
    # segmented end to end as the dock's `cancerseg segment` does, to a store
    source.ImagerPixelSpacing = [0.07, 0.05]
    source.save_as(tmp_path / "spaced.dcm")
    monkeypatch.setattr(bundle, "load_bundle", lambda path: Square())
    out = str(tmp_path / "mammogram.zarr")
    result = segment_file(str(tmp_path / "spaced.dcm"), "square.keras", out)
    saved = np.asarray(zarr.open_group(out, mode="r")["0"])
    assert saved.shape == (4432, 2864) and int(np.count_nonzero(saved == 1)) == count
    assert result["area_unit"] == "um2"
    assert result["areas"]["1"] == pytest.approx(count * 70.0 * 50.0, rel=1e-9)  # 0.07 x 0.05 mm = 3500 µm²
    assert sum(result["areas"].values()) == pytest.approx(4432 * 0.07 * 2864 * 0.05 * 1e6, rel=1e-9)
    (_, layer_kwargs, _), = stores.read(out)
    assert list(layer_kwargs["features"]["class"]) == ["background", "mass"]  # the bundle's class table

    # an earlier segmentation is replaced; a store of another kind at that path never is
    assert segment_file(str(tmp_path / "spaced.dcm"), "square.keras", out)["out"] == out
    other = stores.write_labels(str(tmp_path / "annotations.zarr"), stores.label_pyramid(saved[:64, :64]),
                                scale=(1.0, 1.0), units=("pixel", "pixel"), name="annotations")
    with pytest.raises(WriteError, match="annotations.zarr"):
        segment_file(str(tmp_path / "spaced.dcm"), "square.keras", other)
    np.testing.assert_array_equal(zarr.open_group(other, mode="r")["0"][:], saved[:64, :64])
