"""Predict a slide layer with a model bundle, in a separate model process, showing the overlay as it fills in."""

from pathlib import Path
from typing import cast

import napari
from magicgui.types import FileDialogMode
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    create_widget,
)
from magicgui.widgets.bases import ValueWidget
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info

from .. import NUCLEI_MODEL, resource_path
from ..grading.report import measured_line
from ..inference import worker as model_process
from ..inference.options import PredictOptions
from ..io import stores
from ..processes import Done, Message, Progress
from . import scratch_path
from ._process import ProcessDock, ProcessRunner


def default_store(slide_path: str, model_path: str) -> str:
    return scratch_path(slide_path, model_path, ".zarr")


class InferenceWidget(ProcessDock, Container):
    """Slide layer + bundle + level/µm per px + tissue threshold -> a read-only multiscale prediction layer."""

    def __init__(self, viewer: napari.Viewer):
        self.viewer = viewer
        self.slide = cast(ValueWidget, create_widget(annotation=napari.layers.Image, label="slide"))
        self.model = FileEdit(label="model bundle", value=Path(resource_path(NUCLEI_MODEL)), filter="*.keras")
        self.mpp = FloatSpinBox(label="µm/px (0: model's)", value=0.0, min=0.0, max=100.0, step=0.05)
        self.tissue = FloatSpinBox(label="min tissue fraction", value=PredictOptions.tissue,
                                   min=0.0, max=1.0, step=0.05)
        self.out = FileEdit(label="store (empty: temporary)", mode=FileDialogMode.OPTIONAL_FILE, filter="*.zarr",
                            value=None)
        self.heatmap = ComboBox(label="also show", choices=["labels only", "probability heat maps"])
        self.glass = CheckBox(text="show glass (chunks not predicted)", value=True,
                              tooltip="grey where the tissue mask found glass: the model never looked there")
        self.run_button, self.cancel_button = PushButton(text="Run"), PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="tiles", value=0, min=0, max=1)
        self.status = Label(value="research use only, not for diagnosis")
        super().__init__(widgets=[self.slide, self.model, self.mpp, self.tissue, self.out, self.heatmap, self.glass,
                                  self.run_button, self.cancel_button, self.progress, self.status])
        # the slide canvas keeps most of the window: long messages wrap, paths elide, the dock stays narrow
        self.status.native.setWordWrap(True)
        self.native.setMaximumWidth(380)
        self.run_button.changed.connect(self.run)
        # the runner owns the model process: Cancel, the bar, the status, and ending it when the dock closes
        self.runner = ProcessRunner(self, [self.run_button], self.status, self.cancel_button, self.progress,
                                    cancelled_text="cancelled; Run again resumes where it stopped")
        self.live_layer: napari.layers.Labels | None = None


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
        if self.live_layer is not None:  # the layer of a cancelled run: it fills in again as the run resumes
            if self.live_layer in self.viewer.layers:
                self.live_layer.name = f"{Path(out).stem} (running)"
            else:
                self.live_layer = None
        options = PredictOptions.from_form(mpp=self.mpp.value, tissue=self.tissue.value)  # µm/px 0: None, the model's
        argv = model_process.command(slide_path, str(self.model.value), out, options)
        self.status.value = "starting the model process..."
        self.runner.start(argv, "model", on_message=lambda message: self._on_message(message, out, layer),
                          on_cancelled=lambda message: self._on_cancelled(out, layer),
                          on_failed=lambda message: self._rename_live(out))  # nothing runs: not "(running)"

    def _on_message(self, message: Message, out: str, slide_layer) -> None:
        if isinstance(message, Progress):
            data, left = message.data, message.data.get("seconds_left")
            self.status.value = (f"{message.done}/{message.total} tiles, "
                                 f"{data.get('tiles_per_second') or 0:.1f} tiles/s"
                                 + (f", {left:.0f} s left" if left else ""))
            self._show_live(out, slide_layer)
        elif isinstance(message, Done):
            self._show_final(out, slide_layer)
            self._show_result(out, float(message.data.get("seconds") or 0.0))
            show_info(message.summary)

    def _show_result(self, out: str, seconds: float) -> None:
        """Counts and areas of the result (nuclei, tumour mm² of tissue), measured off the GUI thread."""
        tail = f" ({seconds:.0f} s; research use only, not for diagnosis)"
        self.status.value = "done: measuring the result..." + tail
        self.result_text: str | None = None

        def show(text: str) -> None:
            self.result_text = text
            self.status.value = f"done: {text}{tail}"

        self._measuring = thread_worker(measured_line, start_thread=False, ignore_errors=True)(out)
        self._measuring.returned.connect(show)
        self._measuring.errored.connect(lambda err: show(f"no areas ({err})"))
        self._measuring.start()

    def _on_cancelled(self, out: str, slide_layer) -> None:
        """Cancel is not a failure: the layer shows every chunk written, under its final name; Run again resumes."""
        self._show_live(out, slide_layer)
        self._rename_live(out)

    def _rename_live(self, out: str) -> None:
        if self.live_layer is not None:
            self.live_layer.name = Path(out).stem

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
            live_layer = self.viewer.add_labels(self._live_levels(out), **kwargs)
            live_layer.editable = False
            self.live_layer = live_layer
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
        glass = stores.glass_layer(out) if self.glass.value else None
        if glass is not None:
            data, glass_kwargs, _ = glass
            self.viewer.add_labels(data, **glass_kwargs).editable = False
        self.viewer.layers.selection.active = layer  # the prediction stays the layer a user works on

    def _show_heat_maps(self, out: str, scale) -> None:
        """One lazy heat map per class but background (label 0), named after it; the first shown, the rest to toggle."""
        for label, name, pyramid in stores.class_probabilities(out):
            self.viewer.add_image(pyramid, name=f"{Path(out).stem} p({name})",
                                  scale=scale, colormap="inferno", contrast_limits=(0, 255), opacity=0.5,
                                  blending="additive", multiscale=True, visible=label == 1)

    def cancel(self, *_) -> None:
        """The store keeps every finished chunk; Run again resumes."""
        self.runner.cancel()
