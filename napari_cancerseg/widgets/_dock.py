"""What the docks share: contents in a scroll area (several stacked docks never make napari's window taller than
the screen), layers added over several event-loop turns, and the scale bar turned on when a slide opens."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from magicgui.widgets import Container, FunctionGui, Widget
from qtpy.QtCore import QObject, QTimer
from qtpy.QtWidgets import QWidget

# A turn's pause before the next step: long enough for Qt to paint and take input in between
TURN_MS = 30


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


class ScrollableFunctionGui(FunctionGui):
    """A ``magic_factory`` dock (Import/Export annotations) whose contents scroll, as ScrollableContainer."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs["scrollable"] = True
        super().__init__(*args, **kwargs)

    @property
    def native(self) -> Any:
        return self.root_native_widget


def scrollable_factory(function: Callable, **options: Any) -> Callable[[], ScrollableFunctionGui]:
    """What ``magic_factory(function, **options)`` makes, but scrolling: a callable napari calls for a new dock.
    Per-parameter options go in ``param_options`` (FunctionGui's own argument)."""

    def make_widget() -> ScrollableFunctionGui:
        return ScrollableFunctionGui(function, **options)

    make_widget.__doc__ = function.__doc__
    return make_widget


def chosen_path(field: Widget) -> str:
    """A path field's value, or "" when nothing was chosen (an empty FileEdit reads as "." through ``Path``)."""
    value = getattr(field, "value", None)
    return str(value) if value and str(value) not in (".", "") else ""


def add_in_turns(steps: list[Callable[[], Any]], owner: QObject) -> None:
    """Run ``steps`` one per event-loop turn, while ``owner`` (the dock's widget) lives.

    napari adding a layer is two costs of 0.15-0.35 s each on 2 cores with software OpenGL: the layer's visual
    and controls (``add_*``), and its first drawing (new shader programs, when it turns visible). In one turn
    they froze the window for 0.5-0.7 s; a layer added hidden and shown on a later turn gives Qt a turn between
    them, so the window answers in between. Each turn's timer is the owner's child: the steps left when the dock
    is closed or napari quits never run against its deleted widgets.
    """
    if not steps:
        return

    def run_next() -> None:
        steps[0]()
        add_in_turns(steps[1:], owner)

    timer = QTimer(owner)
    timer.setSingleShot(True)
    timer.timeout.connect(timer.deleteLater)
    timer.timeout.connect(run_next)
    timer.start(TURN_MS)


def layer_steps(viewer: Any, add_hidden: Callable[[], Any], *then: Callable[[Any], Any]) -> list[Callable[[], Any]]:
    """Steps for ``add_in_turns``: ``add_hidden()`` adds a layer (hidden), then each of ``then`` gets that layer,
    one turn each; a layer the user removed in between is left alone."""
    added: list = []

    def step(apply: Callable[[Any], Any]) -> Callable[[], Any]:
        return lambda: apply(added[0]) if added and added[0] in viewer.layers else None

    return [lambda: added.append(add_hidden()), *(step(apply) for apply in then)]


def make_visible(layer: Any) -> None:
    """The last of a layer's steps: drawn at last."""
    layer.visible = True
