"""The annotator's loop in napari: correct regions (autosaved), accept, cut patches, fine-tune in the background."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import zarr

from napari_cancerseg import NUCLEI_MODEL, resource_path
from napari_cancerseg.correction.active import uncertain_regions
from napari_cancerseg.io.stores import LabelStore
from napari_cancerseg.io.stores.drafts import pending_drafts

from ..conftest import data_path

PLUGIN = "napari-cancerseg"
CMU = "wsi/CMU-1-Small-Region.svs"


class PixelModel:
    """Dark pixels are foreground: a prediction store without a model process (and without TensorFlow)."""

    def predict_batch(self, tiles, as_uint8=False):
        p = 1.0 - np.asarray(tiles, np.float32).mean(axis=-1) / 255.0
        return np.stack([1.0 - p, p], axis=-1)


def pixel_prediction(out: str) -> str:
    from napari_cancerseg.inference.engine import predict_slide

    predict_slide(data_path(CMU), resource_path(NUCLEI_MODEL), out, model=PixelModel(), tissue=0.3, tile=256,
                  overlap=32)
    return out


def bundle_weights_differ(a: str, b: str) -> bool:
    """Whether two bundles (one architecture) hold different weights: the largest change over all their arrays."""
    import io
    import zipfile

    import h5py

    def arrays(path: str) -> dict[str, np.ndarray]:
        with zipfile.ZipFile(path) as bundle, h5py.File(io.BytesIO(bundle.read("model.weights.h5")), "r") as weights:
            found: dict[str, np.ndarray] = {}
            weights.visititems(lambda name, item: found.__setitem__(name, item[()])
                               if isinstance(item, h5py.Dataset) else None)
            return found

    first, second = arrays(a), arrays(b)
    assert first.keys() == second.keys() and first, "not the same architecture"
    return max(float(np.abs(first[k].astype(float) - second[k].astype(float)).max()) for k in first) > 0


def _wait(qtbot, condition, seconds):
    qtbot.waitUntil(condition, timeout=int(seconds * 1000))


def _suggestions_shown(viewer) -> bool:
    """The suggestions layer (made hidden with the dock) is filled by Suggest and shown on a later event-loop turn."""
    return "next regions to correct" in viewer.layers and viewer.layers["next regions to correct"].visible


def test_predict_correct_accept_patches_and_train_in_the_background(make_napari_viewer, qtbot, tmp_path,
                                                                   event_loop_latency):
    viewer = make_napari_viewer()
    slide = viewer.open(data_path(CMU), plugin=PLUGIN)[0]
    _, predict = viewer.window.add_plugin_dock_widget(PLUGIN, "Predict slide")
    predict.slide.value, predict.tissue.value = slide, 0.3
    predict.out.value = str(tmp_path / "cmu.zarr")
    predict.run()
    _wait(qtbot, lambda: predict.process is None, 240)
    prediction = viewer.layers.selection.active  # the prediction, named by slide and model
    store = str(tmp_path / "cmu.zarr")

    _, correct = viewer.window.add_plugin_dock_widget(PLUGIN, "Correct regions")
    correct.store_layer.value = prediction
    before = np.asarray(zarr.open_array(f"{store}/labels/0")[:])
    corrected = []
    for box in [(600, 800, 400, 300), (1200, 1500, 256, 256)]:  # two regions, one after the other
        session = correct.edit(box=box)
        assert session.layer.data.shape == (box[3], box[2]) and session.region.level == 0
        session.layer.brush_size = 40
        session.layer.paint((100, 100), 1)
        session.layer.paint((200, 60), 0)
        corrected.append((box, np.asarray(session.layer.data).copy()))
        viewer.layers.selection.active = session.layer
        correct.accept()
        _wait(qtbot, lambda: correct.worker is None, 60)  # Accept writes the store in a thread
        assert correct.sessions == [] and not session.layer.visible  # put away for the next region
    after = np.asarray(zarr.open_array(f"{store}/labels/0")[:])
    for (x, y, w, h), painted in corrected:
        np.testing.assert_array_equal(after[y:y + h, x:x + w], painted)
    assert (after != before).sum() > 1000
    np.testing.assert_array_equal(np.asarray(prediction.data[0][800:1100, 600:1000]), corrected[0][1])  # redrawn
    assert [c["box"] for c in LabelStore(store).corrections] == [list(b) for b, _ in corrected]

    base = str(tmp_path / "nuclei.keras")
    shutil.copy(resource_path(NUCLEI_MODEL), base)
    _, train = viewer.window.add_plugin_dock_widget(PLUGIN, "Train in background")
    train.store_layer.value, train.model.value = prediction, base
    train.size.value, train.epochs.value, train.steps.value, train.batch.value = 128, 1, 2, 2
    train.lr.value = 0.01
    with event_loop_latency as latency:
        train.train()
        _wait(qtbot, lambda: train.worker is None, 300)
    assert "tensorflow" not in sys.modules
    events = [m.get("stage") or m["event"] for m in train.events_seen]  # progress messages by stage
    assert events[0] == "patches" and events.count("step") == 2 and events[-1] == "done", train.events_seen
    assert events.index("started") < events.index("step")  # loading the model is a step a person sees
    assert train.new_bundle == str(tmp_path / "nuclei-v1.1.0.keras") and os.path.exists(train.new_bundle)
    assert os.path.exists(base)  # the previous version stays
    assert len(train.plot.series["loss"]) == 2
    latency.report("training")
    assert len(latency.gaps) > 10
    assert latency.largest_gap < latency.bound, latency.summary()  # 0.2 s at the reference speed (conftest)

    patches = zarr.open_group(f"{store}.patches.zarr", mode="r")
    assert patches["images"].shape[1:] == (128, 128, 3) and patches.attrs["summary"]["patches"] > 0
    # the new bundle's weights moved: read from both files' weights (h5py; TensorFlow stays out of this process)
    assert bundle_weights_differ(base, train.new_bundle)

    train.use_new_bundle()
    assert str(predict.model.value) == train.new_bundle
    train.out.value = base  # an existing bundle as the output: refused before anything starts, nothing replaced
    train.train()
    assert train.worker is None and train.status.value.startswith("not started: ") and "exists" in train.status.value


KILLED_SESSION = """
import os, sys, time
import numpy as np
import napari
from qtpy.QtWidgets import QApplication
store, expected = sys.argv[1], sys.argv[2]
viewer = napari.Viewer(show=False)
layer = viewer.open(store, plugin="napari-cancerseg")[0]
_, widget = viewer.window.add_plugin_dock_widget("napari-cancerseg", "Correct regions")
widget.store_layer.value = layer
session = widget.edit(box=(600, 800, 400, 300))
session.layer.brush_size = 50
session.layer.paint((120, 150), 1)
session.layer.paint((40, 300), 0)
np.save(expected, np.asarray(session.layer.data))
end = time.time() + 2.0  # four autosave intervals
while time.time() < end:
    QApplication.processEvents()
    time.sleep(0.02)
print("painted", flush=True)
time.sleep(600)
"""


def test_a_killed_session_loses_nothing_autosaved_and_the_draft_is_restored(make_napari_viewer, qtbot, tmp_path):
    store = pixel_prediction(str(tmp_path / "pixels.zarr"))
    expected = str(tmp_path / "expected.npy")
    script = tmp_path / "session.py"
    script.write_text(KILLED_SESSION)
    child = subprocess.Popen([sys.executable, str(script), store, expected], stdout=subprocess.PIPE, text=True,
                             env=dict(os.environ, CANCERSEG_AUTOSAVE_SECONDS="0.5"))
    try:
        assert child.stdout.readline().strip() == "painted"
    finally:
        child.send_signal(signal.SIGKILL)  # no chance to save on exit: only the autosave counts
        child.wait()
    (draft,) = pending_drafts(store)
    painted = np.load(expected)
    np.testing.assert_array_equal(draft.load(), painted)
    before = np.asarray(zarr.open_array(f"{store}/labels/0")[800:1100, 600:1000])
    assert (painted != before).sum() > 1000  # the paint did something

    viewer = make_napari_viewer()
    layer = viewer.open(store, plugin=PLUGIN)[0]
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Correct regions")
    widget.store_layer.value = layer
    assert widget.restore_button.enabled and "1 draft" in widget.restore_button.text
    (session,) = widget.restore()
    np.testing.assert_array_equal(session.layer.data, painted)
    widget.accept()
    _wait(qtbot, lambda: widget.worker is None, 60)
    np.testing.assert_array_equal(zarr.open_array(f"{store}/labels/0")[800:1100, 600:1000], painted)
    assert pending_drafts(store) == []


def test_removing_an_unaccepted_correction_keeps_it_as_a_draft_and_suggestions_are_shown(make_napari_viewer,
                                                                                          qtbot, tmp_path):
    store = pixel_prediction(str(tmp_path / "pixels.zarr"))
    viewer = make_napari_viewer()
    layer = viewer.open(store, plugin=PLUGIN)[0]
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Correct regions")
    widget.store_layer.value = layer
    # the suggestions' layer comes with the chosen prediction, empty and hidden, the prediction still selected:
    # napari's building it is not left for Suggest, which must not freeze the window
    _wait(qtbot, lambda: "next regions to correct" in viewer.layers, 10)
    qtbot.wait(300)  # drawn once with an invisible rectangle, for its shaders, then emptied and hidden again
    waiting = viewer.layers["next regions to correct"]
    assert not waiting.visible and len(waiting.data) == 0 and tuple(waiting.units) == tuple(layer.units)
    assert viewer.layers.selection.active is layer
    session = widget.edit(box=(0, 0, 500, 500))
    session.layer.paint((10, 10), 1)
    viewer.layers.remove(session.layer)
    (draft,) = pending_drafts(store)
    np.testing.assert_array_equal(draft.load(), session.layer.data)
    widget.suggest_count.value = 3
    widget.suggest()
    _wait(qtbot, lambda: widget.worker is None, 60)  # Suggest reads the probabilities in a thread
    _wait(qtbot, lambda: _suggestions_shown(viewer), 30)
    suggestions = viewer.layers["next regions to correct"]
    assert len(suggestions.data) == 3
    entropy = list(suggestions.features["entropy"])
    assert entropy == sorted(entropy, reverse=True) and 0 < entropy[0] <= 1
    viewer.layers.selection.active = suggestions
    suggestions.selected_data = {0}
    widget.source.value = "last rectangle"
    region = widget.edit().region
    assert region.level == 0 and region.shape == (224, 224)  # one chunk of the 256/32 grid

    # a user who removed the layer gets it back with the next Suggest
    viewer.layers.remove(suggestions)
    widget.suggest()
    _wait(qtbot, lambda: widget.worker is None, 60)
    _wait(qtbot, lambda: _suggestions_shown(viewer), 30)
    assert len(viewer.layers["next regions to correct"].data) == 3


def _press(viewer, key: str) -> None:
    """What napari runs when ``key`` is pressed on the canvas: the viewer's binding for it."""
    from napari.utils.key_bindings import coerce_keybinding

    viewer.keymap[coerce_keybinding(key)](viewer)


def _screenshot(viewer, tmp_path, name: str) -> None:
    folder = os.environ.get("CANCERSEG_SCREENSHOTS") or str(tmp_path)
    os.makedirs(folder, exist_ok=True)
    viewer.screenshot(os.path.join(folder, f"{name}.png"), canvas_only=False)


# Issue 17's target for Accept and Suggest is 0.2 s. Their store work runs in a thread; what is left on the GUI
# thread is napari's: after Accept, putting the edit layer away and redrawing the refreshed prediction; after
# Suggest, filling the suggestions' Shapes layer and its first drawing (the layer itself, 0.15-0.3 s of napari
# building six vispy visuals, is made empty and hidden when the prediction is chosen, and drawn once then with an
# invisible rectangle, which builds its shaders: 0.38-0.42 s of Suggest's first drawing on the slow VM, 56-72 ms
# after: _prepare_suggestions).
# Largest gaps on the 2-core dev machine under xvfb, PyQt6 and PyQt5: Accept 83-120 ms quiet (once 274 ms on a
# first run), Suggest 69-103 ms; on a day the same VM ran 2.5x slower (2026-12-04), Accept 133-170 ms and Suggest
# 75-81 ms once its layer was drawn beforehand. The bound is issue 17's 0.2 s at the reference speed, scaled by the
# machine's speed now (tests/gui/conftest.py): a return of the freezes issue 17 found (about 2 s each) fails it.


def test_an_annotator_sees_the_edit_and_goes_from_suggestion_to_suggestion(make_napari_viewer, qtbot, tmp_path,
                                                                           event_loop_latency):
    store = pixel_prediction(str(tmp_path / "pixels.zarr"))
    viewer = make_napari_viewer(show=True)
    viewer.open(data_path(CMU), plugin=PLUGIN)
    prediction = viewer.open(store, plugin=PLUGIN)[0]
    micrometres = tuple(prediction.units)
    assert [str(u) for u in micrometres] == ["micrometer", "micrometer"]
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Correct regions")
    widget.store_layer.value = prediction
    # the legend names the classes of the layer being corrected: its features, and the store's own class table
    names = [str(n) for i, n in zip(prediction.features["index"], prediction.features["class"]) if int(i) != 0]
    stored = [c["name"] for c in zarr.open_group(store, mode="r").attrs["cancerseg"]["classes"] if c["label"] != 0]
    assert [name for name, _ in widget.legend.entries] == names == stored and names
    for value, (_, rgba) in zip((i for i in prediction.features["index"] if int(i) != 0), widget.legend.entries):
        np.testing.assert_allclose(np.asarray(rgba) / 255, prediction.get_color(int(value)), atol=1 / 255)
    assert widget.legend_title.value == f"classes of {prediction.name}"
    if os.environ.get("CANCERSEG_SCREENSHOTS"):  # the dock's whole contents, legend included, to look at
        os.makedirs(os.environ["CANCERSEG_SCREENSHOTS"], exist_ok=True)
        widget.native.widget().grab().save(os.path.join(os.environ["CANCERSEG_SCREENSHOTS"], "correction-dock.png"))
    for button, key in [(widget.edit_button, "Shift-E"), (widget.accept_button, "Shift-A"),
                        (widget.next_button, "Shift-N")]:
        assert key in button.tooltip

    # a 2048 px square drawn at level 0: the largest region Edit opens at full resolution
    widget.draw_rectangle()
    rectangles = viewer.layers["correction regions"]
    assert tuple(rectangles.units) == micrometres and viewer.layers.extent.units == micrometres
    rectangles.add_rectangles(np.array([[0, 0], [2047.99, 2047.99]]))  # data pixels; the layer's scale is µm/px
    widget.source.value, widget.level.value = "last rectangle", 0
    before = np.asarray(zarr.open_array(f"{store}/labels/0")[:2048, :2048])
    assert prediction.contour == 0
    _press(viewer, "Shift-E")
    (session,) = widget.sessions
    assert session.region.box == (0, 0, 2048, 2048) and session.layer.data.shape == (2048, 2048)
    assert prediction.contour > 0 and session.layer.contour == 0  # the prediction under the edit: outlines only
    assert session.layer.units == prediction.units
    session.layer.brush_size = 300
    session.layer.paint((600, 700), 0)  # erase a disc of foreground
    session.layer.paint((1500, 400), 1)
    edited = np.asarray(session.layer.data).copy()
    assert (edited != before).sum() > 10000
    viewer.fit_to_view(layers=[session.layer])
    _screenshot(viewer, tmp_path, "correction-during-edit")

    qtbot.wait(1000)  # the window redraws after the screenshot first: that is not Accept's doing
    with event_loop_latency as latency:
        _press(viewer, "Shift-A")
        _wait(qtbot, lambda: widget.worker is None, 60)
        qtbot.wait(300)  # napari redraws the refreshed prediction after the store is written
    latency.report("Accept (2048 x 2048 px)")
    assert widget.sessions == [] and not session.layer.visible and session.layer.name == "correction (none open)"
    np.testing.assert_array_equal(zarr.open_array(f"{store}/labels/0")[:2048, :2048], edited)
    assert prediction.contour == 0  # filled again
    assert viewer.layers.selection.active is prediction or viewer.layers.selection.active.name == prediction.name
    np.testing.assert_array_equal(np.asarray(prediction.data[0][:2048, :2048]), edited)
    assert len(latency.gaps) > 10
    assert latency.largest_gap < latency.bound, latency.summary()
    _screenshot(viewer, tmp_path, "correction-after-accept")

    # Discard: the store keeps what it had, the draft goes, the prediction is filled again
    session = widget.edit(box=(1200, 1500, 256, 256))
    assert prediction.contour > 0
    session.layer.paint((100, 100), 1)
    widget.discard()
    assert prediction.contour == 0 and not session.layer.visible and pending_drafts(store) == []
    np.testing.assert_array_equal(zarr.open_array(f"{store}/labels/0")[:2048, :2048], edited)

    # strokes painted while Accept writes the store are not lost: the region stays open with them
    session = widget.edit(box=(1200, 1500, 256, 256))
    session.layer.brush_size = 40
    session.layer.paint((50, 50), 1)
    first = np.asarray(session.layer.data).copy()
    widget.accept()
    session.layer.paint((200, 200), 2)  # before the thread's result reaches the GUI thread
    later = np.asarray(session.layer.data).copy()
    assert (later != first).sum() > 100
    _wait(qtbot, lambda: widget.worker is None, 60)
    assert widget.sessions == [session] and session.layer.visible and prediction.contour > 0
    np.testing.assert_array_equal(zarr.open_array(f"{store}/labels/0")[1500:1756, 1200:1456], first)
    np.testing.assert_array_equal(pending_drafts(store)[0].load(), later)
    widget.accept()
    _wait(qtbot, lambda: widget.worker is None, 60)
    np.testing.assert_array_equal(zarr.open_array(f"{store}/labels/0")[1500:1756, 1200:1456], later)
    assert widget.sessions == [] and prediction.contour == 0 and pending_drafts(store) == []
    edited[1500:1756, 1200:1456] = later

    widget.suggest_count.value = 4
    qtbot.wait(300)
    with event_loop_latency as latency:
        widget.suggest()
        _wait(qtbot, lambda: widget.worker is None, 60)
        _wait(qtbot, lambda: _suggestions_shown(viewer), 30)
        qtbot.wait(300)  # its first drawing
    latency.report("Suggest")
    assert latency.largest_gap < latency.bound, latency.summary()
    suggestions = viewer.layers["next regions to correct"]
    assert tuple(suggestions.units) == micrometres and viewer.layers.extent.units == micrometres
    assert widget.suggestion_list.count() == 4 == len(widget.suggestions)
    ranked = sorted(uncertain_regions(store, 4), key=lambda s: -s.entropy)  # the core ranking, asked again
    assert [s.box for s in widget.suggestions] == [s.box for s in ranked]
    first = widget.suggestion_list.item(0).text()
    assert first.startswith("1. uncertainty ") and f"{ranked[0].entropy:.2f}" in first and "µm" in first
    for s in ranked:  # the accepted square is settled: no suggestion lies inside it
        x, y, w, h = s.box
        assert not (x + w <= 2048 and y + h <= 2048)

    _press(viewer, "Shift-N")
    assert widget.suggestion_list.currentRow() == 0 and widget.sessions[-1].region.box == ranked[0].box
    _press(viewer, "Shift-N")  # the first was not painted: it closes, the second opens
    (session,) = widget.sessions
    x, y, w, h = ranked[1].box
    assert widget.suggestion_list.currentRow() == 1 and session.region.box == (x, y, w, h)
    centre = np.array([(y + h / 2 - 0.5) * 0.499, (x + w / 2 - 0.5) * 0.499])  # pixel centres, in µm
    np.testing.assert_allclose(viewer.camera.center[-2:], centre, atol=0.5)
    filled = np.array([h, w]) * 0.499 * viewer.camera.zoom / np.array(viewer.canvas.size)  # share of the canvas
    assert 0.9 <= filled.max() <= 1.0, filled  # the region fills the canvas (5% margin)
    assert viewer.layers.selection.active.name == session.layer.name and session.layer.mode == "paint"
    assert prediction.contour > 0
    _screenshot(viewer, tmp_path, "correction-second-suggestion")

    from napari.utils.key_bindings import coerce_keybinding

    viewer.window.remove_dock_widget(widget.native)
    for key in ["Shift-E", "Shift-A", "Shift-N"]:  # the dock's keys went with it
        assert coerce_keybinding(key) not in viewer.keymap, key


def test_drawing_a_region_before_a_prediction_is_picked_is_refused(make_napari_viewer):
    """A rectangle in pixels over a slide in µm would cost the scale bar its unit: no prediction, no rectangle."""
    viewer = make_napari_viewer()
    viewer.open(data_path(CMU), plugin=PLUGIN)
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Correct regions")
    assert widget.store_layer.value is None
    widget.draw_rectangle()
    assert "correction regions" not in viewer.layers and "pick the prediction" in widget.status.value
