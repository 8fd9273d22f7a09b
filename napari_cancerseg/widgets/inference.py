"""Predict a slide layer with a model bundle, in a separate model process, showing the overlay as it fills in."""

import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any, cast

import napari
from magicgui.types import FileDialogMode
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    FileEdit,
    FloatSpinBox,
    Label,
    ProgressBar,
    PushButton,
    create_widget,
)
from magicgui.widgets.bases import ValueWidget
from napari.qt.threading import thread_worker
from napari.types import LayerDataTuple
from napari.utils.notifications import show_error, show_info

from .. import NUCLEI_MODEL, resource_path
from .._reader import show_scale_bar
from ..errors import CancersegError
from ..grading.report import measured_line
from ..inference import worker as model_process
from ..inference.options import PredictOptions
from ..io import stores, wsi
from ..io.stores.ngff import layer_name
from ..models.bundle import bundle_info
from ..processes import Done, Message, Progress
from . import scratch_path
from ._dock import ScrollableContainer, add_in_turns, chosen_path, layer_steps, make_visible
from ._heap import keep_long_lived_objects_frozen
from ._process import ProcessDock, ProcessRunner
from .legend import ClassLegend, layer_entries, model_entries

#: Heat maps: translucent over H&E (additive washed out on bright tissue), a perceptual colormap, 0..1.
HEAT_MAP_STYLE = {"colormap": "viridis", "blending": "translucent", "opacity": 0.6, "contrast_limits": (0.0, 1.0)}
#: The slide's associated images the overview button adds, in this order, when the slide has them.
OVERVIEW_IMAGES = ("thumbnail", "label", "macro")


def default_store(slide_path: str, model_path: str) -> str:
    return scratch_path(slide_path, model_path, ".zarr")


def store_layer_name(out: str) -> str:
    """The name the store's layer gets ("<slide> · <model> <version>"), or the store's file name before it exists."""
    try:
        return layer_name(stores.read_attributes(out), out)
    except CancersegError:
        return Path(out).stem


def heat_map_layers(out: str, labels: list[int] | None = None) -> list[LayerDataTuple]:
    """Lazy heat maps of a prediction store's class probabilities (every class but background, or ``labels``):
    stored as uint8, shown as 0..1 probabilities, in the store's scale, translation and units."""
    attributes = stores.read_attributes(out)
    name = layer_name(attributes, out)
    layers: list[LayerDataTuple] = []
    for label, class_name, pyramid in stores.class_probabilities(out):
        if labels is not None and label not in labels:
            continue
        probability = pyramid  # 0..1, read chunk by chunk when shown
        kwargs = {"name": f"{name} p({class_name})", "scale": attributes.scale, "translate": attributes.translate,
                  "units": attributes.units, "multiscale": True, **HEAT_MAP_STYLE,
                  "metadata": {"format": "probability heat map", "path": out, "label": label,
                               "class": class_name}}
        layers.append((probability, kwargs, "image"))
    return layers


def _warm_imports() -> None:
    """What the first Labels layer and the result text would otherwise load on the GUI thread, loaded here.

    pandas (the layer's feature table), skimage's colour conversions (its random label colours, through
    scipy.linalg) and scipy.ndimage (the result text); and vispy's dash patterns, computed by the first Line
    visual of a process (napari's polygon and brush overlays on every Labels layer) and cached by vispy after.
    Together 0.3-0.6 s of a frozen window at the first tile on 2 cores.
    """
    import importlib

    for module in ("pandas", "scipy.ndimage", "skimage.color.colorconv"):
        importlib.import_module(module)
    from vispy.visuals.line.dash_atlas import DashAtlas  # type: ignore[import-untyped]

    DashAtlas()  # numpy only, no OpenGL: safe off the GUI thread


def magnification_text(slide_layer, zoom: float) -> str:
    """The magnification on screen: the objective's when one level-0 pixel fills one screen pixel."""
    metadata = (slide_layer.metadata or {}) if slide_layer is not None else {}
    objective = metadata.get("objective_power")
    if not objective:
        return "magnification: unknown (the slide records no objective power)"
    shown = float(objective) * zoom * float(slide_layer.scale[-1])  # world units per level-0 pixel x screen px/unit
    return f"magnification: {shown:.1f}x" if shown < 10 else f"magnification: {shown:.0f}x"


class InferenceWidget(ProcessDock, ScrollableContainer):
    """Slide layer + bundle + level/µm per px + tissue threshold -> a read-only multiscale prediction layer."""

    def __init__(self, viewer: napari.Viewer):
        self.viewer = viewer
        self.slide = cast(ValueWidget, create_widget(annotation=napari.layers.Image, label="slide"))
        self.magnification = Label(value="magnification: no slide")
        self.overview_button = PushButton(text="Add thumbnail, label and macro (hidden layers)")
        self.model = FileEdit(label="model bundle", value=Path(resource_path(NUCLEI_MODEL)), filter="*.keras")
        self.mpp = FloatSpinBox(label="µm/px (0: model's)", value=0.0, min=0.0, max=100.0, step=0.05)
        self.tissue = FloatSpinBox(label="min tissue fraction", value=PredictOptions.tissue,
                                   min=0.0, max=1.0, step=0.05)
        self.out = FileEdit(label="store (empty: kept in the cache folder)", mode=FileDialogMode.OPTIONAL_FILE,
                            filter="*.zarr", value=None)
        self.heatmap = ComboBox(label="also show", choices=["labels only", "probability heat maps"])
        self.glass = CheckBox(text="show glass (chunks not predicted)", value=True,
                              tooltip="grey where the tissue mask found glass: the model never looked there")
        self.run_button, self.cancel_button = PushButton(text="Run"), PushButton(text="Cancel", enabled=False)
        self.progress = ProgressBar(label="tiles", value=0, min=0, max=1)
        self.status = Label(value="research use only, not for diagnosis")
        self.legend_title = Label(value="classes of the model")
        self.heat_class = ComboBox(label="heat map of", choices=self._heat_map_choices)
        self.heat_button = PushButton(text="Add heat map", enabled=False,
                                      tooltip="the chosen class's probability from the last prediction's store")
        super().__init__(widgets=[self.slide, self.magnification, self.overview_button, self.model, self.mpp,
                                  self.tissue, self.out, self.heatmap, self.glass, self.run_button, self.cancel_button,
                                  self.progress, self.status, self.legend_title, self.heat_class, self.heat_button])
        keep_long_lived_objects_frozen(viewer, self.native)  # no full collection walks napari's heap
        self.legend = ClassLegend()
        self.add_qt_widget(self.legend, before=self.heat_class)
        # the slide canvas keeps most of the window: long messages wrap, paths elide, the dock stays narrow
        self.status.native.setWordWrap(True)
        self.magnification.native.setWordWrap(True)
        self.native.setMaximumWidth(380)
        self.run_button.changed.connect(self.run)
        self.heat_button.changed.connect(self.add_heat_map)
        self.overview_button.changed.connect(self.add_overview)
        self.model.changed.connect(self._show_model_classes)
        self.slide.changed.connect(self._on_slide)
        _camera(viewer).events.zoom.connect(self._update_magnification)
        # the runner owns the model process: Cancel, the bar, the status, and ending it when the dock closes
        self.runner = ProcessRunner(self, [self.run_button], self.status, self.cancel_button, self.progress,
                                    cancelled_text="cancelled; Run again resumes where it stopped")
        self.live_layer: napari.layers.Labels | None = None
        # what the first Labels layer and the result text would load on the GUI thread at the first tile
        # (_warm_imports says what), loaded now, off it
        threading.Thread(target=_warm_imports, name="cancerseg-warm-imports", daemon=True).start()
        self.last_store: str | None = None  # the store "Add heat map" reads
        self._show_model_classes()
        self._on_slide()

    # ---- the slide: scale bar, magnification, overview ------------------------------------------------------
    def _slide_layer(self):
        layer = self.slide.value
        return layer if layer is not None and (layer.metadata or {}).get("format") == "whole-slide image" else None

    def _on_slide(self, *_) -> None:
        if self._slide_layer() is not None:
            show_scale_bar(self.viewer)
        self._update_magnification()

    def _update_magnification(self, *_) -> None:
        layer = self._slide_layer()
        self.magnification.value = magnification_text(layer, _camera(self.viewer).zoom) if layer is not None \
            else "magnification: no slide"
        names = set((layer.metadata or {}).get("associated_images") or []) if layer is not None else set()
        self.overview_button.enabled = bool(names & set(OVERVIEW_IMAGES))

    def add_overview(self, *_) -> list:
        """The slide's thumbnail over it, and its label and macro images beside it, as hidden layers in the slide's
        units (they carry no µm/px of their own: they are sized to the slide's height)."""
        layer = self._slide_layer()
        if layer is None:
            show_error("pick a whole-slide image layer opened with this plugin")
            return []
        path, available = layer.metadata["path"], set(layer.metadata.get("associated_images") or [])
        height, width = (float(s) * float(n) for s, n in zip(layer.scale[-2:], layer.data[0].shape[:2]))
        top, left = (float(t) for t in layer.translate[-2:])
        stem, added, right = Path(path).stem, [], left + width
        for name in OVERVIEW_IMAGES:
            if name not in available:
                continue
            pixels = wsi.read_associated_image(path, name)
            if name == "thumbnail":  # the whole slide, smaller: it lies over the slide
                scale, translate = (height / pixels.shape[0], width / pixels.shape[1]), (top, left)
            else:  # a photograph of the glass: beside the slide, as tall as it
                side = height / pixels.shape[0]
                scale, translate = (side, side), (top, right + 0.05 * width)
                right = translate[1] + side * pixels.shape[1]
            added.append(self.viewer.add_image(pixels, name=f"{stem} {name}", rgb=True, scale=scale,
                                               translate=translate, units=tuple(layer.units[-2:]), visible=False,
                                               metadata={"format": "associated image", "path": path,
                                                         "associated_image": name}))
        return added

    # ---- the model's classes, the legend, heat maps after a run ---------------------------------------------
    def _show_model_classes(self, *_) -> None:
        try:
            classes = bundle_info(str(self.model.value)).classes
        except CancersegError:
            classes = []
        self.legend_title.value = "classes of the model"
        self.legend.set_entries(model_entries(classes))

    def _show_store_classes(self, layer) -> None:
        self.legend_title.value = f"classes of {layer.name}"
        self.legend.set_entries(layer_entries(layer))
        self.heat_class.reset_choices()
        self.heat_button.enabled = bool(self.heat_class.choices)

    def _heat_map_choices(self, *_) -> list[str]:
        """The classes (but background) of the last prediction's store: napari re-asks when layers change."""
        store = getattr(self, "last_store", None)
        classes = stores.class_probabilities(store) if store and stores.claims(store) else []
        return [f"{label}: {name}" for label, name, _ in classes]

    def add_heat_map(self, *_) -> list:
        """The chosen class's probability of the last prediction, read lazily from its store."""
        if not self.last_store or not self.heat_class.value:
            show_error("run a prediction first: its store holds the probabilities")
            return []
        label = int(str(self.heat_class.value).split(":")[0])
        # as at the end of a run: added hidden now; its colorbar made, the layer drawn and the colorbar drawn on
        # turns of their own (in one turn, 0.9 s of napari's work on a slow 2-core VM)
        added = [self._add_hidden(layer_data) for layer_data in heat_map_layers(self.last_store, [label])]
        shown = (_make_colorbar, make_visible, _show_colorbar)
        add_in_turns([step for layer in added for step in layer_steps(self.viewer, _already(layer), *shown)],
                     self.native)
        return added

    # ---- running -------------------------------------------------------------------------------------------
    def store_path(self, slide_path: str) -> str:
        return chosen_path(self.out) or default_store(slide_path, str(self.model.value))

    def run(self, *_):
        layer = self.slide.value
        slide_path = (layer.metadata or {}).get("path") if layer is not None else None
        if not slide_path or (layer.metadata or {}).get("format") != "whole-slide image":
            show_error("pick a whole-slide image layer opened with this plugin")
            return
        out = self.store_path(slide_path)
        if self.live_layer is not None:  # the layer of a cancelled run: it fills in again as the run resumes
            if self.live_layer in self.viewer.layers:
                self.live_layer.name = f"{store_layer_name(out)} (running)"
            else:
                self.live_layer = None
        options = PredictOptions.from_form(mpp=self.mpp.value, tissue=self.tissue.value)  # µm/px 0: None, the model's
        argv = model_process.command(slide_path, str(self.model.value), out, options)
        self.status.value = "starting the model process..."
        self.runner.start(argv, "model", on_message=lambda message: self._on_message(message, out, layer),
                          on_cancelled=lambda message: self._on_cancelled(out, layer),
                          on_failed=lambda message: self._rename_live(out))  # nothing runs: not "(running)"

    def _on_message(self, message: Message, out: str, slide_layer) -> None:
        if isinstance(message, Progress):
            data, left = message.data, message.data.get("seconds_left")
            self.status.value = (f"{message.done}/{message.total} tiles, "
                                 f"{data.get('tiles_per_second') or 0:.1f} tiles/s"
                                 + (f", {left:.0f} s left" if left else ""))
            self._show_live(out, slide_layer)
        elif isinstance(message, Done):
            measure = self._show_result(out, float(message.data.get("seconds") or 0.0))
            # measured once the later layers are in: the measuring thread took a core (1-2 s) from the GUI thread
            # while it added them, and each of napari's costs grew with it
            self._show_final(out, slide_layer, then=measure)
            show_info(message.summary)

    def _show_result(self, out: str, seconds: float) -> Callable[[], None]:
        """Counts and areas of the result (nuclei, tumour mm² of tissue), measured off the GUI thread: the
        status says so now, and the returned function starts the measuring."""
        tail = f" ({seconds:.0f} s; research use only, not for diagnosis)"
        self.status.value = "done: measuring the result..." + tail
        self.result_text: str | None = None

        def show(text: str) -> None:
            self.result_text = text
            if not self.runner.closed:  # the measuring may end after the dock closed, its status label deleted
                self.status.value = f"done: {text}{tail}"

        def measure() -> None:
            self._measuring = thread_worker(measured_line, start_thread=False, ignore_errors=True)(out)
            self._measuring.returned.connect(show)
            self._measuring.errored.connect(lambda err: show(f"no areas ({err})"))
            self._measuring.start()

        return measure

    def _on_cancelled(self, out: str, slide_layer) -> None:
        """Cancel is not a failure: the layer shows every chunk written, under its final name; Run again resumes."""
        self._show_live(out, slide_layer)
        self._rename_live(out)

    def _rename_live(self, out: str) -> None:
        if self.live_layer is not None:
            self.live_layer.name = store_layer_name(out)

    def _live_levels(self, out: str) -> list:
        """A pyramid over level 0 as written so far, keeping the chunks the live layer already read
        (the engine writes each chunk once, whole)."""
        layer = self.live_layer
        cache = getattr(layer.data[0], "cache", None) if layer is not None and layer.multiscale else None
        return stores.live_levels(out, cache)

    def _show_live(self, out: str, slide_layer) -> None:
        if not stores.claims(out):  # the store appears whole (renamed into place), or not yet
            return
        if self.live_layer is None:
            (_, kwargs, _), = stores.read(out)  # scale, units, class names and the model's class colours
            kwargs.update(name=f"{store_layer_name(out)} (running)", opacity=0.5, multiscale=True, visible=False)
            live_layer = self.viewer.add_labels(self._live_levels(out), **kwargs)
            live_layer.editable = False
            self.live_layer = live_layer
            add_in_turns([lambda: make_visible(live_layer)], self.native)  # drawn first on a later turn
        else:
            self.live_layer.data = self._live_levels(out)

    def _show_final(self, out: str, slide_layer, then: Callable[[], None] | None = None) -> None:
        (levels, kwargs, _), = stores.read(out)  # named by slide and model, "(incomplete...)" when chunks are missing
        levels = stores.viewer_levels(out) or levels  # sliced without dask on the GUI thread
        live, self.live_layer = self.live_layer, None
        if live is not None and live in self.viewer.layers:
            # the live layer becomes the result: removing a layer and adding one froze the window for seconds
            # (napari's gc.collect on removal, new visuals and overlays on adding)
            live.data = levels
            live.name, live.metadata = kwargs["name"], kwargs.get("metadata", {})
            if "features" in kwargs:
                live.features = kwargs["features"]
            layer = live
        else:
            kwargs.update(opacity=0.5)
            layer = self.viewer.add_labels(levels, **kwargs)
        layer.editable = False  # multiscale labels are read-only in napari; correct a region instead
        self.last_store = out
        self._show_store_classes(layer)
        self.viewer.layers.selection.active = layer  # the prediction stays the layer a user works on
        # each further layer is added hidden and shown on event-loop turns of its own (add_in_turns), so the
        # window answers between them
        add_in_turns([lambda: self._show_later_layers(out, layer, self.heatmap.value == "probability heat maps",
                                                      self.glass.value, then)], self.native)

    def _show_later_layers(self, out: str, prediction, heat_maps: bool, glass: bool,
                           then: Callable[[], None] | None = None) -> None:
        """The heat maps and the glass layer, one napari cost a turn; ``then`` on the turn after the last."""
        later: list[tuple] = []  # (layer data tuple, shown)
        if heat_maps:  # one lazy heat map per class but background (label 0), named after it; the first shown
            later += [(heat_map, heat_map[1]["metadata"]["label"] == 1) for heat_map in heat_map_layers(out)]
        if glass and (glass_layer := stores.glass_layer(out)) is not None:
            later.append((glass_layer, True))
        steps: list = []
        for layer_data, shown in later:
            # one napari cost a turn (0.1-0.3 s each on 2 cores): adding the layer; napari selecting it, undone;
            # a heat map's colorbar made (its axis and text visuals); the layer's first drawing; the colorbar's
            # (its tick labels' glyphs and shaders) on a turn of its own
            if layer_data[2] != "image":
                then_steps = [self._select_prediction(prediction)] + ([make_visible] if shown else [])
            elif shown:
                then_steps = [self._select_prediction(prediction), _make_colorbar, make_visible, _show_colorbar]
            else:
                then_steps = [self._select_prediction(prediction), _show_colorbar]
            steps += layer_steps(self.viewer, partial(self._add_hidden, layer_data), *then_steps)
        add_in_turns(steps + ([then] if then is not None else []), self.native)

    def _add_hidden(self, layer_data: tuple):
        """A heat map or the glass layer, hidden (napari selects it)."""
        data, kwargs, kind = layer_data
        if kind == "image":
            return self.viewer.add_image(data, **{**kwargs, "visible": False})
        added = self.viewer.add_labels(data, **{**kwargs, "visible": False})
        added.editable = False
        return added

    def _select_prediction(self, prediction) -> Callable[[Any], None]:
        """A step that selects the prediction again: it stays the layer a user works on."""
        def select(_added) -> None:
            if prediction in self.viewer.layers:
                self.viewer.layers.selection.active = prediction
        return select

    def cancel(self, *_) -> None:
        """The store keeps every finished chunk; Run again resumes."""
        self.runner.cancel()


def _camera(viewer):
    """The canvas camera (``viewer.scene.camera`` since napari 0.9, ``viewer.camera`` before)."""
    scene = getattr(viewer, "scene", None)
    return scene.camera if scene is not None else viewer.camera


def _already(layer: Any) -> Callable[[], Any]:
    """``layer_steps``' adding step for a layer added already."""
    return lambda: layer


def _show_colorbar(layer) -> None:
    """napari's colorbar beside a heat map (napari >= 0.5.5 has one on every Image layer)."""
    colorbar = getattr(layer, "colorbar", None)
    if colorbar is not None:
        colorbar.visible = True


def _make_colorbar(layer) -> None:
    """The colorbar's visuals made but not drawn: napari makes them when it is first shown and keeps them after,
    so its making and its first drawing (0.2-0.5 s together on 2 cores) fall on different turns."""
    colorbar = getattr(layer, "colorbar", None)
    if colorbar is not None and not colorbar.visible:
        colorbar.visible = True
        colorbar.visible = False
