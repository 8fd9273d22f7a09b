"""Gleason grading dock: a table per slide and region, a bar chart by pattern, the colour legend, exports.

Research use only, not for diagnosis: said in the dock and in every export.
"""

import json
import os
from pathlib import Path
from typing import Any, cast

import napari
from magicgui.types import FileDialogMode
from magicgui.widgets import (
    ComboBox,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    ProgressBar,
    PushButton,
    Table,
    create_widget,
)
from magicgui.widgets.bases import ValueWidget
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QFileDialog

from ..classes import CLASSES, GLEASON_3, GLEASON_4, GLEASON_5, RGB, TUMOUR
from ..errors import CancersegError
from ..grading.gleason import RESEARCH_ONLY
from ..grading.patterns import refused_output
from ..grading.report import SlideReport, grade_path, parse_mapping
from ..inference.options import cli_command
from ..io.stores import LabelStore
from ..processes import ChildProcess, Done
from ._dock import ScrollableContainer, chosen_path
from ._heap import keep_long_lived_objects_frozen
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


NO_GRADE_YET = f"No grade yet: run Grade -- {RESEARCH_ONLY}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"  # "-": not applicable (no score 7, tissue unknown)


def report_table(report: SlideReport) -> dict[str, Any]:
    """The table's value: the grade in the first columns (seen without scrolling), then shares, then areas."""
    keys = ("3", "4", "5", "ungraded")
    if report.nuclei is not None:
        density = report.nuclei_per_mm2
        return {"data": [[f"{report.nuclei:,}", "-" if density is None else f"{density:,.0f}",
                          report.area_text(report.tissue_area) if report.tissue_area else "-"]],
                "index": ["slide"], "columns": ["nuclei", "nuclei per mm²", "tissue"]}
    columns = ["Gleason", "ISUP", "% pattern 4", "tumour % of tissue", "tumour",
               "pattern 3", "pattern 4", "pattern 5", "ungraded"]
    rows = [[report.gleason_score or "-", report.isup_grade_group or "-", _percent(report.percent_pattern_4),
             _percent(report.tumour_percent_of_tissue), report.area_text(report.tumour_area),
             *[report.area_text(report.areas[k]) for k in keys]]]
    rows += [[r.gleason_score or "-", r.isup_grade_group or "-", _percent(r.percent_pattern_4), "-",
              report.area_text(r.area), *[report.area_text(r.areas[k]) for k in keys]] for r in report.regions]
    return {"data": rows, "index": ["slide"] + [f"region {r.region}" for r in report.regions], "columns": columns}


class GradingWidget(ScrollableContainer):
    def __init__(self, viewer: napari.Viewer):
        self.viewer = viewer
        self.source = ComboBox(label="grade", choices=["a label layer", "an annotation file"])
        self.store_layer = cast(ValueWidget, create_widget(annotation=napari.layers.Labels, label="label layer"))
        self.annotations = FileEdit(label="annotation file", filter="*.xml *.json *.geojson", value=None)
        self.mpp = FloatSpinBox(label="µm/px (0: the file's)", value=0.0, min=0.0, max=100.0, step=0.001,
                                tooltip="the annotation file's level-0 µm per pixel; 0: the file's own "
                                        "(the CLI's --mpp)")
        self.mapping = LineEdit(label="class mapping", value="",
                                tooltip="NAME=3|4|5|benign|tumour, comma-separated (the CLI's --map), e.g. CaP=4: "
                                        "grades TCGA's 'CaP' as Gleason pattern 4")
        self.grade_button = PushButton(text="Grade")
        self.classifier = FileEdit(label="Gleason classifier", filter="*.keras", value=None)
        self.overlay_out = FileEdit(label="save patterns as", mode=FileDialogMode.OPTIONAL_FILE, filter="*.zarr",
                                    value=None,
                                    tooltip="an OME-Zarr store (.zarr); empty: <segmentation>.patterns.zarr beside "
                                            "the segmentation.  Only an earlier pattern overlay is replaced, never "
                                            "any other file or store")
        self.overlay_button = PushButton(text="Colour tumour by pattern")
        self.cancel_button = PushButton(text="Cancel colouring", enabled=False)
        self.overlay_progress = ProgressBar(label="tiles graded", value=0, min=0, max=1)
        self.summary = Label(value=NO_GRADE_YET)
        self.table = Table(value={"data": [], "columns": []})
        self.table.visible = False  # no fake headers before there is a grade
        self.json_button = PushButton(text="Export JSON...", enabled=False)
        self.csv_button = PushButton(text="Export CSV...", enabled=False)
        self.legend = Label(value=legend_html())
        self.disclaimer = Label(value=f"<b>{RESEARCH_ONLY}</b>")
        super().__init__(widgets=[self.disclaimer, self.source, self.store_layer, self.annotations, self.mpp,
                                  self.mapping, self.grade_button, self.summary, self.table, self.json_button,
                                  self.csv_button, self.classifier, self.overlay_out, self.overlay_button,
                                  self.cancel_button, self.overlay_progress, self.legend])
        keep_long_lived_objects_frozen(viewer, self.native)  # no full collection walks napari's heap
        self.summary.native.setWordWrap(True)
        self.native.setMaximumWidth(420)
        self.chart = BarChart()
        self.chart.setVisible(False)
        self.add_qt_widget(self.chart, before=self.table)
        self.grade_button.changed.connect(self.grade)
        self.source.changed.connect(self._on_source)
        self._on_source()
        self.json_button.changed.connect(lambda *_: self.export("json"))
        self.csv_button.changed.connect(lambda *_: self.export("csv"))
        self.overlay_button.changed.connect(self.overlay)
        self.report: SlideReport | None = None
        self.worker: Any = None  # grading's thread, or the one following the overlay's model process
        # a cancelled run leaves no store at the chosen path (it is built beside it and renamed in when whole)
        self.runner = ProcessRunner(self, [self.overlay_button], self.summary, self.cancel_button,
                                    self.overlay_progress,
                                    cancelled_text="colouring cancelled; the tumour is not coloured, nothing was saved")

    @property
    def process(self) -> ChildProcess | None:
        return self.runner.process

    def _on_source(self, *_) -> None:
        """The inputs of the chosen source only: µm/px and the class mapping apply to an annotation file (a store
        carries its scale and its labels already)."""
        from_file = self.source.value == "an annotation file"
        self.store_layer.enabled = not from_file
        self.annotations.enabled = self.mpp.enabled = self.mapping.enabled = from_file

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

    def _mapping(self) -> dict[str, int]:
        items = [item.strip() for item in self.mapping.value.split(",") if item.strip()]
        return parse_mapping(items)

    def grade(self, *_) -> None:
        try:
            source = self._input()
            mapping = self._mapping()
        except CancersegError as err:
            show_error(str(err))
            self.summary.value = f"not graded: {err}"
            return
        self.summary.value = "grading..."
        # errors are shown by _grading_failed, not raised again in the event loop (superqt does unless told)
        self.worker = self._grade(source, self.mpp.value or None, mapping, _ignore_errors=True)
        self.worker.returned.connect(self.show_report)
        self.worker.finished.connect(lambda: setattr(self, "worker", None))
        self.worker.errored.connect(self._grading_failed)
        self.worker.start()

    def _grading_failed(self, err: BaseException) -> None:
        show_error(str(err))
        self.summary.value = f"failed: {err}"
        # the last report is not this input's: neither shown nor exported as if it were
        self.report = None
        self.table.visible = False
        self.chart.setVisible(False)
        self.json_button.enabled = self.csv_button.enabled = False

    @thread_worker
    def _grade(self, source: str, mpp: float | None, mapping: dict[str, int]) -> SlideReport:
        return grade_path(source, mpp, mapping)

    def show_report(self, report: SlideReport) -> None:
        self.report = report
        notes = list(report.notes)
        if report.unit != "um2":
            notes.insert(0, "<b>no µm per pixel in the file: enter µm/px to read the areas in mm²</b>"
                         if report.kind == "annotations" else
                         "<b>no µm per pixel in the store: areas in pixels</b>")
        self.summary.value = f"{report.headline()} -- {RESEARCH_ONLY}" + "".join(f"<br>{n}" for n in notes)
        # a wrapped label may be squeezed to one line in a short window: the grade must stay readable
        self.summary.native.setMinimumHeight(self.summary.native.heightForWidth(max(300, self.summary.native.width())))
        self.table.value = report_table(report)
        self.table.native.resizeColumnsToContents()
        rows = min(5, self.table.shape[0])  # the slide and the first regions seen without scrolling
        header = self.table.native.horizontalHeader().height()
        self.table.native.setMinimumHeight(header + rows * self.table.native.verticalHeader().defaultSectionSize()
                                           + self.table.native.horizontalScrollBar().sizeHint().height() + 4)
        self.table.visible = True
        self.json_button.enabled = self.csv_button.enabled = True
        # the patterns as shares of the graded tumour, the table's "% pattern 4" and ISUP's; ungraded tumour, when
        # there is some, as a share of all tumour, and said so
        bars = [(f"pattern {k}", report.percent.get(k, 0.0), PATTERN_COLOURS[k]) for k in ("3", "4", "5")]
        if report.areas["ungraded"]:
            bars.append(("ungraded (of all)", 100 * report.areas["ungraded"] / (report.tumour_area or 1.0),
                         PATTERN_COLOURS["ungraded"]))
        self.chart.set_bars(bars)
        self.chart.setVisible(report.nuclei is None)

    def export(self, kind: str) -> str | None:
        """Save the report where the user chooses in a save dialog (which asks before replacing a file)."""
        if self.report is None:
            show_error("grade first")
            return None
        suggested = f"{Path(self.report.source.rstrip('/')).stem}.grading.{kind}"
        path, _ = QFileDialog.getSaveFileName(self.native, f"Export the grading report as {kind.upper()}",
                                              suggested, f"{kind.upper()} (*.{kind})")
        if not path:
            return None  # the dialog was cancelled: nothing is written
        if not path.lower().endswith(f".{kind}"):
            path += f".{kind}"
            if os.path.exists(path):  # the dialog confirmed another name: never replace this one unasked
                show_error(f"{path} exists: choose it in the dialog to replace it")
                return None
        try:
            with open(path, "w", newline="") as fh:
                fh.write(json.dumps(self.report.to_dict(), indent=2) if kind == "json" else self.report.csv())
        except OSError as err:
            show_error(f"{path}: cannot write the report ({err.strerror or err})")
            return None
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
        out = self.overlay_path(segmentation)
        refusal = refused_output(out)  # before the model process: a prediction or a user's file is never replaced
        if refusal is not None:
            show_error(refusal)
            self.summary.value = f"not coloured: {refusal}"
            return
        # only an earlier pattern overlay is replaced (pattern_overlay checks it again in the process)
        argv = cli_command("overlay", slide, segmentation=segmentation, model=classifier, out=out, json=True,
                           overwrite=True)
        self.summary.value = "grading the tumour tile by tile in a model process..."
        self.runner.start(argv, "overlay", on_done=self._on_overlay_done,
                          on_finished=lambda: setattr(self, "worker", None))
        self.worker = self.runner.worker

    def overlay_path(self, segmentation: str) -> str:
        """The chosen store, or ``<segmentation>.patterns.zarr`` beside the segmentation."""
        return chosen_path(self.overlay_out) or f"{segmentation.rstrip('/')}.patterns.zarr"

    def cancel(self, *_) -> None:
        self.runner.cancel()

    def _on_overlay_done(self, message: Done) -> None:
        self.viewer.open(message.data["out"], plugin="napari-cancerseg")
        counts = ", ".join(f"{'pattern ' + k if k.isdigit() else k} {n:,}"
                           for k, n in message.data["tiles_per_label"].items())
        # the name only: the whole path is in "save patterns as" and in the notification
        self.summary.value = (f"{message.data['tiles']:,} tumour tiles graded ({counts}), saved as "
                              f"{Path(message.data['out'].rstrip('/')).name}")
        show_info(f"saved {message.data['out']}")
