"""Import annotations onto a slide layer, and export a Shapes or Labels layer to ImageScope, ASAP or GeoJSON."""


import os
from enum import Enum
from pathlib import Path

import napari
import numpy as np
from napari.utils.notifications import show_error, show_info, show_warning

from .. import annotations as annotation_io
from ..annotations.raster import labels_to_annotations
from ..classes import CLASSES
from ..errors import CancersegError
from ..io.annotation_files import to_annotations, to_layer_data
from ._dock import scrollable_factory
from .legend import layer_classes

#: Labels layers are vectorised on the first level no larger than this (multiscale predictions).
MAX_VECTORISE_SIDE = 8192


class Format(Enum):
    aperio = "Aperio ImageScope XML (.xml)"
    asap = "ASAP XML (.xml)"
    geojson = "GeoJSON / QuPath (.geojson)"

    @property
    def suffixes(self) -> tuple[str, ...]:
        """The file names each format is saved under: what its readers (and this plugin's) recognise."""
        return (".geojson", ".json") if self is Format.geojson else (".xml",)


def slide_mpp(layer) -> float | None:
    """µm per level-0 pixel of a slide layer opened by this plugin, or None."""
    mpp = (layer.metadata or {}).get("mpp") if layer is not None else None
    return float(mpp[0]) if mpp else None


def read_annotations(path: Path, slide: napari.layers.Image | None = None) -> list[napari.types.LayerDataTuple]:
    """Read ImageScope/ASAP/GeoJSON and lay it over ``slide`` (level-0 pixels at the slide's scale)."""
    annotation_set = annotation_io.read(path)
    scale = tuple(slide.scale[-2:]) if slide is not None else None
    # the slide's units (µm): napari's scale bar keeps them only while every layer has the same
    units = (str(slide.units[-2]), str(slide.units[-1])) if slide is not None else None
    layers = to_layer_data(annotation_set, scale=scale, units=units)
    mpp = slide_mpp(slide)
    if slide is not None and mpp and annotation_set.mpp and abs(mpp - annotation_set.mpp) / mpp > 0.05:
        show_warning(f"{path.name} was drawn at {annotation_set.mpp} µm/px but {slide.name} is {mpp:.4g} µm/px: "
                     "it may belong to another scan of this slide")
    for _, kwargs, _ in layers:
        if slide is not None:
            kwargs["translate"] = tuple(slide.translate[-2:])
            kwargs["metadata"]["slide"] = slide.name
    for note in annotation_set.notes:
        show_info(note)
    return layers


def _labels_for_export(layer) -> tuple[np.ndarray, float]:
    """A Labels layer's level to vectorise and its downsample relative to level 0."""
    if not layer.multiscale:
        return np.asarray(layer.data), 1.0
    base_width = layer.data[0].shape[-1]
    level = next((lvl for lvl in layer.data if max(lvl.shape[-2:]) <= MAX_VECTORISE_SIDE), layer.data[-1])
    return np.asarray(level), base_width / level.shape[-1]


def export_layer(layer, fmt: Format, path: str | os.PathLike, mpp: float | None = None) -> str:
    """Write a Shapes or Labels layer (level-0 pixel data) as annotations."""
    if isinstance(layer, napari.layers.Shapes):
        annotation_set = to_annotations(layer.data, layer.shape_type, layer.features.to_dict("list"), mpp=mpp)
    elif isinstance(layer, napari.layers.Labels):
        labels, downsample = _labels_for_export(layer)
        if labels.ndim != 2:
            raise ValueError(f"{layer.name}: only 2D labels export as slide annotations")
        names, colors = _label_classes(layer)
        annotation_set = labels_to_annotations(labels, names, downsample=downsample, colors=colors)
        annotation_set.mpp = mpp
    else:
        raise ValueError(f"{layer.name}: export takes a Shapes or Labels layer, not {type(layer).__name__}")
    return annotation_io.write(annotation_set, path, fmt.name)


def _label_classes(layer) -> tuple[dict[int, str], dict[int, tuple[int, int, int]]]:
    """Each label's class name and colour, from the layer itself: its ``features`` (a prediction's own classes:
    a nucleus model's label 1 is "nucleus", not the Gleason table's "benign") and the colours it is drawn in.
    A layer without class names (one drawn by hand) is read as the Gleason class table."""
    classes = layer_classes(layer)
    if classes:
        return ({label: name for label, (name, _) in classes.items()},
                {label: (rgba[0], rgba[1], rgba[2]) for label, (_, rgba) in classes.items()})
    return ({k: name for k, (name, _) in CLASSES.items()}, {k: rgb for k, (_, rgb) in CLASSES.items() if rgb})


def write_annotations(layer: napari.layers.Layer, fmt: Format = Format.aperio, path: Path = Path("")) -> None:
    """Save ``layer`` to the file chosen in the save dialog, never to a guessed one."""
    chosen = str(path) not in ("", ".")
    if not chosen or path.is_dir():
        show_error("Export: choose the file to save to (save as…)")
        return
    if path.suffix.lower() not in fmt.suffixes:
        show_error(f"Export: {path.name} is not a {fmt.value} file name: save it as {' or '.join(fmt.suffixes)}")
        return
    viewer = napari.current_viewer()
    images = [candidate for candidate in viewer.layers if isinstance(candidate, napari.layers.Image)] if viewer else []
    slide = next((image for image in images if slide_mpp(image)), None)
    try:
        written = export_layer(layer, fmt, path, mpp=slide_mpp(slide))
    except (ValueError, OSError, CancersegError) as error:  # napari stays up; the message names the file
        show_error(f"Export to {path}: {error}")
        return
    show_info(f"saved {layer.name} to {written}")


#: The two docks (napari.yaml's commands): their contents scroll, as every dock's do.
import_annotations = scrollable_factory(
    read_annotations, call_button="Import",
    param_options={"path": {"label": "annotation file", "filter": "*.xml *.json *.geojson"},
                   "slide": {"label": "onto slide"}})
export_annotations = scrollable_factory(
    write_annotations, call_button="Export",
    param_options={"layer": {"label": "Shapes or Labels layer"}, "fmt": {"label": "format"},
                   "path": {"label": "save as", "mode": "w", "filter": "*.xml *.geojson"}})
