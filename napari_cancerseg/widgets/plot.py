"""A small live line plot (training loss and validation Dice), drawn with QPainter: no plotting library."""

from qtpy.QtCore import QPointF, QSize, Qt
from qtpy.QtGui import QColor, QPainter, QPen
from qtpy.QtWidgets import QSizePolicy, QWidget

# The scoped enum names: PyQt5 accepts them too, and qtpy's type stubs know no others.
RIGHT = int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
LEFT = int(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter)


class LinePlot(QWidget):
    """Named series of (x, y) points, each scaled to the widget's height on its own (loss and Dice differ)."""

    COLOURS = ("#ff9f1c", "#2ec4b6", "#e71d36", "#b8b8ff")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.series: dict[str, list[tuple[float, float]]] = {}
        self.setMinimumHeight(120)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)

    def add(self, name: str, x: float, y: float | None) -> None:
        if y is None or y != y:  # None or NaN: nothing to draw
            return
        self.series.setdefault(name, []).append((float(x), float(y)))
        self.update()

    def clear(self) -> None:
        self.series.clear()
        self.update()

    def paintEvent(self, event):  # noqa: N802 - Qt's name
        painter = QPainter(self)
        painter.setRenderHint(QPainter.Antialiasing)
        width, height, pad = self.width(), self.height(), 6
        xs = [x for points in self.series.values() for x, _ in points]
        x0, x1 = (min(xs), max(xs)) if xs else (0.0, 1.0)
        for index, (name, points) in enumerate(self.series.items()):
            colour = QColor(self.COLOURS[index % len(self.COLOURS)])
            ys = [y for _, y in points]
            y0, y1 = min(ys), max(ys)
            span_x, span_y = (x1 - x0) or 1.0, (y1 - y0) or 1.0
            pen = QPen(colour)
            pen.setWidth(2)
            painter.setPen(pen)
            scaled = [QPointF(pad + (x - x0) / span_x * (width - 2 * pad),
                              height - pad - (y - y0) / span_y * (height - 2 * pad - 14)) for x, y in points]
            for a, b in zip(scaled, scaled[1:]):
                painter.drawLine(a, b)
            painter.drawText(pad + index * 150, 12, f"{name} {ys[-1]:.3f}")
        painter.end()


class BarChart(QWidget):
    """Labelled horizontal bars, each in its own colour (areas per Gleason pattern)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.bars: list[tuple[str, float, tuple[int, int, int]]] = []
        self.setMinimumHeight(110)
        self.setSizePolicy(QSizePolicy.Expanding, QSizePolicy.Fixed)

    def sizeHint(self) -> QSize:  # noqa: N802 - Qt's name; a Fixed height needs a hint, or the layout squeezes it
        return QSize(300, 110)

    def set_bars(self, bars: list[tuple[str, float, tuple[int, int, int]]]) -> None:
        self.bars = list(bars)
        self.update()

    def paintEvent(self, event):  # noqa: N802 - Qt's name
        painter = QPainter(self)
        if not self.bars:
            painter.end()
            return
        label_width, pad = 120, 4
        height = max(12, (self.height() - pad) // len(self.bars) - pad)
        largest = max(value for _, value, _ in self.bars) or 1.0
        for index, (name, value, rgb) in enumerate(self.bars):
            y = pad + index * (height + pad)
            painter.setPen(QColor("#dddddd"))
            painter.drawText(0, y, label_width - pad, height, RIGHT, name)
            width = int((self.width() - label_width - 60) * value / largest)
            painter.fillRect(label_width, y, max(1, width), height, QColor(*rgb))
            painter.drawText(label_width + width + pad, y, 56, height, LEFT,
                             f"{value:.1f}%")
        painter.end()
