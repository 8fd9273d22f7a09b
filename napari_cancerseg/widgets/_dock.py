"""What the docks share: contents in a scroll area (several stacked docks never make napari's window taller than
the screen), and the scale bar turned on when a slide opens."""

from __future__ import annotations

from typing import Any

from magicgui.widgets import Container, Widget
from qtpy.QtWidgets import QWidget


class ScrollableContainer(Container):
    """A magicgui Container whose contents scroll.

    magicgui's ``scrollable=True`` puts the contents in a ``QScrollArea`` but
    its ``native`` is the inner widget, and napari docks ``native``: the
    scroll area would be dropped.  Here ``native`` is the scroll area itself.
    """

    def __init__(self, **kwargs: Any):
        kwargs.setdefault("scrollable", True)
        super().__init__(**kwargs)

    @property
    def native(self) -> Any:
        return self.root_native_widget

    def add_qt_widget(self, widget: QWidget, before: Widget | None = None) -> None:
        """A plain Qt widget (a legend) in the scrolled contents, before ``before`` (else at the end)."""
        layout = self.root_native_widget.widget().layout()
        index = -1
        if before is not None:  # a labelled magicgui widget sits in the layout inside its label's row
            index = next((k for k in range(layout.count()) if (row := layout.itemAt(k).widget()) is not None
                          and (row is before.native or row.isAncestorOf(before.native))), -1)
        layout.insertWidget(index, widget)


def show_scale_bar(viewer) -> None:
    """Turn napari's scale bar on; its unit follows the layers' (µm on a slide with µm/px)."""
    overlays = getattr(getattr(viewer, "canvas", None), "overlays", None)  # napari >= 0.9; viewer.scale_bar before
    (overlays.scale_bar if overlays is not None else viewer.scale_bar).visible = True
