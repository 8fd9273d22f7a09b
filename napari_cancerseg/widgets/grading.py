"""Gleason grading dock: a table per slide and region, a bar chart by pattern, the colour legend, exports.

Research use only, not for diagnosis: said in the dock and in every export.
"""

import json
import os
from pathlib import Path
from typing import Any, cast

import napari
from magicgui.types import FileDialogMode
from magicgui.widgets import ComboBox, Container, FileEdit, Label, PushButton, Table, create_widget
from magicgui.widgets.bases import ValueWidget
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info

from ..classes import CLASSES, GLEASON_3, GLEASON_4, GLEASON_5, RGB, TUMOUR
from ..errors import CancersegError
from ..grading.gleason import RESEARCH_ONLY
from ..grading.report import SlideReport, grade_path
from ..inference.options import cli_command
from ..io.stores import LabelStore
from ..processes import ChildProcess, Done
from ._process import ProcessRunner
from .correction import store_path
from .plot import BarChart


def _colour(label: int) -> RGB:
    rgb = CLASSES[label][1]
    assert rgb is not None, CLASSES[label]  # the tumour and pattern classes all have colours (classes.py)
    return rgb


PATTERN_COLOURS = {"3": _colour(GLEASON_3), "4": _colour(GLEASON_4), "5": _colour(GLEASON_5),
                   "ungraded": _colour(TUMOUR)}


def legend_html() -> str:
    rows = [f'<span style="color: rgb{rgb}">&#9632;</span> {label}: {name}'
            for label, (name, rgb) in CLASSES.items() if rgb]
    return "<br>".join(rows)


class GradingWidget(Container):
    def __init__(self, viewer: napari.Viewer):
        self.viewer = viewer
        self.source = ComboBox(label="grade", choices=["a label layer", "an annotation file"])
        self.store_layer = cast(ValueWidget, create_widget(annotation=napari.layers.Labels, label="label layer"))
        self.annotations = FileEdit(label="annotation file", filter="*.xml *.json *.geojson", value=None)
        self.grade_button = PushButton(text="Grade")
        self.classifier = FileEdit(label="Gleason classifier", filter="*.keras", value=None)
        self.overlay_button = PushButton(text="Colour tumour by pattern")
        self.cancel_button = PushButton(text="Cancel colouring", enabled=False)
        self.summary = Label(value=RESEARCH_ONLY)
        self.table = Table(value={"data": [], "columns": []})
        self.json_button, self.csv_button = PushButton(text="Export JSON"), PushButton(text="Export CSV")
        self.export_path = FileEdit(label="export to", mode=FileDialogMode.OPTIONAL_FILE, value=None)
        self.legend = Label(value=legend_html())
        self.disclaimer = Label(value=f"<b>{RESEARCH_ONLY}</b>")
        super().__init__(widgets=[self.disclaimer, self.source, self.store_layer, self.annotations, self.grade_button,
                                  self.summary, self.table, self.export_path, self.json_button, self.csv_button,
                                  self.classifier, self.overlay_button, self.cancel_button, self.legend])
        self.summary.native.setWordWrap(True)
        self.native.setMaximumWidth(420)
        self.chart = BarChart()
        self.native.layout().insertWidget(6, self.chart)
        self.grade_button.changed.connect(self.grade)
        self.json_button.changed.connect(lambda *_: self.export("json"))
        self.csv_button.changed.connect(lambda *_: self.export("csv"))
        self.overlay_button.changed.connect(self.overlay)
        self.report: SlideReport | None = None
        self.worker: Any = None  # grading's thread, or the one following the overlay's model process
        self.runner = ProcessRunner(self, [self.overlay_button], self.summary, self.cancel_button,
                                    cancelled_text="colouring cancelled; the tumour is not coloured")

    @property
    def process(self) -> ChildProcess | None:
        return self.runner.process

    def _input(self) -> str:
        if self.source.value == "a label layer":
            path = store_path(self.store_layer.value)
            if path is None:
                raise CancersegError("pick a label layer opened from an OME-Zarr store (a prediction or annotations)")
            return path
        path = str(self.annotations.value or "")
        if not path or not os.path.isfile(path):
            raise CancersegError("choose an annotation file (ImageScope/ASAP XML or GeoJSON)")
        return path

    def grade(self, *_) -> None:
        try:
            source = self._input()
        except CancersegError as err:
            show_error(str(err))
            return
        self.summary.value = "grading..."
        self.worker = self._grade(source)
        self.worker.returned.connect(self.show_report)
        self.worker.finished.connect(lambda: setattr(self, "worker", None))
        self.worker.errored.connect(self._grading_failed)
        self.worker.start()

    def _grading_failed(self, err: BaseException) -> None:
        show_error(str(err))
        self.summary.value = f"failed: {err}"

    @thread_worker
    def _grade(self, source: str) -> SlideReport:
        return grade_path(source)

    def show_report(self, report: SlideReport) -> None:
        self.report = report
        unit = "µm²" if report.unit == "um2" else "px²"
        headline = (f"Gleason {report.gleason_score}, ISUP grade group {report.isup_grade_group}"
                    if report.gleason_score else "no Gleason grade (no graded tumour)")
        self.summary.value = f"{headline} -- {RESEARCH_ONLY}" + "".join(f"<br>{n}" for n in report.notes)
        columns = ["tumour " + unit, "pattern 3", "pattern 4", "pattern 5", "ungraded", "Gleason", "ISUP"]
        rows = [[sum(report.areas.values()), *[report.areas[k] for k in ("3", "4", "5", "ungraded")],
                 report.gleason_score or "", report.isup_grade_group or ""]]
        rows += [[r.area, *[r.areas[k] for k in ("3", "4", "5", "ungraded")], r.gleason_score or "",
                  r.isup_grade_group or ""] for r in report.regions]
        names = ["slide"] + [f"region {r.region}" for r in report.regions]
        self.table.value = {"data": [[round(v, 1) if isinstance(v, float) else v for v in row] for row in rows],
                            "index": names, "columns": columns}
        tumour = sum(report.areas.values()) or 1.0
        self.chart.set_bars([(f"pattern {k}" if k != "ungraded" else "ungraded", 100 * report.areas[k] / tumour,
                              PATTERN_COLOURS[k]) for k in ("3", "4", "5", "ungraded")])

    def export(self, kind: str) -> str | None:
        if self.report is None:
            show_error("grade first")
            return None
        path = str(self.export_path.value or "")
        if not path or path == ".":
            show_error("choose a file to export to")
            return None
        path = str(Path(path).with_suffix(f".{kind}"))
        with open(path, "w", newline="") as fh:
            fh.write(json.dumps(self.report.to_dict(), indent=2) if kind == "json" else self.report.csv())
        show_info(f"saved {path}")
        return path

    def overlay(self, *_) -> None:
        """The patch classifier colours the selected segmentation's tumour, in a model process."""
        segmentation = store_path(self.store_layer.value)
        classifier = str(self.classifier.value or "")
        try:  # the slide the store was made from, checked: never a path a store merely names
            slide = LabelStore(segmentation, writable=False).verified_slide() if segmentation else None
        except CancersegError as err:
            show_error(str(err))
            return
        if not segmentation or not slide or not os.path.isfile(classifier):
            show_error("pick a prediction or annotation layer of a slide, and a Gleason classifier bundle")
            return
        out = f"{segmentation.rstrip('/')}.patterns.zarr"
        # the dock's own pattern store beside the segmentation: colouring again replaces it
        argv = cli_command("overlay", slide, segmentation=segmentation, model=classifier, out=out, json=True,
                           overwrite=True)
        self.summary.value = "grading the tumour tile by tile in a model process..."
        self.runner.start(argv, "overlay", on_done=self._on_overlay_done,
                          on_finished=lambda: setattr(self, "worker", None))
        self.worker = self.runner.worker

    def cancel(self, *_) -> None:
        self.runner.cancel()

    def _on_overlay_done(self, message: Done) -> None:
        self.viewer.open(message.data["out"], plugin="napari-cancerseg")
        self.summary.value = f"{message.data['tiles']} tumour tiles graded: {message.data['tiles_per_label']}"
