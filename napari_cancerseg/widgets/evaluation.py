"""Compare a prediction with ground truth: per-label Dice, IoU, precision, recall and hd95, CSV export."""

from pathlib import Path
from typing import cast

import napari
import numpy as np
from magicgui.types import FileDialogMode
from magicgui.widgets import FileEdit, Label, PushButton, Table, create_widget
from magicgui.widgets.bases import ValueWidget
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info

from ..evaluation import LabelImage, Score, evaluate_pair, to_csv, unit_name
from ._dock import ScrollableContainer
from ._heap import keep_long_lived_objects_frozen
from .legend import layer_classes


def layer_label_image(layer) -> LabelImage:
    data = layer.data[0] if layer.multiscale else layer.data
    return LabelImage(layer.name, np.asarray(data), tuple(float(s) for s in layer.scale), unit_name(layer.units),
                      layer.name)


class EvaluationWidget(ScrollableContainer):
    def __init__(self, viewer: napari.Viewer):
        self.viewer = viewer
        # layer pickers: create_widget is typed as returning any Widget; for a layer annotation it is a ValueWidget
        self.prediction = cast(ValueWidget, create_widget(annotation=napari.layers.Labels, label="prediction"))
        self.truth = cast(ValueWidget, create_widget(annotation=napari.layers.Labels, label="ground truth"))
        self.run_button = PushButton(text="Evaluate")
        self.table = Table(value={"data": [], "columns": []})
        self.table.visible = False  # no fake "data | columns" headers before there are scores
        self.csv_path = FileEdit(label="CSV", mode=FileDialogMode.OPTIONAL_FILE, filter="*.csv")  # "w": empty
        self.export_button = PushButton(text="Export CSV")
        self.status = Label(value="")
        super().__init__(widgets=[self.prediction, self.truth, self.run_button, self.table, self.csv_path,
                                  self.export_button, self.status])
        keep_long_lived_objects_frozen(viewer, self.native)  # no full collection walks napari's heap
        self.native.setMaximumWidth(420)
        self.run_button.changed.connect(self.evaluate)
        self.export_button.changed.connect(self.export)
        self.scores: list[Score] = []
        self.worker = None

    def evaluate(self, *_) -> None:
        if self.prediction.value is None or self.truth.value is None:
            show_error("pick a prediction and a ground-truth Labels layer")
            return
        prediction, truth = layer_label_image(self.prediction.value), layer_label_image(self.truth.value)
        self.status.value = "measuring..."
        worker = self.worker = self._evaluate(prediction, truth)
        worker.returned.connect(self._show)
        worker.errored.connect(self._failed)
        worker.finished.connect(lambda: setattr(self, "worker", None))
        worker.start()

    def _failed(self, err: Exception) -> None:
        show_error(str(err))
        self.status.value = str(err)

    @thread_worker
    def _evaluate(self, prediction: LabelImage, truth: LabelImage) -> list[Score]:
        return evaluate_pair(prediction, truth)

    def _show(self, scores: list[Score]) -> None:
        self.scores = scores
        columns = ["dice", "iou", "precision", "recall", f"hd95 ({scores[0].unit if scores else ''})"]
        names = {label: name for label, (name, _) in layer_classes(self.prediction.value).items()}
        self.table.value = {"data": [[None if v is None else round(v, 4) for v in
                                      (s.dice, s.iou, s.precision, s.recall, s.hd95)] for s in scores],
                            "index": [f"{s.label} {names[s.label]}" if s.label in names else f"label {s.label}"
                                      for s in scores], "columns": columns}
        self.table.visible = True
        self.status.value = f"{len(scores)} label(s) compared"

    def export(self, *_) -> str | None:
        path = str(self.csv_path.value or "")
        if not self.scores or not path or path == ".":
            show_error("evaluate first, and choose a CSV file")
            return None
        path = str(Path(path).with_suffix(".csv"))
        try:
            Path(path).write_text(to_csv(self.scores))
        except OSError as error:  # a read-only folder, a full disk: said, napari stays up
            show_error(f"could not save {path}: {error.strerror or error}")
            return None
        show_info(f"saved {path}")
        return path
