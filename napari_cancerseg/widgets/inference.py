"""Predict a slide layer with a model bundle, in a separate model process, showing the overlay as it fills in."""

from pathlib import Path

import napari
from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, Label, ProgressBar, PushButton, create_widget
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info

from .. import NUCLEI_MODEL, processes, resource_path
from ..inference import worker as model_process
from ..inference.options import PredictOptions
from ..io import stores
from . import scratch_path


def default_store(slide_path: str, model_path: str) -> str:
    return scratch_path(slide_path, model_path, ".zarr")


class InferenceWidget(Container):
    """Slide layer + bundle + level/µm per px + tissue threshold -> a read-only multiscale prediction layer."""

    def __init__(self, viewer: napari.Viewer):
        self.viewer = viewer
        self.slide = create_widget(annotation=napari.layers.Image, label="slide")
        self.model = FileEdit(label="model bundle", value=resource_path(NUCLEI_MODEL), filter="*.keras")
        self.mpp = FloatSpinBox(label="µm/px (0: model's)", value=0.0, min=0.0, max=100.0, step=0.05)
        self.tissue = FloatSpinBox(label="min tissue fraction", value=PredictOptions.tissue, min=0.0, max=1.0, step=0.05)
        self.out = FileEdit(label="store (empty: temporary)", mode="w", filter="*.zarr", value="")
        self.heatmap = ComboBox(label="also show", choices=["labels only", "probability heat maps"])
        self.run_button, self.cancel_button = PushButton(text="Run"), PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="tiles", value=0, min=0, max=1)
        self.status = Label(value="research use only, not for diagnosis")
        super().__init__(widgets=[self.slide, self.model, self.mpp, self.tissue, self.out, self.heatmap,
                                  self.run_button, self.cancel_button, self.progress, self.status])
        # the slide canvas keeps most of the window: long messages wrap, paths elide, the dock stays narrow
        self.status.native.setWordWrap(True)
        self.native.setMaximumWidth(380)
        self.run_button.changed.connect(self.run)
        self.cancel_button.changed.connect(self.cancel)
        self.process = None
        self.worker = None
        self.live_layer = None

    def store_path(self, slide_path: str) -> str:
        value = str(self.out.value) if self.out.value and str(self.out.value) not in (".", "") else ""
        return value or default_store(slide_path, str(self.model.value))

    def run(self, *_):
        layer = self.slide.value
        slide_path = (layer.metadata or {}).get("path") if layer is not None else None
        if not slide_path or (layer.metadata or {}).get("format") != "whole-slide image":
            show_error("pick a whole-slide image layer opened with this plugin")
            return
        out = self.store_path(slide_path)
        options = PredictOptions.from_form(mpp=self.mpp.value, tissue=self.tissue.value)  # µm/px 0: None, the model's
        self.process = model_process.start(slide_path, str(self.model.value), out, options)
        self.run_button.enabled, self.cancel_button.enabled = False, True
        self.status.value = "starting the model process..."
        self.worker = self._follow(self.process)
        self.worker.yielded.connect(lambda message: self._on_message(message, out, layer))
        self.worker.finished.connect(self._finished)  # only once the reader thread is over
        self.worker.start()

    @thread_worker
    def _follow(self, process):
        yield from processes.messages(process)

    def _on_message(self, message: dict, out: str, slide_layer) -> None:
        event = message.get("event")
        if event == "progress":
            self.progress.max = max(1, message["tiles_total"])
            self.progress.value = message["tiles_done"]
            left = message.get("seconds_left")
            self.status.value = (f"{message['tiles_done']}/{message['tiles_total']} tiles, "
                                 f"{message['tiles_per_second']:.1f} tiles/s" + (f", {left:.0f} s left" if left else ""))
            self._show_live(out, slide_layer)
        elif event == "done":
            self._show_final(out, slide_layer)
            self.status.value = message["summary"].split(" -> ")[0] + " (research use only, not for diagnosis)"
            show_info(message["summary"])
        elif event == "error":
            show_error(message["message"])
            self.status.value = "failed: " + message["message"][:200]

    def _live_levels(self, out: str) -> list:
        """A lazy pyramid over level 0 as written so far; a new dask name each time, so napari's chunk
        cache cannot serve chunks read before the model wrote them."""
        self._refreshes = getattr(self, "_refreshes", 0) + 1
        return stores.live_levels(out, self._refreshes)

    def _show_live(self, out: str, slide_layer) -> None:
        if not stores.claims(out):  # the store appears whole (renamed into place), or not yet
            return
        if self.live_layer is None:
            (_, kwargs, _), = stores.read(out)  # scale, units and the model's class colours
            kwargs.update(name=f"{Path(out).stem} (running)", opacity=0.5, multiscale=True)
            self.live_layer = self.viewer.add_labels(self._live_levels(out), **kwargs)
            self.live_layer.editable = False
        else:
            self.live_layer.data = self._live_levels(out)

    def _show_final(self, out: str, slide_layer) -> None:
        if self.live_layer is not None:
            self.viewer.layers.remove(self.live_layer)
            self.live_layer = None
        (levels, kwargs, _), = stores.read(out)
        incomplete = kwargs["metadata"].get("incomplete")  # chunks not predicted are never shown as background
        note = f" (incomplete: {incomplete['missing_chunks']} of {incomplete['expected_chunks']} chunks missing)" \
            if incomplete else ""
        kwargs.update(opacity=0.5, name=Path(out).stem + note)
        layer = self.viewer.add_labels(levels, **kwargs)
        layer.editable = False  # multiscale labels are read-only in napari; correct a region instead
        if self.heatmap.value == "probability heat maps":
            self._show_heat_maps(out, kwargs["scale"])

    def _show_heat_maps(self, out: str, scale) -> None:
        """One lazy heat map per class but background (label 0), named after it; the first shown, the rest to toggle."""
        for label, name, pyramid in stores.class_probabilities(out):
            self.viewer.add_image(pyramid, name=f"{Path(out).stem} p({name})",
                                  scale=scale, colormap="inferno", contrast_limits=(0, 255), opacity=0.5,
                                  blending="additive", multiscale=True, visible=label == 1)

    def cancel(self, *_):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # the store keeps every finished chunk; Run again resumes
            self.status.value = "cancelled; Run again resumes where it stopped"

    def _finished(self) -> None:
        self.run_button.enabled, self.cancel_button.enabled = True, False
        self.process = self.worker = None
