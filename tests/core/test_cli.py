"""`cancerseg info`: what the readers see, printed for people and as JSON."""

from __future__ import annotations

import json

import pytest

from napari_cancerseg.cli import main

from ..conftest import data_path


def test_info_json_for_a_slide(capsys):
    assert main(["info", data_path("wsi/test3-DAPI-2-387.ndpi"), "--json"]) == 0
    layer, = json.loads(capsys.readouterr().out)["layers"]
    assert layer["levels"] == 7 and layer["shapes"][0] == [4864, 3968, 3] and layer["dtype"] == "uint8"
    assert layer["scale"] == pytest.approx([0.2282, 0.2282], abs=1e-4) and layer["units"] == ["um", "um"]
    assert layer["metadata"]["vendor"] == "hamamatsu" and "properties" not in layer["metadata"]


def test_info_text_for_dicom_folder(capsys):
    assert main(["info", data_path("mri/QIN-PROSTATE-001")]) == 0
    out = capsys.readouterr().out
    assert "20 x 256 x 256" in out and "3 mm" in out and "labels, DICOM SEG" in out


def test_info_properties_on_request(capsys):
    main(["info", data_path("wsi/CMU-1-Small-Region.svs"), "--properties"])
    assert "aperio.AppMag = 20" in capsys.readouterr().out


def test_info_on_broken_file_exits_2(tmp_path, capsys):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"not a volume")
    assert main(["info", str(path)]) == 2
    assert str(path) in capsys.readouterr().err


def test_info_on_unknown_file_exits_2(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("x")
    assert main(["info", str(path)]) == 2
    assert "no reader" in capsys.readouterr().err


def test_train_splits_by_patient_and_writes_a_bundle(tmp_path, capsys):
    pytest.importorskip("keras")
    from napari_cancerseg.models.bundle import bundle_info

    images = data_path("brain/lgg-slices/images")
    out = tmp_path / "lgg.keras"
    code = main(["train", "--images", images, "--masks", data_path("brain/lgg-slices/masks"),
                 "--case-pattern", r"(TCGA_CS_\d+)", "--mask-threshold", "128",
                 "--val-cases", "TCGA_CS_4942", "--test-cases", "TCGA_CS_4944,TCGA_CS_5396",
                 "--out", str(out), "--epochs", "1", "--steps", "2", "--batch", "2", "--size", "64",
                 "--filters", "8,16", "--class-names", "background,tumour"])
    assert code == 0
    info = bundle_info(out)
    split = info.card["split"]
    patient = lambda name: "_".join(name.split("_")[:3])  # noqa: E731
    train_patients = {patient(n) for n in split["train"]}
    assert train_patients.isdisjoint({"TCGA_CS_4942", "TCGA_CS_4944", "TCGA_CS_5396"})
    assert {patient(n) for n in split["test (held out, reported)"]} == {"TCGA_CS_4944", "TCGA_CS_5396"}
    assert len(info.card["metrics"]["test_per_image"]) == len(split["test (held out, reported)"])
    assert "--case-pattern" in info.card["reproduce"]
    assert (tmp_path / "lgg.training.csv").exists()


def test_train_on_patch_dataset_splits_by_slide(tmp_path):
    pytest.importorskip("keras")
    import numpy as np
    import zarr
    from PIL import Image

    from napari_cancerseg.models.bundle import bundle_info

    image = np.asarray(Image.open(data_path("nuclei/image01.png")).convert("RGB"))
    mask = (np.asarray(Image.open(data_path("nuclei/image01_labels.png"))) > 0).astype(np.uint8)
    group = zarr.open_group(str(tmp_path / "patches.zarr"), mode="w")
    crops = [(y, x) for y in (0, 128, 256) for x in (0, 128, 256)]
    group.create_array("images", data=np.stack([image[y:y + 64, x:x + 64] for y, x in crops]))
    group.create_array("masks", data=np.stack([mask[y:y + 64, x:x + 64] for y, x in crops]))
    group.create_array("slides", data=np.array(["s1"] * 3 + ["s2"] * 3 + ["s3"] * 3))
    out = tmp_path / "p.keras"
    assert main(["train", "--patches", str(tmp_path / "patches.zarr"), "--val-cases", "s2", "--test-cases", "s3",
                 "--out", str(out), "--epochs", "1", "--steps", "1", "--batch", "2", "--size", "64",
                 "--filters", "8,16"]) == 0
    split = bundle_info(out).card["split"]
    assert split["train"] == ["patches[0]", "patches[1]", "patches[2]"]
    assert split["test (held out, reported)"] == ["patches[6]", "patches[7]", "patches[8]"]
