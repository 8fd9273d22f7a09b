"""A colour legend: one swatch and class name per class of the current model or store (a thin Qt widget)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from qtpy.QtWidgets import QGridLayout, QLabel, QWidget

from ..classes import class_colours

#: (class name, RGBA 0-255)
Entry = tuple[str, tuple[int, ...]]


def model_entries(classes: Sequence[dict]) -> list[Entry]:
    """The classes of a model's or store's class table but background, in label order, in their display colours."""
    colours = class_colours(list(classes))
    names = {int(c["label"]): str(c.get("name") or f"class {c['label']}") for c in classes}
    return [(names[label], colours[label]) for label in sorted(colours) if label in names]


def layer_classes(layer) -> dict[int, Entry]:
    """label -> (class name, RGBA 0-255) for each class but background that a Labels layer names in its
    ``features`` (``index``, ``class``), in the layer's own colours; empty when it names none."""
    features = getattr(layer, "features", None)
    if features is None or "index" not in features or "class" not in features:
        return {}
    classes = {}
    for value, name in zip(features["index"], features["class"]):
        if int(value) == 0:
            continue
        rgba = np.asarray(layer.get_color(int(value)), float)
        classes[int(value)] = (str(name), tuple(int(round(c * 255)) for c in rgba))
    return classes


def layer_entries(layer) -> list[Entry]:
    """The classes a Labels layer names in its ``features``, in the layer's own colours (``layer_classes``)."""
    return list(layer_classes(layer).values())


class ClassLegend(QWidget):
    """Swatches and names; ``entries`` is what it shows (tests read it)."""

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self.entries: list[Entry] = []
        self._grid = QGridLayout(self)
        self._grid.setContentsMargins(0, 0, 0, 0)
        self._grid.setHorizontalSpacing(6)
        self._grid.setVerticalSpacing(2)
        self.set_entries([])

    def set_entries(self, entries: Sequence[Entry]) -> None:
        self.entries = list(entries)
        while self._grid.count():
            item = self._grid.takeAt(0)
            old = item.widget() if item is not None else None
            if old is not None:
                old.deleteLater()
        if not self.entries:
            self._grid.addWidget(QLabel("no classes yet"), 0, 0, 1, 2)
            return
        for row, (name, rgba) in enumerate(self.entries):
            swatch = QLabel()
            swatch.setFixedSize(14, 14)
            red, green, blue = (int(c) for c in rgba[:3])
            swatch.setStyleSheet(f"background-color: rgb({red}, {green}, {blue}); border: 1px solid #888;")
            self._grid.addWidget(swatch, row, 0)
            self._grid.addWidget(QLabel(name), row, 1)
        self._grid.setColumnStretch(1, 1)

