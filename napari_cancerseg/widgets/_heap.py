"""Python's full garbage collections kept short in napari's process: the long-lived heap is frozen.

A full (generation 2) collection walks every object the process tracks: about 290,000 with napari, a slide and this
plugin, 0.15 s of frozen window on CI's 2 cores on a quick day and up to 0.4 s on a slow one. Most of them are
modules, classes, functions and the viewer itself, which live as long as napari; and adding layers (a prediction,
its heat maps) creates enough long-lived objects to set one off in the middle of a run. ``gc.freeze()`` moves the
objects alive now out of the collector's sight, so later collections walk only what is newer (0 ms against 0.15 s,
measured in the Predict dock's test).

Frozen objects are never collected, so whatever can become garbage must be unfrozen before it does:

- a layer: the heap is unfrozen when napari is about to remove one (``layers.events.removing``). napari's own
  ``gc.collect()`` on a removal cannot free the layer (the removal's event still holds it), so the next freeze,
  when a layer is added, first runs a full collection, which does (0.15 s, once per removal);
- a dock or the viewer: the heap is unfrozen when a dock of this plugin is closed or destroyed (napari quits), and
  is not frozen again while none is open.

The heap is frozen when a dock opens and after each layer is added while one is open, on the next event-loop turn,
once the young garbage is collected (a few ms; all of it before the first freeze).
``CANCERSEG_FREEZE_HEAP=0`` turns all of this off.
"""

from __future__ import annotations

import gc
import os
import weakref
from typing import Any

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QWidget

from ._process import _DockClosed

_viewers: weakref.WeakSet = weakref.WeakSet()  # viewers whose layer events freeze and unfreeze the heap
_open_docks: set[int] = set()  # the docks (ids of their widgets) open now: the heap is frozen only while one is
_collect_all_first = True  # before the first freeze, and when a layer was removed since the last one


def enabled() -> bool:
    return os.environ.get("CANCERSEG_FREEZE_HEAP", "1") != "0"


def freeze_soon(*_: Any) -> None:
    """Freeze on the next event-loop turn, once the work of this one (adding a layer) has left its garbage.
    Takes and ignores the arguments of the event it is connected to."""
    QTimer.singleShot(0, _freeze)


def _freeze() -> None:
    global _collect_all_first
    if not _open_docks:
        return
    gc.collect(2 if _collect_all_first else 1)  # removed layers, or only the young garbage: frozen, it would wait
    _collect_all_first = False
    gc.freeze()


def _unfreeze_for_removal(*_: Any) -> None:
    global _collect_all_first
    gc.unfreeze()
    _collect_all_first = True


def keep_long_lived_objects_frozen(viewer: Any, dock: QWidget) -> None:
    """Freeze the heap now and after each layer added to ``viewer``; unfreeze before each removal and when ``dock``
    is closed. Called by each dock of the plugin; the viewer's events are connected once."""
    if not enabled():
        return
    key = id(dock)
    _open_docks.add(key)

    def closed() -> None:
        _open_docks.discard(key)
        gc.unfreeze()

    _DockClosed(dock, closed)
    if viewer not in _viewers:
        _viewers.add(viewer)
        viewer.layers.events.removing.connect(_unfreeze_for_removal)
        viewer.layers.events.inserted.connect(freeze_soon)
    freeze_soon()
