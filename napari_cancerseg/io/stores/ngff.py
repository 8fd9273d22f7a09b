"""OME-Zarr (NGFF 0.4) multiscale stores: label images written chunk by chunk, and read back lazily.

A store is the contract between the headless core and the viewer (DESIGN.md):
predictions, rasterised annotations and corrected labels are all written here
with their physical scale, so any NGFF reader overlays them on their image.
NGFF 0.4 (zarr format 2) is chosen over 0.5 because more viewers read it today.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

from ...classes import CLASSES, rgba_255
from ...errors import ReadError, WriteError
from .. import LayerData
from .attributes import (
    Level,
    StoreAttributes,
    array_header,
    describe_os_error,
    level_folder,
    parse_properties,
    raw_attributes,
    read_attributes,
    write_attributes,
)
from .chunks import ChunkFiles
from .output import building

NGFF_VERSION = "0.4"
#: Label pyramids stop once the smallest level fits in this many pixels.
PYRAMID_TOP = 512
LABEL_CHUNK = 512
#: napari units -> NGFF (UDUNITS-2) unit names
_NGFF_UNITS = {"um": "micrometer", "µm": "micrometer", "micrometre": "micrometer", "mm": "millimeter",
               "millimetre": "millimeter", "pixel": None}
_NAPARI_UNITS = {"micrometer": "um", "millimeter": "mm", "nanometer": "nm"}


def claims(path: str) -> bool:
    """A directory that is a zarr group with NGFF multiscales metadata."""
    return os.path.isdir(path) and _multiscales(path) is not None


def _multiscales(path: str) -> dict | None:
    attrs = raw_attributes(path)
    return attrs if attrs is not None and attrs.get("multiscales") else None


def label_pyramid(labels, top: int = PYRAMID_TOP) -> list[da.Array]:
    """Nearest-neighbour (stride 2) levels over the last two axes: label values are never mixed."""
    level = labels if isinstance(labels, da.Array) else da.from_array(np.asarray(labels), chunks=LABEL_CHUNK)
    levels = [level]
    while max(level.shape[-2:]) > top:
        level = level[..., ::2, ::2]
        levels.append(level)
    return levels


def write_labels(
    path: str | os.PathLike,
    levels: Sequence[Any],
    scale: Sequence[float],
    units: Sequence[str | None],
    name: str = "labels",
    translate: Sequence[float] | None = None,
    colors: Mapping[int, Sequence[int]] | None = None,
    properties: dict[str, Any] | None = None,
    axes: Sequence[str] | None = None,
    overwrite: bool = False,
) -> str:
    """Write a multiscale label image (level 0 first) as an NGFF 0.4 store, chunk by chunk.

    ``scale`` and ``translate`` are level 0's, in ``units`` along each axis;
    the scale of every other level follows from its shape.  ``properties`` go
    to the ``cancerseg`` attribute (model, slide, grid... for predictions).
    The store is built beside ``path`` and renamed into place when whole; an
    existing path is refused unless it is our own store and ``overwrite`` is set.
    """
    path = os.fspath(path)
    levels = [lvl if isinstance(lvl, da.Array) else da.from_array(np.asarray(lvl), chunks=LABEL_CHUNK)
              for lvl in levels]
    if not np.issubdtype(levels[0].dtype, np.integer):
        raise WriteError(path, f"labels must be integers, not {levels[0].dtype}")
    if len(scale) != levels[0].ndim:
        raise WriteError(path, f"scale has {len(scale)} values for {levels[0].ndim} axes")
    if not all(isinstance(s, (int, float, np.number)) and np.isfinite(s) and s > 0 for s in scale):
        raise WriteError(path, f"scale {tuple(scale)} must be finite, positive numbers")
    with building(path, overwrite, "label store") as temporary:
        try:
            root = zarr.open_group(temporary, mode="w", zarr_format=2)
            for index, level in enumerate(levels):
                chunks = tuple(min(LABEL_CHUNK, s) if i >= level.ndim - 2 else 1 for i, s in enumerate(level.shape))
                array = create_array(root, str(index), level.shape, chunks, level.dtype)
                da.store(level.rechunk(chunks), array, lock=False)
        except OSError as err:
            raise WriteError(path, f"cannot write the store: {describe_os_error(err)}") from None
        set_label_metadata(root, [lvl.shape for lvl in levels], [str(i) for i in range(len(levels))], scale, units,
                           name, translate, colors, properties, axes)
    return path


def create_array(group, name: str, shape, chunks, dtype, overwrite: bool = False):
    """A zarr (format 2) array with '/'-separated chunk keys, as NGFF 0.4 readers expect."""
    return group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0, overwrite=overwrite,
                              chunk_key_encoding={"name": "v2", "separator": "/"})


def set_label_metadata(root, shapes: Sequence[Sequence[int]], paths: Sequence[str], scale: Sequence[float],
                       units: Sequence[str | None], name: str = "labels", translate: Sequence[float] | None = None,
                       colors: Mapping[int, Sequence[int]] | None = None, properties: dict[str, Any] | None = None,
                       axes: Sequence[str] | None = None, kind: str = "labels") -> StoreAttributes:
    """NGFF 0.4 multiscales + image-label attributes for levels of the given shapes (level 0 first), written to
    the store of the zarr group ``root`` (through ``write_attributes``, the one writer)."""
    path = group_path(root)
    ndim = len(shapes[0])
    axes = list(axes) if axes else ["t", "z", "y", "x"][-ndim:] if ndim <= 4 else [f"d{i}" for i in range(ndim)]
    translate = [float(t) for t in translate] if translate is not None else [0.0] * ndim
    levels = []
    for level_path, shape in zip(paths, shapes):
        factors = [b / s for b, s in zip(shapes[0], shape)]
        # stride subsampling keeps base pixel f*i at level pixel i: no centre shift, the same translation
        try:  # the arrays as written (their chunks and dtype); metadata may also be written ahead of its arrays
            _, chunks, dtype = array_header(path, level_path)
        except ReadError:
            chunks, dtype = tuple(int(v) for v in shape), "|u1"
        levels.append(Level(level_path, tuple(int(v) for v in shape), chunks, dtype,
                            tuple(float(s * f) for s, f in zip(scale, factors)), tuple(translate)))
    axes_meta = []
    for axis, unit in zip(axes, units):
        entry: dict[str, Any] = {"name": axis,
                                 "type": "space" if axis in "zyx" else "time" if axis == "t" else "channel"}
        ngff_unit = _NGFF_UNITS.get(unit, unit) if unit else None
        if ngff_unit and entry["type"] == "space":
            entry["unit"] = ngff_unit
        axes_meta.append(entry)
    attributes = StoreAttributes(name, axes_meta, levels,
                                 {int(k): tuple(int(c) for c in rgba) for k, rgba in (colors or {}).items()},
                                 True, kind)
    if properties:
        try:
            attributes = parse_properties(path, attributes, dict(properties))
        except ReadError as err:
            raise WriteError(path, err.problem) from None
    write_attributes(path, attributes)
    return attributes


def group_path(root) -> str:
    """The folder of a local zarr group."""
    return os.path.join(str(root.store.root), root.path) if root.path else str(root.store.root)


def open_store(path: str | os.PathLike) -> tuple[list[da.Array], dict[str, Any]]:
    """The levels of an NGFF multiscale image (lazy) and its attributes, validated (``read_attributes``)."""
    path = os.fspath(path)
    attributes = read_attributes(path)
    levels = [lazy_level(path, level.path) for level in attributes.levels]
    return levels, raw_attributes(path) or {}


def lazy_level(store: str, relative: str, name: str | None = None) -> da.Array:
    """One array of a store as a lazy dask array whose reads name the store, array and chunk when one is corrupt.

    ``name``: the dask name (a fresh one makes napari's chunk cache forget what it read before).
    """
    folder = level_folder(store, relative)
    try:
        array = zarr.open_array(folder, mode="r")
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ReadError(store, f"broken OME-Zarr store: array {relative!r}: {type(err).__name__}: {err}") from None
    try:
        files = ChunkFiles(array)
    except WriteError:  # not a local zarr v2 array without filters: zarr reads it
        return da.from_zarr(array, name=name) if name else da.from_zarr(array)
    return files.lazy(name)


def _napari_unit(unit: Any) -> str:
    """napari's name for an NGFF axis unit; "pixel" where the axis names none."""
    return _NAPARI_UNITS.get(unit, unit) if unit else "pixel"


def level0_geometry(attrs: dict[str, Any], ndim: int) -> tuple[list[float], list[float], tuple[str, ...]]:
    """(scale, translate, napari units) of level 0 of a store's NGFF multiscales metadata."""
    multiscale = attrs["multiscales"][0]
    transforms = multiscale["datasets"][0].get("coordinateTransformations", [])
    scale = next((t["scale"] for t in transforms if t["type"] == "scale"), [1.0] * ndim)
    translate = next((t["translation"] for t in transforms if t["type"] == "translation"), [0.0] * ndim)
    axes = multiscale.get("axes", [])
    units = tuple(_napari_unit(a.get("unit") if isinstance(a, dict) else None) for a in axes)
    return [float(v) for v in scale], [float(v) for v in translate], units


def class_names(attributes: StoreAttributes) -> dict[int, str]:
    """Label value -> class name of a store: its own class table (predictions, corrections), else DESIGN.md's
    table when every colour the store declares is that table's (rasterised annotations, Gleason patterns).
    A store of someone else's labels gets no names rather than invented ones."""
    if attributes.classes:
        return {int(c["label"]): str(c.get("name") or f"class {c['label']}") for c in attributes.classes}
    table = rgba_255()
    if attributes.colors and all(table.get(k) == tuple(v) for k, v in attributes.colors.items()):
        return {label: name for label, (name, _) in CLASSES.items()}
    return {}


def label_features(names: Mapping[int, str]) -> dict[str, list]:
    """napari Labels ``features``: one row per label value (``index``) with its ``class``, so the status bar
    names the class under the cursor. Empty without names."""
    if not names:
        return {}
    values = sorted(set(int(v) for v in names) | {0})
    return {"index": values, "class": [names.get(v, "background" if v == 0 else f"label {v}") for v in values]}


def _stem(name: str) -> str:
    """A slide's file name without its extension(s): "CMU-1-Small-Region.svs" -> "CMU-1-Small-Region"."""
    base = os.path.basename(name.rstrip("/"))
    for suffix in (".ome.tiff", ".ome.tif", ".nii.gz"):
        if base.lower().endswith(suffix):
            return base[: -len(suffix)]
    return os.path.splitext(base)[0] or base


def layer_name(attributes: StoreAttributes, path: str) -> str:
    """What a layer of the store is: "<slide> · <model> <version>" for a prediction (its identity says both),
    else the store's own name (rasterised annotations, Gleason patterns...) or its folder's name."""
    own = attributes.name or Path(path).name
    if not attributes.is_prediction:
        return own
    slide = attributes.slide.get("name") if isinstance(attributes.slide, dict) else attributes.slide
    slide = slide if isinstance(slide, str) and slide else attributes.slide_path
    model = attributes.model
    if isinstance(model, dict) and model.get("name"):
        what = " ".join(str(model[k]) for k in ("name", "version") if model.get(k))
    else:
        what = str(model) if model else own
    return f"{_stem(slide)} · {what}" if slide else what


def read(path: str) -> list[LayerData]:
    attributes = read_attributes(path)
    levels = [lazy_level(path, level.path) for level in attributes.levels]
    attrs = raw_attributes(path) or {}
    scale, translate, units = level0_geometry(attrs, levels[0].ndim)
    is_labels = "image-label" in attrs
    from .prediction import missing_chunks

    missing = missing_chunks(path)
    name = layer_name(attributes, path)
    if missing is not None:  # never shown as if the chunks not predicted were background
        name = f"{name} (incomplete: {missing[0]} of {missing[1]} chunks missing)" if missing[1] else \
            f"{name} (incomplete)"
    kwargs: dict[str, Any] = {
        "name": name,
        "scale": tuple(scale),
        "translate": tuple(translate),
        "multiscale": len(levels) > 1,
        "metadata": {"format": "OME-Zarr", "path": path, "attributes": attrs},
    }
    if missing is not None:
        kwargs["metadata"]["incomplete"] = {"missing_chunks": missing[0], "expected_chunks": missing[1]}
    if len(units) == levels[0].ndim:
        kwargs["units"] = units
    data = levels if len(levels) > 1 else levels[0]
    if is_labels:
        colors = attrs["image-label"].get("colors")
        if colors:
            transparent = np.zeros(4)
            kwargs["colormap"] = {None: transparent, 0: transparent,
                                  **{c["label-value"]: np.asarray(c["rgba"]) / 255.0 for c in colors}}
        features = label_features(class_names(attributes))
        if features:
            kwargs["features"] = features
        return [(data, kwargs, "labels")]
    return [(data, kwargs, "image")]


def chunk_files(store: str, relative: str) -> ChunkFiles:
    """The array ``relative`` of a store, read and written as chunk files; a ReadError naming the store if it
    cannot be opened, or is not a local zarr v2 array without filters."""
    try:
        return ChunkFiles(zarr.open_array(level_folder(store, relative), mode="r"))
    except (OSError, ValueError, KeyError, TypeError, WriteError) as err:
        raise ReadError(store, f"broken store: array {relative!r}: {type(err).__name__}: {err}") from None


def viewer_levels(path: str) -> list | None:
    """Every stored level as a plain array-like napari slices without dask (chunks.StridedLevel: a window
    reads the chunk files it covers), or None when a level is not a local zarr v2 array read that way.

    Adding a layer over dask levels ran a dask compute on the GUI thread, whose first call also imports
    dask.distributed: 1.5 s of a frozen window when a prediction finished.
    """
    from .chunks import StridedLevel

    try:
        return [StridedLevel(chunk_files(path, level.path), 1) for level in read_attributes(path).levels]
    except ReadError:
        return None


def lazy_levels(path: str, token: int | str) -> list[da.Array]:
    """Every stored level of a store, lazily, under fresh dask names (napari's chunk cache then serves nothing
    stale after the store changed)."""
    attributes = read_attributes(path)
    return [lazy_level(path, level.path, name=f"{Path(path).stem}-{k}-{token}")
            for k, level in enumerate(attributes.levels)]
