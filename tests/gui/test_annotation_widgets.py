"""Annotation files in napari: the reader, the import widget onto a slide, and export from Shapes and Labels."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cancerseg import annotations
from napari_cancerseg.classes import CLASSES, GLEASON_4, TUMOUR

from ..conftest import data_path

PLUGIN = "napari-cancerseg"


def test_reader_opens_annotation_files_as_shapes(make_napari_viewer):
    viewer = make_napari_viewer()
    xml = viewer.open(data_path("annotations/TCGA-EJ-5519-01Z-00-DX1.xml"), plugin=PLUGIN)
    assert [type(layer).__name__ for layer in xml] == ["Shapes"]
    shapes = xml[0]
    assert "CaP" in set(shapes.features["class"]) and tuple(shapes.scale) == pytest.approx((0.252, 0.252))
    assert [str(u) for u in shapes.units] == ["micrometer", "micrometer"]  # the file's µm/px, in µm
    outline = list(shapes.features["class"]).index("CaP")
    assert shapes.data[outline][:, 1].max() == pytest.approx(97163.012684)  # x in level-0 pixels, last axis
    # the file draws CaP green (LineColor 65280), benign's colour: the class table's ungraded tumour is shown
    np.testing.assert_allclose(shapes.edge_color[outline][:3], np.array(CLASSES[TUMOUR][1]) / 255)
    asap_layers = viewer.open(data_path("annotations/asap1.xml"), plugin=PLUGIN)
    assert [type(layer).__name__ for layer in asap_layers] == ["Shapes", "Points"]
    assert sorted(asap_layers[0].shape_type) == ["path", "polygon", "polygon", "polygon"]


def test_import_widget_lays_annotations_over_the_slide(make_napari_viewer):
    viewer = make_napari_viewer()
    slide = viewer.open(data_path("wsi/CMU-1-Small-Region.svs"), plugin=PLUGIN)[0]
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Import annotations")
    widget.path.value = data_path("annotations/asap1.xml")
    widget.slide.value = slide
    widget()
    shapes = viewer.layers["asap1.xml"]
    assert tuple(shapes.scale) == pytest.approx(tuple(slide.scale)) and shapes.metadata["slide"] == slide.name
    points = viewer.layers["asap1.xml points"]
    assert [str(u) for u in shapes.units] == [str(u) for u in points.units] == ["micrometer", "micrometer"]


def test_export_shapes_and_labels(make_napari_viewer, tmp_path):
    from napari_cancerseg.widgets.annotations import Format, export_layer

    viewer = make_napari_viewer()
    shapes = viewer.open(data_path("annotations/TCGA-EJ-5519-01Z-00-DX1.qupath.json"), plugin=PLUGIN)[0]
    out = export_layer(shapes, Format.geojson, tmp_path / "out.geojson")
    original = annotations.read(data_path("annotations/TCGA-EJ-5519-01Z-00-DX1.qupath.json"))
    again = annotations.read(out)
    assert sorted(a.class_name for a in again.annotations) == ["Negative", "Other", "Other", "Other", "Tumor"]
    assert sum(a.geometry.area for a in again.annotations) == pytest.approx(
        sum(a.geometry.area for a in original.annotations), rel=1e-6)  # napari keeps float32-ish precision

    labels = np.zeros((400, 500), np.uint8)
    labels[100:200, 50:250] = GLEASON_4
    labels[140:160, 100:120] = 0
    layer = viewer.add_labels(labels, name="corrected")
    out = export_layer(layer, Format.aperio, tmp_path / "corrected.xml", mpp=0.5)
    parsed = annotations.read(out)
    (item,) = parsed.annotations
    assert item.class_name == "Gleason pattern 4" and item.geometry.area == (labels == GLEASON_4).sum()
    assert len(item.geometry.interiors) == 1 and parsed.mpp == 0.5


def test_export_dock_saves_only_to_a_chosen_file_in_the_layers_own_classes(make_napari_viewer, tmp_path,
                                                                           monkeypatch):
    """Issue 17: with the path empty, Export wrote a file in the working directory; a nucleus prediction's label 1
    was saved as the Gleason table's "benign"."""
    from napari_cancerseg.widgets import annotations as dock_module
    from napari_cancerseg.widgets.annotations import Format

    errors: list[str] = []
    monkeypatch.setattr(dock_module, "show_error", errors.append)
    monkeypatch.chdir(tmp_path)
    viewer = make_napari_viewer()
    labels = np.zeros((300, 300), np.uint8)
    labels[100:150, 100:180] = 1
    layer = viewer.add_labels(labels, name="nuclei", features={"index": [0, 1], "class": ["background", "nucleus"]},
                              colormap={None: "transparent", 0: "transparent", 1: "magenta"})
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Export annotations")
    widget.layer.value = layer

    widget()  # nothing chosen: refused, nothing written anywhere
    assert len(errors) == 1 and "choose the file" in errors[0] and list(tmp_path.iterdir()) == []
    widget.fmt.value = Format.geojson
    widget.path.value = tmp_path / "nuclei.xml"  # GeoJSON under an XML name: refused
    widget()
    assert len(errors) == 2 and "nuclei.xml" in errors[1] and not (tmp_path / "nuclei.xml").exists()

    widget.path.value = tmp_path / "nuclei.geojson"
    widget()
    assert len(errors) == 2, errors
    (item,) = annotations.read(tmp_path / "nuclei.geojson").annotations
    assert item.class_name == "nucleus" and item.geometry.area == (labels == 1).sum()
    assert item.color == (255, 0, 255)  # the colour the layer is drawn in (magenta), not benign's green
