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
from magicgui.types import FileDialogMode
from magicgui.widgets import FileEdit, Label, LineEdit, ProgressBar, PushButton, Table, create_widget
from magicgui.widgets.bases import ValueWidget
from napari.utils.notifications import show_error, show_info

from ..errors import CancersegError
from ..grading.report import area_text
from ..inference.images import is_image_segmentation
from ..inference.options import cli_command
from ..models.bundle import bundle_info
from ..processes import Done
from . import scratch_folder, scratch_path
from ._dock import ScrollableContainer, chosen_path
from ._heap import keep_long_lived_objects_frozen
from ._process import ProcessDock, ProcessRunner
from .legend import ClassLegend, layer_entries, model_entries

VOLUME_SUFFIXES, IMAGE_SUFFIXES = (".nii.gz", ".nii"), (".zarr",)


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
    """Each label's volume in mL (volumes) or area (2D images: mm², µm² when small, as the Predict dock's; px² when
    the image has no pixel spacing), by class name, background left out."""
    names = result.get("classes", {})
    volumes, areas = result.get("volumes_ml"), result.get("areas")
    unit = result.get("area_unit", "px2")
    def show(value: float) -> str:
        return ml_text(value) if volumes is not None else area_text(value, unit if areas is not None else "px2")

    # volumes in mL; 2D areas; a result of an earlier version has pixel counts only
    amounts = volumes if volumes is not None else areas if areas is not None else result.get("voxels_per_label", {})
    parts = [f"{names.get(label, 'label ' + label)} {show(value)}" for label, value in amounts.items() if label != "0"]
    text = "; ".join(parts) or "nothing found (background only)"
    if volumes is None and unit != "um2":
        text += " (pixel spacing unknown: the image records no PixelSpacing or ImagerPixelSpacing)"
    return text


def refused_output(out: str, volume: bool) -> str | None:
    """Why ``out`` cannot take the result (said to the user), or None: a wrong suffix, or a path that exists and is
    not ours to replace (an earlier segmentation store, or a result in the plugin's scratch folder)."""
    suffixes = VOLUME_SUFFIXES if volume else IMAGE_SUFFIXES
    if not out.lower().endswith(suffixes):
        what = "a volume is saved as NIfTI" if volume else "a 2D image is saved as an OME-Zarr store"
        return f"{out}: {what}: choose a file name ending in {suffixes[0]}"
    if not os.path.lexists(out):
        return None
    if volume and os.path.isfile(out) and Path(out).resolve().parent == scratch_folder().resolve():
        return None  # the dock's own earlier result
    if not volume and is_image_segmentation(out):
        return None  # an earlier segmentation store: replaced whole when the new one is complete
    return f"{out} already exists and is not a segmentation this plugin saved: nothing was changed; choose another path"


class ImageWidget(ProcessDock, ScrollableContainer):
    def __init__(self, viewer: napari.Viewer):
        self.viewer = viewer
        self.image = cast(ValueWidget, create_widget(annotation=napari.layers.Image, label="image"))
        self.classifier = FileEdit(label="classifier", filter="*.keras", value=None)
        self.routes = LineEdit(label="routes", value="", tooltip="CLASS=BUNDLE, comma-separated, e.g. brain=b.keras")
        self.classify_button = PushButton(text="Classify")
        self.probabilities = Table(value={"data": [], "columns": ["probability"]})
        self.probabilities.visible = False  # shown with a classification: no empty table with a header
        self.model = FileEdit(label="segmentation model", filter="*.keras", value=None)
        self.out = FileEdit(label="save as (empty: kept in the cache folder)", mode=FileDialogMode.OPTIONAL_FILE,
                            filter="*.nii.gz *.zarr", value=None,
                            tooltip="volumes: .nii.gz; mammograms and other 2D images: .zarr")
        self.segment_button = PushButton(text="Segment")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="progress", value=0, min=0, max=1)
        self.status = Label(value="research use only, not for diagnosis")
        self.legend_title = Label(value="classes of the model")
        super().__init__(widgets=[self.image, self.classifier, self.routes, self.classify_button, self.probabilities,
                                  self.model, self.out, self.segment_button, self.cancel_button, self.progress,
                                  self.status, self.legend_title])
        keep_long_lived_objects_frozen(viewer, self.native)  # no full collection walks napari's heap
        self.legend = ClassLegend()
        self.add_qt_widget(self.legend)
        self.status.native.setWordWrap(True)
        self.native.setMaximumWidth(380)
        self.classify_button.changed.connect(self.classify)
        self.segment_button.changed.connect(self.segment)
        self.model.changed.connect(self._show_model_classes)
        self.runner = ProcessRunner(self, [self.classify_button, self.segment_button], self.status,
                                    self.cancel_button, self.progress, cancelled_text="cancelled; nothing was saved")
        self.result: dict | None = None
        self._show_model_classes()

    def cancel(self, *_) -> None:
        self.runner.cancel()

    def _show_model_classes(self, *_) -> None:
        model = str(self.model.value or "")
        try:
            classes = bundle_info(model).classes if os.path.isfile(model) else []
        except CancersegError:
            classes = []
        self.legend_title.value = "classes of the model"
        self.legend.set_entries(model_entries(classes))

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

    def output_path(self, source: str, model: str, volume: bool) -> str:
        """The chosen file, or the scratch path (``<user cache>/napari-cancerseg/<image>.<model>.nii.gz|.zarr``)."""
        return chosen_path(self.out) or default_output(source, model, volume)

    def segment(self, *_) -> None:
        source, model = self._source(), str(self.model.value or "")
        if source is None or not os.path.isfile(model):
            show_error("choose a segmentation bundle") if source else None
            return
        volume = self.image.value.ndim == 3 and not self.image.value.rgb
        out = self.output_path(source, model, volume)
        refusal = refused_output(out, volume)
        if refusal is not None:
            show_error(refusal)
            self.status.value = f"not segmented: {refusal}"
            return
        self.status.value = "segmenting in a model process..."
        self._start(cli_command("segment", source, model=model, out=out, json=True), "segment")

    def _on_done(self, message: Done) -> None:
        self.result = dict(message.data)
        if "probabilities" in self.result:
            ranked = sorted(self.result["probabilities"].items(), key=lambda kv: -kv[1])
            self.probabilities.value = {"data": [[round(p, 4)] for _, p in ranked], "index": [k for k, _ in ranked],
                                        "columns": ["probability"]}
            self.probabilities.visible = True
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
            labels = next((layer for layer in layers if isinstance(layer, napari.layers.Labels)), None)
            if labels is not None:
                self._show_result_classes(labels)

    def _show_result_classes(self, layer) -> None:
        """The result's classes in its own colours; a NIfTI holds no class names: the bundle's go in its features
        (one row per label value, so napari's status bar names the class on hover too)."""
        names = {int(label): name for label, name in (self.result or {}).get("classes", {}).items()}
        features = getattr(layer, "features", None)
        if names and (features is None or "class" not in features):
            values = sorted(set(names) | {0})
            layer.features = {"index": values, "class": [names.get(v, f"label {v}") for v in values]}
        self.legend_title.value = f"classes of {layer.name}"
        self.legend.set_entries(layer_entries(layer))
