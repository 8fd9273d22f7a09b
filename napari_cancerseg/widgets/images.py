"""MRI volumes and mammograms: classify the image (probabilities, routing) and segment it in a model process.

The classifier and the 2D segmentation model run in ``cancerseg classify`` /
``cancerseg segment`` child processes (TensorFlow stays out of napari); the
result comes back through the plugin's reader, so a volume's labels carry the
image's scale, translate and orientation and the 3D view works.
"""

import os
from pathlib import Path
from typing import cast

import napari
from magicgui.widgets import Container, FileEdit, Label, LineEdit, PushButton, Table, create_widget
from magicgui.widgets.bases import ValueWidget
from napari.utils.notifications import show_error, show_info

from ..inference.options import cli_command
from ..processes import Done
from . import scratch_path
from ._process import ProcessDock, ProcessRunner


def default_output(source: str, model: str, volume: bool) -> str:
    return scratch_path(source, model, ".nii.gz" if volume else ".zarr")


def ml_text(millilitres: float) -> str:
    """"12.3 mL", "0.041 mL": three significant figures at most, never an exponent."""
    if millilitres >= 100:
        return f"{millilitres:,.0f} mL"
    if millilitres >= 1:
        return f"{millilitres:.1f} mL"
    return f"{millilitres:.2g} mL" if millilitres >= 1e-4 else f"{millilitres:.6f} mL"


def amounts_text(result: dict) -> str:
    """Each label's volume in mL (volumes) or pixel count (2D images), by class name, background left out."""
    names = result.get("classes", {})
    volumes = result.get("volumes_ml")
    amounts = volumes if volumes is not None else result.get("voxels_per_label", {})
    parts = [f"{names.get(label, 'label ' + label)} "
             + (ml_text(value) if volumes is not None else f"{int(value):,} px")
             for label, value in amounts.items() if label != "0"]
    return "; ".join(parts) or "nothing found (background only)"


class ImageWidget(ProcessDock, Container):
    def __init__(self, viewer: napari.Viewer):
        self.viewer = viewer
        self.image = cast(ValueWidget, create_widget(annotation=napari.layers.Image, label="image"))
        self.classifier = FileEdit(label="classifier", filter="*.keras", value=None)
        self.routes = LineEdit(label="routes", value="", tooltip="CLASS=BUNDLE, comma-separated, e.g. brain=b.keras")
        self.classify_button = PushButton(text="Classify")
        self.probabilities = Table(value={"data": [], "columns": ["probability"]})
        self.model = FileEdit(label="segmentation model", filter="*.keras", value=None)
        self.segment_button = PushButton(text="Segment")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.status = Label(value="research use only, not for diagnosis")
        super().__init__(widgets=[self.image, self.classifier, self.routes, self.classify_button, self.probabilities,
                                  self.model, self.segment_button, self.cancel_button, self.status])
        self.status.native.setWordWrap(True)
        self.native.setMaximumWidth(380)
        self.classify_button.changed.connect(self.classify)
        self.segment_button.changed.connect(self.segment)
        self.runner = ProcessRunner(self, [self.classify_button, self.segment_button], self.status,
                                    self.cancel_button, cancelled_text="cancelled; nothing was saved")
        self.result: dict | None = None


    def cancel(self, *_) -> None:
        self.runner.cancel()

    def _source(self) -> str | None:
        layer = self.image.value
        path = (layer.metadata or {}).get("path") if layer is not None else None
        if not path or not os.path.exists(path):
            show_error("pick an image layer opened from a file (NIfTI, DICOM or a mammogram)")
            return None
        return path

    def _start(self, argv: list[str], name: str) -> None:
        self.runner.start(argv, name, on_done=self._on_done)

    def classify(self, *_) -> None:
        source, classifier = self._source(), str(self.classifier.value or "")
        if source is None or not os.path.isfile(classifier):
            show_error("choose a classifier bundle") if source else None
            return
        routes = [item.strip() for item in self.routes.value.split(",") if "=" in item]
        self.status.value = "classifying in a model process..."
        self._start(cli_command("classify", source, model=classifier, json=True, route=routes), "classify")

    def segment(self, *_) -> None:
        source, model = self._source(), str(self.model.value or "")
        if source is None or not os.path.isfile(model):
            show_error("choose a segmentation bundle") if source else None
            return
        volume = self.image.value.ndim == 3 and not self.image.value.rgb
        out = default_output(source, model, volume)
        self.status.value = "segmenting in a model process..."
        self._start(cli_command("segment", source, model=model, out=out, json=True), "segment")

    def _on_done(self, message: Done) -> None:
        self.result = dict(message.data)
        if "probabilities" in self.result:
            ranked = sorted(self.result["probabilities"].items(), key=lambda kv: -kv[1])
            self.probabilities.value = {"data": [[round(p, 4)] for _, p in ranked], "index": [k for k, _ in ranked],
                                        "columns": ["probability"]}
            route = self.result.get("route")
            self.status.value = f"{self.result['class']}" + (f": routed to {Path(route).name}"
                                                             if route else " (no route for it)")
            if route:
                self.model.value = route
        else:
            layers = self.viewer.open(self.result["out"], plugin="napari-cancerseg")
            self.status.value = f"{self.result['kind']} segmented: {amounts_text(self.result)}"
            show_info(f"saved {self.result['out']}")
            self.result["layers"] = [layer.name for layer in layers]
