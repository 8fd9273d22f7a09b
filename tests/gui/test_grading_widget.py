"""The Gleason grading dock: table, bar chart, legend, exports, and the pattern overlay in a model process."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from shapely.geometry import box as rectangle

from napari_cancerseg.annotations import read, write
from napari_cancerseg.annotations.model import Annotation, AnnotationSet
from napari_cancerseg.annotations.raster import labelled_shapes
from napari_cancerseg.classes import TUMOUR
from napari_cancerseg.io.annotation_files import rasterise_to_store

from ..conftest import data_path

PLUGIN = "napari-cancerseg"
CMU = "wsi/CMU-1-Small-Region.svs"


def _annotation_store(tmp_path, items, name):
    path = str(tmp_path / f"{name}.geojson")
    write(AnnotationSet(items), path)
    return rasterise_to_store(str(tmp_path / f"{name}.zarr"), labelled_shapes(read(path)), (2967, 2220), 1.0, 0.499,
                              properties={"slide_path": data_path(CMU)})


def test_grading_dock_table_chart_exports_and_disclaimer(make_napari_viewer, qtbot, tmp_path):
    store = _annotation_store(tmp_path, [Annotation(rectangle(0, 0, 400, 300), "Gleason 4"),
                                         Annotation(rectangle(1000, 1000, 1200, 1100), "Gleason 3")], "graded")
    viewer = make_napari_viewer()
    layer = viewer.open(store, plugin=PLUGIN)[0]
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Gleason grading")
    assert "research use only, not for diagnosis" in widget.disclaimer.value
    widget.store_layer.value = layer
    widget.grade()
    qtbot.waitUntil(lambda: widget.report is not None, timeout=60_000)
    assert widget.report.gleason_score == "4+3" and widget.report.isup_grade_group == 3
    assert "Gleason 4+3, ISUP grade group 3" in widget.summary.value and "not for diagnosis" in widget.summary.value
    assert widget.table.shape[0] == 3  # the slide and two regions
    assert [bar[0] for bar in widget.chart.bars] == ["pattern 3", "pattern 4", "pattern 5", "ungraded"]
    assert widget.chart.bars[1][1] == pytest.approx(100 * 120000 / 140000) and widget.chart.bars[1][2] == (255, 165, 0)
    widget.export_path.value = str(tmp_path / "report")
    exported = json.loads(open(widget.export("json")).read())
    assert exported["isup_grade_group"] == 3 and exported["research_use_only"] == "research use only, not for diagnosis"
    rows = list(csv.reader(open(widget.export("csv"))))
    assert rows[1][0] == "slide" and len(rows) == 4

    widget.source.value = "an annotation file"
    widget.annotations.value = data_path("annotations/TCGA-EJ-5519-01Z-00-DX1.xml")
    widget.report = None
    widget.grade()
    qtbot.waitUntil(lambda: widget.report is not None, timeout=60_000)
    assert widget.report.isup_grade_group is None and "no Gleason grade" in widget.summary.value


def test_pattern_overlay_runs_in_a_model_process(make_napari_viewer, qtbot, tmp_path):
    classifier = str(tmp_path / "gleason.keras")
    script = textwrap.dedent(f"""
        from napari_cancerseg.models.bundle import Recipe, save_bundle
        from napari_cancerseg.models.classifier import build_classifier
        from napari_cancerseg.training.classifier import CLASS_NAMES
        save_bundle(build_classifier(4, (64, 64, 3), dense_units=8), {classifier!r}, name="gleason", version="0",
                    architecture={{"builder": "efficientnetb0_classifier"}},
                    recipe=Recipe(tile_size=64, overlap=0, mpp=0.5, divisor=1),
                    classes=[{{"label": k, "name": n}} for k, n in enumerate(CLASS_NAMES)])
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True)
    store = _annotation_store(tmp_path, [Annotation(rectangle(100, 100, 612, 612), "tumour")], "tumour")
    viewer = make_napari_viewer()
    layer = viewer.open(store, plugin=PLUGIN)[0]
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Gleason grading")
    widget.store_layer.value, widget.classifier.value = layer, classifier
    widget.overlay()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=300_000)
    assert "tumour tiles graded" in widget.summary.value, widget.summary.value
    patterns = viewer.layers["Gleason patterns"]
    graded = np.asarray(patterns.data[0][100:612, 100:612])
    assert not (graded == TUMOUR).any() and graded.min() >= 1  # every tumour pixel took a pattern (or benign)
    assert "tensorflow" not in sys.modules
