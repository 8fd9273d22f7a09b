"""Correct a prediction (or rasterised annotations) region by region, autosaved, then accept it into the store.

The store's multiscale layer stays read-only; "Edit region" opens the current
view (or the last rectangle drawn) as a plain Labels layer at one pyramid
level, where napari's paint, fill, erase and undo work as usual.  Drafts reach
disk every ``CANCERSEG_AUTOSAVE_SECONDS`` (30 s), when a layer is removed and
when napari quits; "Accept" writes the region into the store (``correction``).

What the annotator sees (issue 17): while a region of a store is open, that
store's prediction layers are drawn as outlines only, so a nucleus erased in the
edit no longer shows filled underneath; they are filled again once no region of
the store is open (accepted, discarded or removed), and after Accept the
refreshed prediction is the selected layer.  "Suggest" ranks the most uncertain
chunks in a list; "Next" zooms to the next one and opens it.  Shift-E, Shift-A
and Shift-N (napari key bindings, unbound when the dock closes) edit, accept
and go to the next suggestion.  Accept and Suggest run their store work in a
thread, so the window never freezes while zarr chunks and pyramids are written.
"""

import itertools
import os
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import napari
import numpy as np
from magicgui.widgets import ComboBox, Label, PushButton, SpinBox, create_widget
from magicgui.widgets.bases import ValueWidget
from napari.qt.threading import create_worker
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication, QListWidget

from ..correction.active import Suggestion, uncertain_regions
from ..errors import CancersegError
from ..io import stores
from ..io.stores import Correction, LabelStore, Region
from ..io.stores.drafts import AUTOSAVE_SECONDS, Draft, pending_drafts
from ._dock import ScrollableContainer, add_in_turns, layer_steps, make_visible
from ._heap import keep_long_lived_objects_frozen
from ._process import _DockClosed
from .legend import ClassLegend, layer_entries

RECTANGLES = "correction regions"
SUGGESTIONS = "next regions to correct"
DRAFT_KEY = "cancerseg_draft"
CONTOUR_KEY = "cancerseg_contour_before_edit"  # a prediction's own contour, kept while it is outlined
OUTLINE = 2  # contour width (pixels of the level shown) of a prediction under an open region
PARKED = "correction (none open)"  # the name of the hidden edit layer kept for the next region
MAX_EDIT_SIDE = 2048  # auto level: the finest at which the region fits in this many pixels
#: key -> the dock's method it runs: napari key bindings on the viewer while the dock is open (and in tooltips)
KEYS = {"Shift-E": "edit", "Shift-A": "accept", "Shift-N": "next_region"}


def store_path(layer) -> str | None:
    """The store behind a Labels layer this plugin opened (a prediction or rasterised annotations)."""
    metadata = getattr(layer, "metadata", None) or {}
    path = metadata.get("path")
    return path if path and metadata.get("format") == "OME-Zarr" and stores.claims(path) else None


_refreshes = itertools.count(1)


def refresh_store_layer(layer, path: str) -> None:
    """Show what the store now holds: fresh dask names, so napari's chunk cache serves nothing stale."""
    token = next(_refreshes)
    layer.data = stores.lazy_levels(path, token)


def unit_name(unit: Any) -> str:
    """A napari layer unit as people write it: "µm", "px"."""
    try:
        return format(unit, "~")
    except (TypeError, ValueError):
        return str(unit)


@dataclass
class EditSession:
    store: LabelStore
    region: Region
    draft: Draft
    layer: "napari.layers.Labels"
    dirty: bool = False  # changed since the last autosave
    touched: bool = False  # changed since it was opened
    accepting: bool = False  # its Accept is running in a thread
    on_change: Any = None  # its handler of the layer's paint and data events


class CorrectionWidget(ScrollableContainer):
    def __init__(self, viewer: napari.Viewer):
        self.viewer = viewer
        self.store_layer = cast(ValueWidget, create_widget(annotation=napari.layers.Labels, label="prediction"))
        self.source = ComboBox(label="region", choices=["current view", "last rectangle"])
        self.level = SpinBox(label="level (-1: auto)", value=-1, min=-1, max=16)
        self.draw_button = PushButton(text="Draw a rectangle")
        self.edit_button = PushButton(text="Edit region")
        self.accept_button = PushButton(text="Accept selected correction")
        self.discard_button = PushButton(text="Discard selected correction")
        self.suggest_count = SpinBox(label="suggest", value=5, min=1, max=100)
        self.suggest_button = PushButton(text="Suggest regions to correct")
        self.next_button = PushButton(text="Next region")
        self.restore_button = PushButton(text="Restore drafts")
        self.status = Label(value="")
        self.legend_title = Label(value="classes: pick a prediction")
        super().__init__(widgets=[self.store_layer, self.source, self.level, self.draw_button, self.edit_button,
                                  self.accept_button, self.discard_button, self.suggest_count, self.suggest_button,
                                  self.next_button, self.restore_button, self.status, self.legend_title])
        keep_long_lived_objects_frozen(viewer, self.native)  # no full collection walks napari's heap
        # what each colour of the layer being corrected means (its features' class names, in its own colours)
        self.legend = ClassLegend()
        self.add_qt_widget(self.legend)
        # the ranked suggestions, between Suggest and Next: rank, score, position; activating one opens it
        self.suggestion_list = QListWidget()
        self.suggestion_list.setMaximumHeight(120)
        self.suggestion_list.setToolTip("The most uncertain regions, most uncertain first: double-click one to open it")
        self.add_qt_widget(self.suggestion_list, before=self.next_button)
        self.suggestions: list[Suggestion] = []
        self._warming: Any = None  # the suggestions layer while drawn once for its shaders (_start_warming)
        self.suggestion_list.itemActivated.connect(self._on_activated)
        self.status.native.setWordWrap(True)
        self.native.setMaximumWidth(380)
        self.sessions: list[EditSession] = []
        self.worker: Any = None  # the thread of a running Accept or Suggest
        self.parked: Any = None  # the edit layer of a closed region, hidden, for the next one (see _park)
        self.draw_button.changed.connect(self.draw_rectangle)
        self.edit_button.changed.connect(self.edit)
        self.accept_button.changed.connect(self.accept)
        self.discard_button.changed.connect(self.discard)
        self.suggest_button.changed.connect(self.suggest)
        self.next_button.changed.connect(self.next_region)
        self.restore_button.changed.connect(self.restore)
        self.store_layer.changed.connect(self._offer_drafts)
        self.store_layer.changed.connect(self._show_classes)
        self.store_layer.changed.connect(self._prepare_suggestions)
        self.edit_button.tooltip = "Open the current view (or the last rectangle) for painting (Shift-E)"
        self.accept_button.tooltip = "Write the selected correction into the store (Shift-A)"
        self.discard_button.tooltip = "Close the selected correction and delete its draft"
        self.next_button.tooltip = "Zoom to the next suggested region and open it (Shift-N)"
        self.timer = QTimer()
        self.timer.setInterval(int(float(os.environ.get("CANCERSEG_AUTOSAVE_SECONDS", AUTOSAVE_SECONDS)) * 1000))
        self.timer.timeout.connect(self._autosave_tick)
        self.timer.start()
        app = QApplication.instance()
        assert app is not None  # napari's viewer runs in it
        app.aboutToQuit.connect(self.save_all)
        viewer.layers.events.removing.connect(self._on_removing)
        self._bind_keys()
        self._offer_drafts()
        self._show_classes()
        self._prepare_suggestions()

    def _show_classes(self, *_) -> None:
        layer = self.store_layer.value
        self.legend_title.value = f"classes of {layer.name}" if layer is not None else "classes: pick a prediction"
        self.legend.set_entries(layer_entries(layer) if layer is not None else [])

    # ---- key bindings --------------------------------------------------------------------------

    def _bind_keys(self) -> None:
        """Shift-E/A/N on the viewer; the viewer holds only weak references, and they go when the dock closes."""
        ref = weakref.ref(self)
        self._key_actions: dict[str, Callable] = {}
        for key, action in KEYS.items():
            def pressed(viewer, action=action) -> None:
                widget = ref()
                if widget is not None:
                    getattr(widget, action)()

            self.viewer.bind_key(key, pressed, overwrite=True)
            self._key_actions[key] = pressed

        def unbind_if_alive() -> None:
            widget = ref()
            if widget is not None and "_key_actions" in vars(widget):
                widget.unbind_keys()

        self._closed_watch = _DockClosed(self.native, unbind_if_alive)

    def unbind_keys(self) -> None:
        """Remove this dock's key bindings (only those still ours: another dock may have bound the key since)."""
        bound = list(self.viewer.keymap.values())
        for key, action in self._key_actions.items():
            if any(b is action for b in bound):
                self.viewer.bind_key(key, None)
        self._key_actions = {}

    # ---- regions -----------------------------------------------------------------------------

    def _store(self) -> tuple[LabelStore, str]:
        layer = self.store_layer.value
        path = store_path(layer)
        if path is None:
            raise CancersegError("pick a prediction or annotation layer opened from an OME-Zarr store")
        return LabelStore(path), path

    def view_box(self, store: LabelStore) -> tuple[int, int, int, int]:
        """The part of the slide on screen, in slide level-0 pixels."""
        layer = self.store_layer.value
        factors = np.asarray(layer.downsample_factors[layer.data_level]) if layer.multiscale else np.ones(2)
        (y0, x0), (y1, x1) = layer.corner_pixels[:, -2:] * factors[-2:]
        d = store.downsample
        return int(x0 * d), int(y0 * d), int((x1 - x0 + 1) * d), int((y1 - y0 + 1) * d)

    def rectangle_box(self, store: LabelStore) -> tuple[int, int, int, int]:
        """The selected shape of the active Shapes layer (a suggestion, say), else the last rectangle drawn."""
        active = self.viewer.layers.selection.active
        if isinstance(active, napari.layers.Shapes) and active.selected_data:
            shapes, index = active, max(active.selected_data)
        elif RECTANGLES in self.viewer.layers and len(self.viewer.layers[RECTANGLES].data):
            shapes, index = self.viewer.layers[RECTANGLES], -1
        else:
            raise CancersegError("draw a rectangle first (Draw a rectangle), or select a suggested region")
        corners = np.asarray([self.store_layer.value.world_to_data(shapes.data_to_world(v))
                              for v in shapes.data[index]])[:, -2:] * store.downsample
        (y0, x0), (y1, x1) = corners.min(axis=0), corners.max(axis=0)
        return int(x0), int(y0), int(np.ceil(x1 - x0)), int(np.ceil(y1 - y0))

    def draw_rectangle(self, *_):
        source = self.store_layer.value
        if source is None:  # a rectangle in pixels, over a slide in µm, would cost the scale bar its unit
            show_error("pick the prediction to correct first")
            self.status.value = "pick the prediction to correct first"
            return
        if RECTANGLES not in self.viewer.layers:
            self.viewer.add_shapes(name=RECTANGLES, edge_color="cyan", face_color="transparent", edge_width=4,
                                   scale=source.scale, translate=source.translate, units=source.units)
        layer = self.viewer.layers[RECTANGLES]
        self.viewer.layers.selection.active = layer
        layer.mode = "add_rectangle"

    def edit(self, *_, box: tuple[int, int, int, int] | None = None) -> EditSession | None:
        try:
            store, path = self._store()
            box = box or (self.view_box(store) if self.source.value == "current view" else self.rectangle_box(store))
            level = self.level.value
            if level < 0:
                longest = max(box[2], box[3]) / store.downsample
                level = next((k for k in range(len(store.levels)) if longest / 2 ** k <= MAX_EDIT_SIDE),
                             len(store.levels) - 1)
            region = store.region(box, level)
            labels = store.read_region(region)
        except CancersegError as err:
            show_error(str(err))
            return None
        return self._open(store, region, labels, Draft.new(path, region))

    def _open(self, store: LabelStore, region: Region, labels: np.ndarray, draft: Draft) -> EditSession:
        source = self.store_layer.value
        step = 2 ** region.level
        scale = tuple(s * step for s in source.scale[-2:])
        translate = (source.translate[-2] + region.rows[0] * step * source.scale[-2],
                     source.translate[-1] + region.cols[0] * step * source.scale[-1])
        self._outline_predictions(store.path)  # before the edit layer exists, so it is never outlined itself
        name = f"correction {len(self.sessions) + 1} (level {region.level})"
        layer = self._unpark(labels.copy(), name, scale, translate, source, draft.ident)
        if layer is None:
            layer = self.viewer.add_labels(labels.copy(), name=name, scale=scale, translate=translate,
                                           colormap=source.colormap, opacity=0.7, units=source.units,
                                           metadata={DRAFT_KEY: draft.ident})
        session = EditSession(store, region, draft, layer)

        def changed(*_) -> None:
            session.dirty = session.touched = True

        session.on_change = changed
        layer.events.paint.connect(changed)
        layer.events.data.connect(changed)
        layer.mode = "paint"
        self.sessions.append(session)
        draft.save(labels)  # the draft exists from the start: a crash in the first 30 s still finds the region
        self.status.value = (f"editing {region.shape[1]} x {region.shape[0]} px at level {region.level}; "
                             "paint, fill or erase, then Accept (Shift-A)")
        return session

    # ---- what the annotator sees under an open region -----------------------------------------------

    def _store_layers(self, path: str) -> list:
        return [layer for layer in self.viewer.layers
                if store_path(layer) == path and self._session_of(layer) is None]

    def _outline_predictions(self, path: str) -> None:
        """The store's layers as outlines: what the annotator erases no longer shows filled underneath."""
        for layer in self._store_layers(path):
            if CONTOUR_KEY not in layer.metadata:
                layer.metadata[CONTOUR_KEY] = layer.contour
                layer.contour = OUTLINE

    def _restore_predictions(self, path: str) -> None:
        """Filled again, as before the edit, once no region of the store is open."""
        if any(s.store.path == path for s in self.sessions):
            return
        for layer in self._store_layers(path):
            if CONTOUR_KEY in layer.metadata:
                layer.contour = layer.metadata.pop(CONTOUR_KEY)

    # ---- saving ------------------------------------------------------------------------------

    def _autosave_tick(self) -> None:  # Qt's slots return nothing; autosave's count is for callers
        self.autosave()

    def autosave(self) -> int:
        saved = 0
        for session in self.sessions:
            if session.dirty:
                session.draft.save(session.layer.data)
                session.dirty = False
                saved += 1
        return saved

    def save_all(self) -> None:
        for session in self.sessions:
            session.draft.save(session.layer.data)
            session.dirty = False

    def _session_of(self, layer) -> EditSession | None:
        """Layers reach plugins through proxies, so sessions are matched by the draft id in the metadata."""
        ident = (getattr(layer, "metadata", None) or {}).get(DRAFT_KEY)
        return next((s for s in self.sessions if s.draft.ident == ident), None) if ident else None

    def _on_removing(self, event) -> None:
        removed = self.viewer.layers[event.index]
        if self.parked is not None and removed == self.parked:  # proxies: equal, not identical
            self.parked = None
        session = self._session_of(removed)
        if session is not None and not session.accepting:  # removed without accepting: keep the work as a draft
            session.draft.save(session.layer.data)
            self.sessions.remove(session)
            self._restore_predictions(session.store.path)
            self._offer_drafts()

    def _session(self) -> EditSession | None:
        """The selected correction, else the last one opened (one being accepted is no longer open)."""
        open_sessions = [s for s in self.sessions if not s.accepting]
        selected = self._session_of(self.viewer.layers.selection.active)
        if selected is not None and not selected.accepting:
            return selected
        return open_sessions[-1] if open_sessions else None

    def _close(self, session: EditSession) -> None:
        """The region's layer is put away and its draft deleted (accepted or discarded)."""
        session.draft.discard()
        if session in self.sessions:
            self.sessions.remove(session)
        if session.layer in self.viewer.layers:
            self._park(session)
        self._restore_predictions(session.store.path)

    def _park(self, session: EditSession) -> None:
        """Hide and empty a closed region's layer, to be reused by the next Edit, rather than remove it.

        napari runs a full ``gc.collect()`` on every layer removal (vispy's canvas, against a Windows OpenGL
        race): 0.6-1.3 s of frozen window measured here after each Accept.  Reusing one hidden layer costs
        only a data swap.  A second closed layer while one is parked is removed as usual.
        """
        layer = session.layer
        layer.events.paint.disconnect(session.on_change)
        layer.events.data.disconnect(session.on_change)
        if self.parked is not None and self.parked in self.viewer.layers:
            self.viewer.layers.remove(layer)
            return
        layer.visible = False  # first: napari does not redraw a hidden layer for the changes below
        layer.editable = False  # napari resets the undo history here: nothing of this region can come back
        layer.metadata = {}
        layer.data = np.zeros((1, 1), dtype=layer.data.dtype)  # the region's memory goes now
        layer.name = PARKED
        self.parked = layer

    def _unpark(self, labels: np.ndarray, name: str, scale, translate, source, ident: str):
        """The parked layer made the new region's, on top of the others, or None when there is none."""
        layer, self.parked = self.parked, None
        if layer is None or layer not in self.viewer.layers:
            return None
        layer.data = labels
        layer.scale, layer.translate, layer.units = scale, translate, source.units
        layer.colormap, layer.opacity, layer.name = source.colormap, 0.7, name
        layer.metadata = {DRAFT_KEY: ident}
        layer.editable = layer.visible = True
        index, top = self.viewer.layers.index(layer), len(self.viewer.layers) - 1
        if index != top:
            self.viewer.layers.move(index, top + 1)
        return layer

    def discard(self, *_) -> None:
        session = self._session()
        if session is None:
            show_error("no correction open: nothing to discard")
            return
        self._close(session)
        self.status.value = f"discarded the edit of box {session.region.box}; the store is unchanged"

    def _run(self, what: str, work: Callable, on_done: Callable[[Any], None],
             on_failed: Callable[[], None] | None = None) -> bool:
        """``work`` in a thread (one at a time), ``on_done`` with its result back in the GUI thread."""
        if self.worker is not None:
            show_info(f"busy: wait for the {self.worker.cancerseg_what} to finish")
            return False
        worker = create_worker(work, _start_thread=False)
        worker.cancerseg_what = what

        def failed(err: Exception) -> None:
            text = str(err) if isinstance(err, CancersegError) else f"{what} failed: {type(err).__name__}: {err}"
            self.status.value = text
            show_error(text)
            if on_failed is not None:
                on_failed()

        def finished() -> None:
            self.worker = None

        worker.returned.connect(on_done)
        worker.errored.connect(failed)
        worker.finished.connect(finished)
        self.worker = worker
        self.status.value = f"{what}…"
        worker.start()
        return True

    def accept(self, *_) -> None:
        session = self._session()
        if session is None:
            show_error("no correction open: Edit region first")
            return
        labels = np.array(session.layer.data, copy=True)  # the edit as it is now: painting stops below

        def refused() -> None:
            session.accepting = False

        # the layer stays editable: making it read-only redraws the whole 2048 px region (0.5-1.8 s frozen here);
        # strokes painted while the store is written are caught in _accepted instead
        if self._run("accept", lambda: session.store.accept_region(session.region, labels),
                     lambda correction: self._accepted(session, correction, labels), refused):
            session.accepting = True

    def _accepted(self, session: EditSession, correction: Correction, written: np.ndarray) -> None:
        """In the GUI thread: the edit layer goes, the store's layers show the store again, the first is selected."""
        session.accepting = False
        painted_since = not np.array_equal(np.asarray(session.layer.data), written)  # while Accept ran
        if painted_since:
            session.draft.save(session.layer.data)  # the region stays open with the later strokes
        else:
            self._close(session)
        path = session.store.path
        refreshed = self._store_layers(path)
        for layer in refreshed:
            refresh_store_layer(layer, path)
        if painted_since:
            self.status.value = (f"accepted {correction.pixels_changed} pixels; strokes painted since are still "
                                 "open: Accept again to write them")
            return
        message = (f"accepted: {correction.pixels_changed} pixels changed in box {correction.box} "
                   f"(level {correction.level})")
        self.status.value = message

        def select_and_notify() -> None:
            # on a turn of its own, after the refreshed prediction is drawn: the layer controls' switch and
            # napari's notification were another 50-60 ms of the same frozen frame
            chosen = self.store_layer.value if store_path(self.store_layer.value) == path else None
            target = chosen if chosen is not None else (refreshed[0] if refreshed else None)
            if target is not None and target in self.viewer.layers:
                self.viewer.layers.selection.active = target
            show_info(message)

        add_in_turns([select_and_notify], self.native)

    # ---- drafts and suggestions -----------------------------------------------------------------

    def _offer_drafts(self, *_) -> None:
        path = store_path(self.store_layer.value)
        drafts = pending_drafts(path) if path else []
        open_drafts = {s.draft.ident for s in self.sessions}
        waiting = [d for d in drafts if d.ident not in open_drafts]
        self.restore_button.enabled = bool(waiting)
        self.restore_button.text = f"Restore {len(waiting)} draft(s)" if waiting else "Restore drafts"

    def restore(self, *_) -> list[EditSession]:
        try:
            store, path = self._store()
        except CancersegError as err:
            show_error(str(err))
            return []
        open_drafts = {s.draft.ident for s in self.sessions}
        restored = [self._open(store, d.region, d.load(), d)
                    for d in pending_drafts(path) if d.ident not in open_drafts]
        for session in restored:
            session.touched = True  # earlier work: Next never closes it as unused
        self._offer_drafts()
        return restored

    def suggest(self, *_) -> None:
        try:
            store, path = self._store()
        except CancersegError as err:
            show_error(str(err))
            return
        count = self.suggest_count.value
        self._run("suggest", lambda: uncertain_regions(path, count), lambda found: self._suggested(store, found))

    def _prepare_suggestions(self, *_) -> None:
        """The suggestions' Shapes layer, added empty and hidden once a prediction is chosen, not by Suggest.

        napari building a Shapes layer (its six vispy visuals) froze the window for 0.15-0.3 s, Suggest's whole
        budget (issue 17: 200 ms); choosing the prediction is set-up, where that wait goes unnoticed. Added on a
        later event-loop turn than the choice, with the selection left as it was.
        """
        if self.store_layer.value is not None and SUGGESTIONS not in self.viewer.layers:
            add_in_turns(layer_steps(self.viewer, self._add_suggestions_layer, self._start_warming,
                                     self._end_warming), self.native)

    def _start_warming(self, layer) -> None:
        """The empty layer drawn once with one invisible rectangle, so that its shaders are built now.

        The first drawing of rectangles in a new Shapes layer builds its shader programs under software OpenGL:
        0.38-0.42 s on a slow 2-core VM, and 56-72 ms once drawn before. The rectangle is transparent and the
        layer hidden and emptied again on the next turn (``_end_warming``), unless Suggest has filled it first.
        """
        if len(layer.data) or layer.visible:
            return
        layer.add_rectangles([np.array([[0, 0], [0, 1], [1, 1], [1, 0]])], edge_color="transparent",
                             face_color="transparent", edge_width=4)
        layer.visible = True
        self._warming = layer

    def _end_warming(self, layer) -> None:
        if self._warming is layer:  # not filled by Suggest in between
            layer.visible = False
            layer.data = []
        self._warming = None

    def _add_suggestions_layer(self) -> Any:
        source = self.store_layer.value
        if source is None or SUGGESTIONS in self.viewer.layers:  # made already (Suggest came first), or no prediction
            return None
        selected = self.viewer.layers.selection.active
        layer = self.viewer.add_shapes(name=SUGGESTIONS, visible=False, scale=source.scale,
                                       translate=source.translate, units=source.units)
        if selected is not None and selected in self.viewer.layers:  # napari selects each layer it adds
            self.viewer.layers.selection.active = selected
        return layer

    def _suggested(self, store: LabelStore, suggestions: list[Suggestion]) -> None:
        source = self.store_layer.value
        d = store.downsample
        rectangles = [np.array([[y, x], [y, x + w], [y + h, x + w], [y + h, x]]) / d for x, y, w, h in
                      (s.box for s in suggestions)]
        features = {"rank": list(range(1, len(suggestions) + 1)), "entropy": [s.entropy for s in suggestions]}
        # the ranks and scores are in the dock's list: no text on the canvas, whose first drawing of text
        # froze the window for a second here
        def fill(layer) -> None:
            self._warming = None  # the suggestions replace the warm-up rectangle: left shown
            layer.data = []
            layer.scale, layer.translate, layer.units = source.scale, source.translate, source.units
            layer.add_rectangles(rectangles, edge_color="magenta", face_color="transparent", edge_width=4)
            layer.features = features

        if SUGGESTIONS in self.viewer.layers:  # made when the prediction was chosen (_prepare_suggestions), or by
            layer = self.viewer.layers[SUGGESTIONS]  # an earlier Suggest: filled now, drawn on the next turn
            fill(layer)
            add_in_turns(layer_steps(self.viewer, lambda: layer, make_visible), self.native)
        else:  # removed by the user: added hidden, filled and shown on three event-loop turns (add_in_turns)
            add_in_turns(layer_steps(self.viewer, self._add_suggestions_layer, fill, make_visible),
                         self.native)
        self.suggestions = list(suggestions)
        self.suggestion_list.clear()
        unit = unit_name(source.units[-1])
        for rank, suggestion in enumerate(suggestions, 1):
            y, x = self.suggestion_centre(suggestion, d)
            self.suggestion_list.addItem(f"{rank}. uncertainty {suggestion.entropy:.2f} at x {x:.0f}, "
                                         f"y {y:.0f} {unit}")
        self.status.value = (f"{len(suggestions)} most uncertain regions shown in '{SUGGESTIONS}': "
                             "Next (Shift-N) opens them in turn")

    def suggestion_centre(self, suggestion: Suggestion, d: float) -> tuple[float, float]:
        """The centre of a suggested box in world coordinates (the prediction layer's units), row then column.

        ``d``: the store's downsample (slide level-0 pixels per store pixel).
        """
        source = self.store_layer.value
        x, y, w, h = suggestion.box
        # napari draws data pixel i over [i - 0.5, i + 0.5]: a box of pixels [y, y + h) is centred on y + h/2 - 0.5
        return (float(source.translate[-2] + ((y + h / 2) / d - 0.5) * source.scale[-2]),
                float(source.translate[-1] + ((x + w / 2) / d - 0.5) * source.scale[-1]))

    def next_region(self, *_) -> EditSession | None:
        """The suggestion after the current one (the first after Suggest), zoomed to and opened."""
        if not self.suggestions:
            show_error("no suggestions: press Suggest regions to correct first")
            return None
        row = self.suggestion_list.currentRow() + 1
        if row >= len(self.suggestions):
            show_info(f"that was the last of the {len(self.suggestions)} suggestions: Suggest again for more")
            return None
        return self.go_to(row)

    def _on_activated(self, item) -> None:  # Qt's slots return nothing
        self.go_to(self.suggestion_list.row(item))

    def go_to(self, row: int) -> EditSession | None:
        """Open suggestion ``row`` for editing and fit the camera to it; an untouched open region is closed."""
        for unused in [s for s in self.sessions if not s.touched and not s.accepting]:
            self._close(unused)  # opened but never painted: no work to keep, and no pile of layers
        self.suggestion_list.setCurrentRow(row)
        session = self.edit(box=self.suggestions[row].box)
        if session is not None:
            self.viewer.fit_to_view(layers=[session.layer], margin=0.05)
            self.viewer.layers.selection.active = session.layer
            self.status.value = f"suggestion {row + 1} of {len(self.suggestions)}: " + self.status.value
        return session
