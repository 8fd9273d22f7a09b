"""`cancerseg info`: what the readers see, printed for people and as JSON."""

from __future__ import annotations

import json

import pytest

from napari_cancerseg.cli import main

from .conftest import data_path


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
