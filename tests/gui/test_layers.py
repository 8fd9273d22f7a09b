"""Layers that say what they are (issue 17): class names on hover, names by slide and model, units everywhere,
a legend, readable heat maps, the slide's overview and magnification, docks that scroll."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_cancerseg import NUCLEI_MODEL, resource_path
from napari_cancerseg.classes import OTHER_COLOURS, TUMOUR

from ..conftest import data_path
from .test_correction_widgets import pixel_prediction

PLUGIN = "napari-cancerseg"
CMU = "wsi/CMU-1-Small-Region.svs"
QIN = "mri/QIN-PROSTATE-001"


def _screenshot(viewer, name: str, tmp_path) -> str:
    """What a user sees, saved under $CANCERSEG_SCREENSHOTS (to look at) or the test's folder."""
    folder = Path(os.environ.get("CANCERSEG_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    path = str(folder / name)
    viewer.screenshot(path, canvas_only=False)
    return path


def _labelled_pixel(store: str, value: int, step: int) -> tuple[int, int]:
    """A level-0 pixel of ``value`` on every ``step``-th row and column (the same pixel on every stride-2 level),
    inside a 5x5 block of it."""
    from napari_cancerseg.io.stores import read_attributes

    labels = zarr.open_array(f"{store}/{read_attributes(store).levels[0].path}", mode="r")[:]
    rows, cols = np.nonzero(labels == value)
    for r, c in zip(rows, cols):
        if r % step == 0 and c % step == 0 and r >= 2 and c >= 2 and (labels[r - 2:r + 3, c - 2:c + 3] == value).all():
            return int(r), int(c)
    raise AssertionError(f"no pixel of {value} in {store}")


def _status_at(viewer, layer, level0_pixel) -> str:
    """The status bar's text with the cursor on a level-0 pixel, brought into view (napari reads a multiscale
    layer's value from the part it has loaded)."""
    world = np.asarray(layer.translate) + np.asarray(layer.scale) * np.asarray(level0_pixel)
    viewer.scene.camera.center = tuple(world)
    return layer.get_status(tuple(world), world=True)["value"]


def _units(layer) -> set[str]:
    return {str(u) for u in layer.units}


def test_prediction_layers_name_classes_carry_units_and_heat_maps_read(make_napari_viewer, tmp_path, qtbot):
    from napari_cancerseg.models.bundle import bundle_info

    store = pixel_prediction(str(tmp_path / "cmu.zarr"))
    viewer = make_napari_viewer(show=True)
    slide_path = data_path(CMU)
    slide = viewer.open(slide_path, plugin=PLUGIN)[0]
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict slide")
    widget.slide.value = slide
    scale_bar = viewer.canvas.overlays.scale_bar
    assert scale_bar.visible  # a slide picked in the dock turns the scale bar on
    info = bundle_info(resource_path(NUCLEI_MODEL))
    assert widget.legend.entries == [("nucleus", (*OTHER_COLOURS[0], 255))]  # the model's one class, before a run

    widget.heatmap.value = "probability heat maps"
    widget._show_final(store, slide)  # what the dock does when the model process says done
    name = f"{Path(slide_path).stem} · {info.name} {info.version}"
    prediction = viewer.layers[name]  # named by slide and model, not "cmu"
    assert viewer.layers.selection.active is prediction
    # the heat map and then the glass come one event-loop turn apart; the prediction stays selected after each
    qtbot.waitUntil(lambda: any(" p(nucleus)" in layer.name and layer.visible for layer in viewer.layers),
                    timeout=30_000)
    assert viewer.layers.selection.active is prediction
    qtbot.waitUntil(lambda: any(layer.name.endswith("glass (not predicted)") and layer.visible
                                for layer in viewer.layers), timeout=30_000)
    assert viewer.layers.selection.active is prediction
    step = 2 ** (len(prediction.data) - 1)
    nucleus, glass = _labelled_pixel(store, 1, step), _labelled_pixel(store, 0, step)
    assert "class: nucleus" in _status_at(viewer, prediction, nucleus)  # what the status bar shows on hover
    assert "class: background" in _status_at(viewer, prediction, glass)
    assert widget.legend.entries == [("nucleus", (*OTHER_COLOURS[0], 255))]  # the store's classes, its colours
    assert widget.legend_title.value == f"classes of {name}"

    heat_map = viewer.layers[f"{name} p(nucleus)"]
    assert heat_map.blending == "translucent" and heat_map.colormap.name == "viridis"
    assert tuple(heat_map.contrast_limits) == (0.0, 1.0) and heat_map.colorbar.visible
    probability = zarr.open_array(f"{store}/probabilities", mode="r")
    r, c = nucleus
    assert float(np.asarray(heat_map.data[0][r, c])) == pytest.approx(probability[1, r, c] / 255.0)
    assert float(np.asarray(heat_map.data[0][r, c])) > 0.5  # labels are the most probable class

    assert widget.heat_class.choices == ("1: nucleus",)  # a heat map after the run, from the store
    widget.heat_class.value = "1: nucleus"
    (added,) = widget.add_heat_map()
    assert added.name.startswith(f"{name} p(nucleus)")
    assert viewer.layers.selection.active.name == added.name  # the layer asked for is the one selected (the dock's
    # viewer is napari's proxy for plugins: its layers are proxies too)
    qtbot.waitUntil(lambda: added.visible and added.colorbar.visible, timeout=10_000)  # drawn on later turns

    _, annotations = viewer.window.add_plugin_dock_widget(PLUGIN, "Import annotations")
    annotations.path.value, annotations.slide.value = data_path("annotations/asap1.xml"), slide
    annotations()
    overview = widget.add_overview()
    assert [layer.name.split(" ")[-1] for layer in overview] == ["thumbnail", "label", "macro"]
    assert not any(layer.visible for layer in overview)
    thumbnail = overview[0]
    np.testing.assert_allclose(thumbnail.extent.world, slide.extent.world, rtol=0.01)  # it lies over the slide

    # every layer in µm, so napari keeps world units: no "Inconsistent units", the scale bar stays in µm
    assert {layer.name: _units(layer) for layer in viewer.layers} == \
        {layer.name: {"micrometer"} for layer in viewer.layers}
    assert {str(u) for u in viewer.layers.extent.units} == {"micrometer"}
    # what a pathologist sees: the prediction with its legend and the hover status, then the heat map's colorbar
    viewer.window.resize(1500, 1000)
    added.visible = heat_map.visible = False
    viewer.scene.camera.center = tuple(np.asarray(slide.scale) * np.asarray(nucleus))
    viewer.scene.camera.zoom = 2.0
    viewer.status = prediction.get_status(tuple(np.asarray(slide.scale) * np.asarray(nucleus)), world=True)
    qtbot.wait(500)
    _screenshot(viewer, "layers_prediction_legend_hover.png", tmp_path)
    heat_map.visible = True
    viewer.layers.selection.active = heat_map
    qtbot.wait(500)
    _screenshot(viewer, "layers_heat_map_colorbar.png", tmp_path)


def test_reopened_stores_name_their_classes(make_napari_viewer, tmp_path):
    from napari_cancerseg import annotations
    from napari_cancerseg.annotations.raster import labelled_shapes
    from napari_cancerseg.io.annotation_files import rasterise_to_store

    store = pixel_prediction(str(tmp_path / "cmu2.zarr"))
    viewer = make_napari_viewer()
    (reopened,) = viewer.open(store, plugin=PLUGIN)
    assert reopened.name == f"{Path(data_path(CMU)).stem} · nuclei-unet 1.0.0"  # not "prediction"
    # the glass layer Predict adds beside it is named by slide and model too, from the bundle's own card
    from napari_cancerseg.io.stores import glass_layer
    from napari_cancerseg.models.bundle import bundle_info

    bundle = bundle_info(resource_path(NUCLEI_MODEL))
    data, kwargs, _ = glass_layer(store)
    glass = viewer.add_labels(data, **kwargs)
    assert glass.name == f"{Path(data_path(CMU)).stem} · {bundle.name} {bundle.version} glass (not predicted)"
    assert glass.name.startswith(reopened.name)
    step = 2 ** (len(reopened.data) - 1)
    assert "class: nucleus" in _status_at(viewer, reopened, _labelled_pixel(store, 1, step))

    parsed = annotations.read(data_path("annotations/TCGA-EJ-5519-01Z-00-DX1.xml"))
    cap = parsed.by_class("CaP")
    x1, y1 = cap[0].geometry.bounds[2:]
    raster = rasterise_to_store(str(tmp_path / "cap.zarr"), labelled_shapes(cap), (int(y1) + 10, int(x1) + 10), 16,
                                parsed.mpp)
    viewer.layers.clear()  # the view then shows the whole store (napari reads values from what it has loaded)
    (layer,) = viewer.open(raster, plugin=PLUGIN)
    assert list(layer.features["class"])[list(layer.features["index"]).index(TUMOUR)] == "tumour, ungraded"
    assert _units(layer) == {"micrometer"}
    tumour = _labelled_pixel(raster, TUMOUR, 2 ** (len(layer.data) - 1))
    assert "class: tumour, ungraded" in _status_at(viewer, layer, tumour)


def test_dicom_seg_segments_have_names_and_their_colours(make_napari_viewer):
    from skimage.color import lab2rgb

    viewer = make_napari_viewer()
    _, seg = viewer.open(data_path(QIN), plugin=PLUGIN)
    assert list(seg.features["class"]) == ["background", "Normal", "Peripheral zone of the prostate", "Lesion",
                                           "Prostate"]
    # the Lesion's RecommendedDisplayCIELabValue (63660, 27356, 57178), converted by scikit-image
    lab = np.array([63660 * 100 / 65535, 27356 * 255 / 65535 - 128, 57178 * 255 / 65535 - 128])
    np.testing.assert_allclose(seg.get_color(3)[:3], lab2rgb(lab[None, None])[0, 0], atol=0.01)
    z, y, x = (int(v[0]) for v in np.nonzero(np.asarray(seg.data) == 3))
    world = np.asarray(seg.data_to_world((z, y, x)))
    viewer.dims.set_point(0, world[0])
    assert "class: Lesion" in seg.get_status(tuple(world), world=True)["value"]


def test_magnification_follows_the_zoom(make_napari_viewer):
    viewer = make_napari_viewer()
    slide = viewer.open(data_path(CMU), plugin=PLUGIN)[0]
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict slide")
    widget.slide.value = slide
    viewer.scene.camera.zoom = 1 / slide.scale[-1]  # one level-0 pixel per screen pixel: the objective's 20x
    assert widget.magnification.value == "magnification: 20x"
    viewer.scene.camera.zoom = 0.25 / slide.scale[-1]
    assert widget.magnification.value == "magnification: 5.0x"


def test_docks_scroll_instead_of_growing_the_window(make_napari_viewer):
    from qtpy.QtWidgets import QScrollArea

    viewer = make_napari_viewer(show=True)
    dock, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict slide")
    assert isinstance(dock.widget(), QScrollArea) and dock.widget().widget() is not None
    inner_layout = dock.widget().widget().layout()
    rows = [inner_layout.itemAt(k).widget() for k in range(inner_layout.count())]
    title = next(k for k, row in enumerate(rows) if row is not None and row.isAncestorOf(widget.legend_title.native))
    assert rows.index(widget.legend) == title + 1  # under its title, and it scrolls with the rest
    inner = dock.widget().widget().sizeHint().height()
    dock.widget().setFixedHeight(200)  # a short dock: the contents keep their size and scroll
    assert dock.widget().verticalScrollBar().maximum() > 0 and inner > 200


#: Every dock of the plugin's manifest (napari.yaml), by its display name.
DOCKS = ("Predict slide", "Correct regions", "Train in background", "Gleason grading", "MRI and mammograms",
         "Evaluate segmentation", "Import annotations", "Export annotations")


def test_all_docks_together_fit_on_the_screen(make_napari_viewer, qtbot, tmp_path):
    from qtpy.QtWidgets import QApplication, QScrollArea

    viewer = make_napari_viewer(show=True)
    docks = [viewer.window.add_plugin_dock_widget(PLUGIN, name)[0] for name in DOCKS]
    qtbot.wait(50)  # the docks are laid out
    screen = QApplication.primaryScreen().availableGeometry().height()
    assert screen <= 1024  # the Xvfb screen the GUI tests run on (README), or a smaller one
    window = docks[0].window()  # napari's main window (the docks' top-level window)
    for name, dock in zip(DOCKS, docks):
        assert isinstance(dock.widget(), QScrollArea), name
        assert dock.widget().widget().sizeHint().height() > 0, name
    # their contents together are taller than the screen: without scroll areas the window would grow
    assert sum(dock.widget().widget().sizeHint().height() for dock in docks) > screen
    assert window.frameGeometry().height() <= screen, window.frameGeometry()
    assert any(dock.widget().verticalScrollBar().maximum() > 0 for dock in docks)  # the rest scrolls
    _screenshot(viewer, "all_docks.png", tmp_path)
