"""MRI volumes and mammograms: classify the image (probabilities, routing) and segment it in a model process.

The classifier and the 2D segmentation model run in ``cancerseg classify`` /
``cancerseg segment`` child processes (TensorFlow stays out of napari); the
result comes back through the plugin's reader, so a volume's labels carry the
image's scale, translate and orientation and the 3D view works.
"""

import os
from pathlib import Path

import napari
from magicgui.widgets import Container, FileEdit, Label, LineEdit, PushButton, Table, create_widget
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info

from .. import processes
from ..inference.options import cli_command
from . import scratch_path


def default_output(source: str, model: str, volume: bool) -> str:
    return scratch_path(source, model, ".nii.gz" if volume else ".zarr")


class ImageWidget(Container):
    def __init__(self, viewer: napari.Viewer):
        self.viewer = viewer
        self.image = create_widget(annotation=napari.layers.Image, label="image")
        self.classifier = FileEdit(label="classifier", filter="*.keras", value="")
        self.routes = LineEdit(label="routes", value="", tooltip="CLASS=BUNDLE, comma-separated, e.g. brain=b.keras")
        self.classify_button = PushButton(text="Classify")
        self.probabilities = Table(value={"data": [], "columns": ["probability"]})
        self.model = FileEdit(label="segmentation model", filter="*.keras", value="")
        self.segment_button = PushButton(text="Segment")
        self.status = Label(value="research use only, not for diagnosis")
        super().__init__(widgets=[self.image, self.classifier, self.routes, self.classify_button, self.probabilities,
                                  self.model, self.segment_button, self.status])
        self.status.native.setWordWrap(True)
        self.native.setMaximumWidth(380)
        self.classify_button.changed.connect(self.classify)
        self.segment_button.changed.connect(self.segment)
        self.worker = self.process = None
        self.result: dict | None = None

    def _source(self) -> str | None:
        layer = self.image.value
        path = (layer.metadata or {}).get("path") if layer is not None else None
        if not path or not os.path.exists(path):
            show_error("pick an image layer opened from a file (NIfTI, DICOM or a mammogram)")
            return None
        return path

    def _start(self, argv: list[str]) -> None:
        self.process = processes.start(argv)
        self.classify_button.enabled = self.segment_button.enabled = False
        self.worker = self._follow(self.process)
        self.worker.yielded.connect(self._on_message)
        self.worker.finished.connect(self._finished)
        self.worker.start()

    @thread_worker
    def _follow(self, process):
        yield from processes.messages(process)

    def classify(self, *_) -> None:
        source, classifier = self._source(), str(self.classifier.value or "")
        if source is None or not os.path.isfile(classifier):
            show_error("choose a classifier bundle") if source else None
            return
        routes = [item.strip() for item in self.routes.value.split(",") if "=" in item]
        self.status.value = "classifying in a model process..."
        self._start(cli_command("classify", source, model=classifier, json=True, route=routes))

    def segment(self, *_) -> None:
        source, model = self._source(), str(self.model.value or "")
        if source is None or not os.path.isfile(model):
            show_error("choose a segmentation bundle") if source else None
            return
        volume = self.image.value.ndim == 3 and not self.image.value.rgb
        out = default_output(source, model, volume)
        self.status.value = "segmenting in a model process..."
        self._start(cli_command("segment", source, model=model, out=out, json=True))

    def _on_message(self, message: dict) -> None:
        if message.get("event") == "error":
            show_error(message["message"][-500:])
            self.status.value = "failed: " + message["message"][-300:]
            return
        if message.get("event") != "done":
            return
        self.result = message
        if "probabilities" in message:
            ranked = sorted(message["probabilities"].items(), key=lambda kv: -kv[1])
            self.probabilities.value = {"data": [[round(p, 4)] for _, p in ranked], "index": [k for k, _ in ranked],
                                        "columns": ["probability"]}
            self.status.value = f"{message['class']}" + (f": routed to {Path(message['route']).name}"
                                                         if message.get("route") else " (no route for it)")
            if message.get("route"):
                self.model.value = message["route"]
        else:
            layers = self.viewer.open(message["out"], plugin="napari-cancerseg")
            self.status.value = f"{message['kind']} segmented: voxels per label {message['voxels_per_label']}"
            show_info(f"saved {message['out']}")
            self.result["layers"] = [layer.name for layer in layers]

    def _finished(self) -> None:
        self.classify_button.enabled = self.segment_button.enabled = True
        self.worker = self.process = None
