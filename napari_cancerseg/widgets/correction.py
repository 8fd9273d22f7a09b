"""Correct a prediction (or rasterised annotations) region by region, autosaved, then accept it into the store.

The store's multiscale layer stays read-only; "Edit region" opens the current
view (or the last rectangle drawn) as a plain Labels layer at one pyramid
level, where napari's paint, fill, erase and undo work as usual.  Drafts reach
disk every ``CANCERSEG_AUTOSAVE_SECONDS`` (30 s), when a layer is removed and
when napari quits; "Accept" writes the region into the store (``correction``).
"""

import itertools
import os
from dataclasses import dataclass
from typing import cast

import napari
import numpy as np
from magicgui.widgets import ComboBox, Container, Label, PushButton, SpinBox, create_widget
from magicgui.widgets.bases import ValueWidget
from napari.utils.notifications import show_error, show_info
from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication

from ..correction.active import uncertain_regions
from ..errors import CancersegError
from ..io import stores
from ..io.stores import LabelStore, Region
from ..io.stores.drafts import AUTOSAVE_SECONDS, Draft, pending_drafts

RECTANGLES = "correction regions"
SUGGESTIONS = "next regions to correct"
DRAFT_KEY = "cancerseg_draft"
MAX_EDIT_SIDE = 2048  # auto level: the finest at which the region fits in this many pixels


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


@dataclass
class EditSession:
    store: LabelStore
    region: Region
    draft: Draft
    layer: "napari.layers.Labels"
    dirty: bool = False


class CorrectionWidget(Container):
    def __init__(self, viewer: napari.Viewer):
        self.viewer = viewer
        self.store_layer = cast(ValueWidget, create_widget(annotation=napari.layers.Labels, label="prediction"))
        self.source = ComboBox(label="region", choices=["current view", "last rectangle"])
        self.level = SpinBox(label="level (-1: auto)", value=-1, min=-1, max=16)
        self.draw_button = PushButton(text="Draw a rectangle")
        self.edit_button = PushButton(text="Edit region")
        self.accept_button = PushButton(text="Accept selected correction")
        self.suggest_count = SpinBox(label="suggest", value=5, min=1, max=100)
        self.suggest_button = PushButton(text="Suggest regions to correct")
        self.restore_button = PushButton(text="Restore drafts")
        self.status = Label(value="")
        super().__init__(widgets=[self.store_layer, self.source, self.level, self.draw_button, self.edit_button,
                                  self.accept_button, self.suggest_count, self.suggest_button,
                                  self.restore_button, self.status])
        self.status.native.setWordWrap(True)
        self.native.setMaximumWidth(380)
        self.sessions: list[EditSession] = []
        self.draw_button.changed.connect(self.draw_rectangle)
        self.edit_button.changed.connect(self.edit)
        self.accept_button.changed.connect(self.accept)
        self.suggest_button.changed.connect(self.suggest)
        self.restore_button.changed.connect(self.restore)
        self.store_layer.changed.connect(self._offer_drafts)
        self.timer = QTimer()
        self.timer.setInterval(int(float(os.environ.get("CANCERSEG_AUTOSAVE_SECONDS", AUTOSAVE_SECONDS)) * 1000))
        self.timer.timeout.connect(self._autosave_tick)
        self.timer.start()
        app = QApplication.instance()
        assert app is not None  # napari's viewer runs in it
        app.aboutToQuit.connect(self.save_all)
        viewer.layers.events.removing.connect(self._on_removing)
        self._offer_drafts()

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
        if RECTANGLES not in self.viewer.layers:
            self.viewer.add_shapes(name=RECTANGLES, edge_color="cyan", face_color="transparent", edge_width=4,
                                   scale=self.store_layer.value.scale if self.store_layer.value is not None else None)
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
        layer = self.viewer.add_labels(labels.copy(),
                                       name=f"correction {len(self.sessions) + 1} (level {region.level})",
                                       scale=scale, translate=translate, colormap=source.colormap, opacity=0.7,
                                       units=source.units, metadata={DRAFT_KEY: draft.ident})
        session = EditSession(store, region, draft, layer)
        layer.events.paint.connect(lambda *_: setattr(session, "dirty", True))
        layer.events.data.connect(lambda *_: setattr(session, "dirty", True))
        layer.mode = "paint"
        self.sessions.append(session)
        draft.save(labels)  # the draft exists from the start: a crash in the first 30 s still finds the region
        self.status.value = (f"editing {region.shape[1]} x {region.shape[0]} px at level {region.level}; "
                             "paint, fill or erase, then Accept")
        return session

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
        session = self._session_of(self.viewer.layers[event.index])
        if session is not None:  # removed without accepting: keep the work as a draft
            session.draft.save(session.layer.data)
            self.sessions.remove(session)

    def _session(self) -> EditSession | None:
        return self._session_of(self.viewer.layers.selection.active) or (self.sessions[-1] if self.sessions else None)

    def accept(self, *_) -> None:
        session = self._session()
        if session is None:
            show_error("no correction open: Edit region first")
            return
        try:
            correction = session.store.accept_region(session.region, np.asarray(session.layer.data))
        except CancersegError as err:
            show_error(str(err))
            return
        session.draft.discard()
        self.sessions.remove(session)
        self.viewer.layers.remove(session.layer)
        for layer in self.viewer.layers:
            if store_path(layer) == session.store.path:
                refresh_store_layer(layer, session.store.path)
        message = (f"accepted: {correction.pixels_changed} pixels changed in box {correction.box} "
                   f"(level {correction.level})")
        self.status.value = message
        show_info(message)

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
        self._offer_drafts()
        return restored

    def suggest(self, *_) -> None:
        try:
            store, path = self._store()
            suggestions = uncertain_regions(path, self.suggest_count.value)
        except CancersegError as err:
            show_error(str(err))
            return
        source = self.store_layer.value
        d = store.downsample
        rectangles = [np.array([[y, x], [y, x + w], [y + h, x + w], [y + h, x]]) / d for x, y, w, h in
                      (s.box for s in suggestions)]
        if SUGGESTIONS in self.viewer.layers:
            self.viewer.layers.remove(SUGGESTIONS)
        self.viewer.add_shapes(rectangles, shape_type="rectangle", name=SUGGESTIONS, edge_color="magenta",
                               face_color="transparent", edge_width=4, scale=source.scale, translate=source.translate,
                               features={"entropy": [s.entropy for s in suggestions]},
                               text={"string": "{entropy:.2f}", "color": "magenta"})
        self.status.value = f"{len(suggestions)} most uncertain regions shown in '{SUGGESTIONS}'"
