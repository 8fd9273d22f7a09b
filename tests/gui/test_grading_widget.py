"""The Gleason grading dock: table, bar chart, legend, exports, and the pattern overlay in a model process."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import box as rectangle

from napari_cancerseg.annotations import read, write
from napari_cancerseg.annotations.model import Annotation, AnnotationSet
from napari_cancerseg.annotations.raster import labelled_shapes
from napari_cancerseg.classes import TUMOUR
from napari_cancerseg.io.annotation_files import rasterise_to_store
from napari_cancerseg.widgets import grading as grading_dock

from ..conftest import data_path, large_slide, stand_in_path
from ..core.test_grading import tcga_area_mm2

PLUGIN = "napari-cancerseg"
CMU = "wsi/CMU-1-Small-Region.svs"
TCGA = "annotations/TCGA-EJ-5519-01Z-00-DX1.xml"
SCREENSHOTS = os.environ.get("CANCERSEG_SCREENSHOTS")  # a folder: the dock's screenshot is kept there to look at


def _save_dialog(monkeypatch, answers):
    """QFileDialog.getSaveFileName answering each call with the next path ("" = the user cancelled)."""
    asked = []

    def answer(parent, caption, suggested, filters):
        asked.append((caption, suggested, filters))
        return answers.pop(0), filters

    monkeypatch.setattr(grading_dock.QFileDialog, "getSaveFileName", answer)
    return asked


def _screenshots(viewer, widget, qtbot, name: str, dock: str | None = None) -> None:
    """With CANCERSEG_SCREENSHOTS set: the dock and the whole window, to look at."""
    if not SCREENSHOTS:
        return
    os.makedirs(SCREENSHOTS, exist_ok=True)
    viewer.window._qt_window.resize(1280, 1000)
    qtbot.wait(200)
    widget.native.grab().save(os.path.join(SCREENSHOTS, f"grading_dock_{dock or name}.png"))
    viewer.screenshot(os.path.join(SCREENSHOTS, f"grading_window_{name}.png"), canvas_only=False)


def _annotation_store(tmp_path, items, name, slide: str | None = None, shape=(2967, 2220), mpp=0.499):
    path = str(tmp_path / f"{name}.geojson")
    write(AnnotationSet(items), path)
    return rasterise_to_store(str(tmp_path / f"{name}.zarr"), labelled_shapes(read(path)), shape, 1.0, mpp,
                              properties={"slide_path": slide or data_path(CMU)})


def test_grading_dock_table_chart_exports_and_disclaimer(make_napari_viewer, qtbot, tmp_path, monkeypatch):
    store = _annotation_store(tmp_path, [Annotation(rectangle(0, 0, 400, 300), "Gleason 4"),
                                         Annotation(rectangle(1000, 1000, 1200, 1100), "Gleason 3")], "graded")
    viewer = make_napari_viewer(show=bool(SCREENSHOTS))
    if SCREENSHOTS:  # the graded slide under its annotations, for the screenshot
        viewer.open(data_path(CMU), plugin=PLUGIN)
    layer = viewer.open(store, plugin=PLUGIN)[0]
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Gleason grading")
    assert "research use only, not for diagnosis" in widget.disclaimer.value
    # before a grade: no table with made-up headers, a sentence saying what to do, no export
    assert widget.table.native.isHidden() and "No grade yet: run Grade" in widget.summary.value
    assert not widget.json_button.enabled
    # a store carries its scale and labels: the file-only inputs are off, never silently ignored
    assert not widget.mpp.enabled and not widget.mapping.enabled and widget.store_layer.enabled
    widget.store_layer.value = layer
    widget.grade()
    qtbot.waitUntil(lambda: widget.report is not None, timeout=60_000)
    assert widget.report.gleason_score == "4+3" and widget.report.isup_grade_group == 3
    assert "Gleason 4+3 = 7, ISUP grade group 3" in widget.summary.value
    assert "not for diagnosis" in widget.summary.value
    assert not widget.table.native.isHidden() and widget.table.shape[0] == 3  # the slide and two regions
    columns = list(widget.table.column_headers)
    assert columns[:2] == ["Gleason", "ISUP"] and columns[2] == "% pattern 4"  # the grade first, then ISUP's share
    slide = dict(zip(columns, widget.table.data[0]))
    pattern_4 = 120000 * 0.499 ** 2  # level-0 px of pattern 4 at the slide's 0.499 µm/px
    assert slide["Gleason"] == "4+3" and slide["ISUP"] == 3
    assert slide["% pattern 4"] == f"{100 * 120000 / 140000:.0f}%"
    assert slide["pattern 4"] == f"{pattern_4 / 1e6:.2f} mm²"  # 0.03 mm²
    tissue = widget.report.tissue_area  # the CMU slide's tissue, from its tissue mask
    assert 0 < tissue < 2220 * 2967 * 0.499 ** 2
    assert slide["tumour % of tissue"] == f"{100 * 140000 * 0.499 ** 2 / tissue:.0f}%"
    assert [bar[0] for bar in widget.chart.bars] == ["pattern 3", "pattern 4", "pattern 5"]  # no ungraded tumour
    assert widget.chart.bars[1][1] == pytest.approx(100 * 120000 / 140000) and widget.chart.bars[1][2] == (255, 165, 0)
    if SCREENSHOTS:
        os.makedirs(SCREENSHOTS, exist_ok=True)
        viewer.window._qt_window.resize(1280, 1000)
        viewer.reset_view()
        qtbot.wait(300)
        viewer.screenshot(os.path.join(SCREENSHOTS, "grading_window_cmu.png"), canvas_only=False)

    # exports go where the save dialog says, never to a guessed path; a cancelled dialog writes nothing
    asked = _save_dialog(monkeypatch, ["", str(tmp_path / "report.json"), str(tmp_path / "report")])
    before = set(os.listdir(tmp_path)) | set(os.listdir(os.getcwd()))
    assert widget.export("json") is None and set(os.listdir(tmp_path)) | set(os.listdir(os.getcwd())) == before
    exported = json.loads(open(widget.export("json")).read())
    assert exported["isup_grade_group"] == 3 and exported["research_use_only"] == "research use only, not for diagnosis"
    assert exported["areas_mm2"]["4"] == pytest.approx(pattern_4 / 1e6)
    rows = list(csv.reader(open(widget.export("csv"))))  # "report" -> report.csv
    assert rows[0][:3] == ["row", "gleason_score", "isup_grade_group"] and rows[1][0] == "slide" and len(rows) == 4
    assert [a[1] for a in asked] == ["graded.grading.json"] * 2 + ["graded.grading.csv"]
    (tmp_path / "again.csv").write_text("keep me")  # the dialog confirmed "again", not the existing again.csv
    _save_dialog(monkeypatch, [str(tmp_path / "again")])
    assert widget.export("csv") is None and (tmp_path / "again.csv").read_text() == "keep me"

    widget.source.value = "an annotation file"
    widget.annotations.value = stand_in_path(TCGA)  # tumour outlines without a Gleason pattern
    widget.report = None
    widget.grade()
    qtbot.waitUntil(lambda: widget.report is not None, timeout=60_000)
    assert widget.report.isup_grade_group is None and "no Gleason grade" in widget.summary.value

    bad = tmp_path / "broken.xml"
    bad.write_text("<Annotations><Annotation>")  # a failed grade leaves no earlier report to export
    widget.annotations.value = str(bad)
    widget.grade()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget.report is None and str(bad) in widget.summary.value and not widget.json_button.enabled
    assert widget.table.native.isHidden()


def test_grading_tcga_cap_as_pattern_4_from_the_dock(make_napari_viewer, qtbot, tmp_path):
    """TCGA's XML names its tumour "CaP": the dock's class mapping grades it, as the CLI's --map does."""
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Gleason grading")
    widget.source.value = "an annotation file"
    assert widget.mpp.enabled and widget.mapping.enabled and not widget.store_layer.enabled
    widget.annotations.value = data_path(TCGA)
    widget.mapping.value = "CaP=4"
    widget.grade()
    qtbot.waitUntil(lambda: widget.report is not None, timeout=60_000)
    report = widget.report
    assert report.gleason_score == "4+4" and report.isup_grade_group == 4
    assert "Gleason 4+4 = 8, ISUP grade group 4" in widget.summary.value
    expected_mm2 = tcga_area_mm2(data_path(TCGA))  # shapely area of the XML's polygons x 0.252² / 1e6
    assert report.tumour_area / 1e6 == pytest.approx(expected_mm2, rel=1e-6)
    assert report.areas["4"] == pytest.approx(report.tumour_area)  # all of it is pattern 4 now
    columns = list(widget.table.column_headers)
    slide = dict(zip(columns, widget.table.data[0]))
    assert slide["Gleason"] == "4+4" and slide["ISUP"] == 4 and slide["% pattern 4"] == "-"  # 8, not 7
    assert slide["tumour"] == slide["pattern 4"] == f"{expected_mm2:,.0f} mm²" == "194 mm²"
    assert f"tumour {expected_mm2:,.0f} mm²" in widget.summary.value and "e+" not in widget.summary.value
    _screenshots(viewer, widget, qtbot, "tcga")

    # the µm/px input replaces the file's 0.252: areas scale with its square
    widget.mpp.value = 0.5
    widget.report = None
    widget.grade()
    qtbot.waitUntil(lambda: widget.report is not None, timeout=60_000)
    assert widget.report.tumour_area / 1e6 == pytest.approx(expected_mm2 * (0.5 / 0.252) ** 2, rel=1e-6)

    widget.mapping.value = "CaP=7"  # a bad mapping is refused before grading, naming what to write
    widget.report = None
    widget.grade()
    assert widget.report is None and "CLASS=3|4|5|benign|tumour" in widget.summary.value

    widget.mapping.value = ""  # unmapped, CaP is tumour of no pattern: no grade, and the chart says what it shows
    widget.grade()
    qtbot.waitUntil(lambda: widget.report is not None, timeout=60_000)
    assert widget.report.gleason_score is None and "no Gleason grade" in widget.summary.value
    assert widget.chart.bars[-1][:2] == ("ungraded (of all)", pytest.approx(100.0))
    assert [bar[1] for bar in widget.chart.bars[:3]] == [0.0, 0.0, 0.0]  # no graded tumour to share out


def test_grading_dock_counts_the_nuclei_of_a_nucleus_store(make_napari_viewer, qtbot, tmp_path):
    from PIL import Image
    from skimage.measure import label as connected

    from napari_cancerseg.io import stores

    mask = (np.asarray(Image.open(stand_in_path("nuclei/image02_labels.png"))) > 0).astype(np.uint8)
    path = str(tmp_path / "nuclei.zarr")
    stores.write_labels(path, stores.label_pyramid(mask), scale=(0.5, 0.5), units=("um", "um"), name="nuclei",
                        properties={"downsample": 1.0, "classes": [{"label": 0, "name": "background"},
                                                                   {"label": 1, "name": "nucleus"}]})
    viewer = make_napari_viewer()
    layer = viewer.open(path, plugin=PLUGIN)[0]
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Gleason grading")
    widget.store_layer.value = layer
    widget.grade()
    qtbot.waitUntil(lambda: widget.report is not None, timeout=60_000)
    nuclei = int(connected(mask, connectivity=2).max())  # independently, the whole tile at once
    density = nuclei / (mask.size * 0.25 / 1e6)  # per mm² of the tile (no slide: its tissue is unknown)
    assert list(widget.table.column_headers) == ["nuclei", "nuclei per mm²", "tissue"]
    assert list(widget.table.data[0]) == [f"{nuclei:,}", f"{density:,.0f}", "-"]
    assert f"{nuclei:,} nuclei" in widget.summary.value and "Gleason" not in widget.summary.value


@pytest.fixture(scope="module")
def gleason_bundle(tmp_path_factory) -> str:
    """A tiny untrained Gleason classifier (64 px tiles at 0.5 µm/px), built in a child: no TensorFlow here."""
    classifier = str(tmp_path_factory.mktemp("bundle") / "gleason.keras")
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
    return classifier


def _follow_progress(widget) -> list:
    """The overlay's Progress messages as the dock receives them (connected before the event loop delivers any)."""
    from napari_cancerseg.processes import Progress

    seen: list = []
    widget.runner.worker.yielded.connect(lambda m: seen.append((m.done, m.total)) if isinstance(m, Progress) else None)
    return seen


def test_pattern_overlay_runs_in_a_model_process(make_napari_viewer, qtbot, tmp_path, gleason_bundle):
    store = _annotation_store(tmp_path, [Annotation(rectangle(100, 100, 612, 612), "tumour")], "tumour")
    viewer = make_napari_viewer(show=True)
    if SCREENSHOTS:
        viewer.open(data_path(CMU), plugin=PLUGIN)
    layer = viewer.open(store, plugin=PLUGIN)[0]
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Gleason grading")
    widget.store_layer.value, widget.classifier.value = layer, gleason_bundle

    # a path that is not a pattern overlay (here the segmentation itself, a store of ours) is refused up front
    before = sorted(p.name for p in (tmp_path / "tumour.zarr").rglob("*"))
    widget.overlay_out.value = store
    widget.overlay()
    assert widget.process is None and widget.worker is None and widget.runner.state == "idle"
    assert "not a pattern overlay" in widget.summary.value and store in widget.summary.value
    assert sorted(p.name for p in (tmp_path / "tumour.zarr").rglob("*")) == before

    chosen = str(tmp_path / "chosen" / "graded.zarr")
    widget.overlay_out.value = chosen
    widget.overlay()
    seen = _follow_progress(widget)
    qtbot.waitUntil(lambda: widget.worker is None, timeout=300_000)
    assert widget.runner.state == "done" and "tumour tiles graded" in widget.summary.value, widget.summary.value
    tiles = 9 * 9  # 64 px tiles 1-9 across x and y 100..612 each hold at least 5% tumour (edges: 28 and 36 of 64)
    assert seen[0] == (0, tiles) and seen[-1] == (tiles, tiles) and [d for d, _ in seen] == sorted({d for d, _ in seen})
    assert (widget.overlay_progress.value, widget.overlay_progress.max) == (tiles, tiles)  # 100%
    assert os.path.isdir(chosen) and not os.path.exists(f"{store}.patterns.zarr")  # the chosen path, not the default
    from napari_cancerseg.models.bundle import bundle_info

    classifier = bundle_info(gleason_bundle)  # the layer is named by slide and classifier, as predictions are
    patterns = viewer.layers[f"{Path(data_path(CMU)).stem} · {classifier.name} {classifier.version} patterns"]
    graded = np.asarray(patterns.data[0][100:612, 100:612])
    assert not (graded == TUMOUR).any() and graded.min() >= 1  # every tumour pixel took a pattern (or benign)
    assert "tensorflow" not in sys.modules
    _screenshots(viewer, widget, qtbot, "overlay", dock="overlay_done")


def test_cancelling_the_pattern_overlay_is_neutral_and_saves_nothing(make_napari_viewer, qtbot, tmp_path,
                                                                    gleason_bundle):
    # a whole 8k slide as tumour: 16,384 tiles, about a minute of classifying, so Cancel arrives mid-run even when
    # the GUI thread stalls for seconds (CI once saw all 1,645 tiles of CMU-1-Small-Region done before the click)
    slide = large_slide(tmp_path / "large.tif")
    store = _annotation_store(tmp_path, [Annotation(rectangle(0, 0, 8192, 8192), "tumour")], "slide", slide,
                              (8192, 8192), 0.5)
    viewer = make_napari_viewer(show=True)
    layer = viewer.open(store, plugin=PLUGIN)[0]
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Gleason grading")
    widget.store_layer.value, widget.classifier.value = layer, gleason_bundle
    widget.overlay()  # the default path, beside the segmentation
    seen = _follow_progress(widget)
    assert widget.cancel_button.enabled and not widget.overlay_button.enabled
    qtbot.waitUntil(lambda: bool(seen) or widget.worker is None, timeout=300_000)
    assert seen and seen[0] == (0, 128 * 128), (seen, widget.summary.value)  # tiles are being classified
    widget.cancel_button.native.click()  # the dock's own Cancel button
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    assert widget.runner.state == "cancelled", widget.summary.value
    assert widget.summary.value == widget.runner.cancelled_text and "failed" not in widget.summary.value
    assert widget.overlay_progress.value == 0 and widget.overlay_button.enabled and not widget.cancel_button.enabled
    # nothing half-written: neither the store nor its temporary build is left beside the segmentation
    assert sorted(os.listdir(tmp_path)) == ["large.tif", "slide.geojson", "slide.zarr"]
    assert not [layer.name for layer in viewer.layers if layer.name.endswith(" patterns")]
    if SCREENSHOTS:
        os.makedirs(SCREENSHOTS, exist_ok=True)
        widget.native.grab().save(os.path.join(SCREENSHOTS, "grading_dock_overlay_cancelled.png"))


def test_a_model_process_leaves_qts_global_thread_pool_its_threads(make_napari_viewer, qtbot):
    """The thread following a model process waits on it for the whole run: it must not take one of the global
    pool's threads (one per core), where Qt 5 converts and scales images while the GUI thread waits (napari's
    activity spinner): with those taken, the Train dock froze the window for 5.3 s on PyQt5."""
    from qtpy.QtCore import QThreadPool

    pool = QThreadPool.globalInstance()
    viewer = make_napari_viewer(show=True)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Gleason grading")
    qtbot.waitUntil(lambda: pool.activeThreadCount() == 0, timeout=10_000)
    threads = pool.maxThreadCount()
    widget.runner.start([sys.executable, "-c", "import time; time.sleep(60)"], "overlay")  # a child that waits
    qtbot.waitUntil(lambda: pool.activeThreadCount() == 1, timeout=10_000)  # its follower is running
    assert pool.maxThreadCount() - pool.activeThreadCount() == threads  # every thread Qt had is still free
    widget.cancel_button.native.click()
    qtbot.waitUntil(lambda: not widget.runner.running, timeout=30_000)
    assert widget.runner.state == "cancelled" and pool.maxThreadCount() == threads  # given back when it ends
