"""Annotation files in napari: the reader, the import widget onto a slide, and export from Shapes and Labels."""

from __future__ import annotations

import numpy as np
import pytest

from napari_cancerseg import annotations
from napari_cancerseg.classes import GLEASON_4

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
