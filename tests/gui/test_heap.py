"""napari's long-lived heap is frozen while a dock of the plugin is open (widgets/_heap.py), so that no full garbage
collection walks it; what napari removes must still be freed, and closing the dock gives everything back."""

from __future__ import annotations

import gc
import weakref

import numpy as np

PLUGIN = "napari-cancerseg"


def _tracked(obj) -> bool:
    """Whether the collector still looks at ``obj``: frozen objects are in no generation ``gc.get_objects`` lists."""
    return any(o is obj for o in gc.get_objects())


def test_a_removed_layer_is_freed_and_a_closed_dock_unfreezes(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    dock, _widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Evaluate segmentation")
    layer = viewer.add_image(np.zeros((64, 64), np.uint8), name="temporary")
    layer.metadata["itself"] = layer  # a cycle: only the collector can free it, never reference counting alone
    freed = weakref.ref(layer)
    del layer
    qtbot.waitUntil(lambda: gc.get_freeze_count() > 0 and not _tracked(freed()), timeout=5_000)  # frozen
    viewer.layers.remove("temporary")  # the heap is unfrozen before napari removes it...
    assert gc.get_freeze_count() == 0
    viewer.add_image(np.zeros((64, 64), np.uint8), name="next")  # ...and the next freeze collects it first
    qtbot.waitUntil(lambda: freed() is None and gc.get_freeze_count() > 0, timeout=5_000)

    viewer.window.remove_dock_widget(dock)  # napari's close button
    assert gc.get_freeze_count() == 0  # nothing the plugin froze outlives its docks...
    viewer.add_image(np.zeros((64, 64), np.uint8), name="after")
    qtbot.wait(100)
    assert gc.get_freeze_count() == 0  # ...and nothing is frozen while none is open
