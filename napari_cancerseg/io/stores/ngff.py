"""OME-Zarr (NGFF 0.4) multiscale stores: label images written chunk by chunk, and read back lazily.

A store is the contract between the headless core and the viewer (DESIGN.md):
predictions, rasterised annotations and corrected labels are all written here
with their physical scale, so any NGFF reader overlays them on their image.
NGFF 0.4 (zarr format 2) is chosen over 0.5 because more viewers read it today.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Sequence

import dask.array as da
import numpy as np
import zarr

from ...errors import ReadError, WriteError
from .. import LayerData

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
    for meta_file in (".zattrs", "zarr.json"):
        meta_path = os.path.join(path, meta_file)
        if os.path.isfile(meta_path):
            try:
                with open(meta_path) as fh:
                    attrs = json.load(fh)
            except (OSError, ValueError):
                return None
            attrs = attrs.get("attributes", attrs)  # zarr v3 nests user attributes
            attrs = attrs.get("ome", attrs)  # NGFF 0.5 nests under "ome"
            multiscales = attrs.get("multiscales")
            return attrs if multiscales else None
    return None


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
    colors: dict[int, Sequence[int]] | None = None,
    properties: dict[str, Any] | None = None,
    axes: Sequence[str] | None = None,
) -> str:
    """Write a multiscale label image (level 0 first) as an NGFF 0.4 store, chunk by chunk.

    ``scale`` and ``translate`` are level 0's, in ``units`` along each axis;
    the scale of every other level follows from its shape.  ``properties`` go
    to the ``cancerseg`` attribute (model, slide, grid... for predictions).
    """
    path = os.fspath(path)
    levels = [lvl if isinstance(lvl, da.Array) else da.from_array(np.asarray(lvl), chunks=LABEL_CHUNK) for lvl in levels]
    if not np.issubdtype(levels[0].dtype, np.integer):
        raise WriteError(path, f"labels must be integers, not {levels[0].dtype}")
    if len(scale) != levels[0].ndim:
        raise WriteError(path, f"scale has {len(scale)} values for {levels[0].ndim} axes")
    try:
        root = zarr.open_group(path, mode="w", zarr_format=2)
    except (OSError, ValueError) as err:
        raise WriteError(path, f"cannot create the zarr store: {err}") from None
    for index, level in enumerate(levels):
        chunks = tuple(min(LABEL_CHUNK, s) if i >= level.ndim - 2 else 1 for i, s in enumerate(level.shape))
        array = create_array(root, str(index), level.shape, chunks, level.dtype)
        da.store(level.rechunk(chunks), array, lock=False)
    set_label_metadata(root, [lvl.shape for lvl in levels], [str(i) for i in range(len(levels))], scale, units,
                       name, translate, colors, properties, axes)
    return path


def create_array(group, name: str, shape, chunks, dtype, overwrite: bool = False):
    """A zarr (format 2) array with '/'-separated chunk keys, as NGFF 0.4 readers expect."""
    return group.create_array(name, shape=shape, chunks=chunks, dtype=dtype, fill_value=0, overwrite=overwrite,
                              chunk_key_encoding={"name": "v2", "separator": "/"})


def set_label_metadata(root, shapes: Sequence[Sequence[int]], paths: Sequence[str], scale: Sequence[float],
                       units: Sequence[str | None], name: str = "labels", translate: Sequence[float] | None = None,
                       colors: dict[int, Sequence[int]] | None = None, properties: dict[str, Any] | None = None,
                       axes: Sequence[str] | None = None) -> None:
    """NGFF 0.4 multiscales + image-label attributes for levels of the given shapes (level 0 first)."""
    ndim = len(shapes[0])
    axes = list(axes) if axes else ["t", "z", "y", "x"][-ndim:] if ndim <= 4 else [f"d{i}" for i in range(ndim)]
    translate = [float(t) for t in translate] if translate is not None else [0.0] * ndim
    datasets = []
    for path, shape in zip(paths, shapes):
        factors = [b / s for b, s in zip(shapes[0], shape)]
        datasets.append({"path": path, "coordinateTransformations": [
            {"type": "scale", "scale": [float(s * f) for s, f in zip(scale, factors)]},
            # stride subsampling keeps base pixel f*i at level pixel i: no centre shift
            {"type": "translation", "translation": translate},
        ]})
    axes_meta = []
    for axis, unit in zip(axes, units):
        entry: dict[str, Any] = {"name": axis, "type": "space" if axis in "zyx" else "time" if axis == "t" else "channel"}
        ngff_unit = _NGFF_UNITS.get(unit, unit) if unit else None
        if ngff_unit and entry["type"] == "space":
            entry["unit"] = ngff_unit
        axes_meta.append(entry)
    root.attrs["multiscales"] = [{"version": NGFF_VERSION, "name": name, "axes": axes_meta, "datasets": datasets}]
    label_meta: dict[str, Any] = {"version": NGFF_VERSION}
    if colors:
        label_meta["colors"] = [{"label-value": int(k), "rgba": [int(c) for c in rgba]} for k, rgba in sorted(colors.items())]
    root.attrs["image-label"] = label_meta
    if properties:
        root.attrs["cancerseg"] = properties


def open_store(path: str | os.PathLike) -> tuple[list[da.Array], dict[str, Any]]:
    """The levels of an NGFF multiscale image (lazy) and its attributes."""
    path = os.fspath(path)
    attrs = _multiscales(path)
    if attrs is None:
        raise ReadError(path, "not an OME-Zarr store: no multiscales metadata")
    multiscale = attrs["multiscales"][0]
    try:
        levels = [da.from_zarr(zarr.open_array(os.path.join(path, d["path"]), mode="r")) for d in multiscale["datasets"]]
    except (OSError, ValueError, KeyError) as err:
        raise ReadError(path, f"broken OME-Zarr store: {type(err).__name__}: {err}") from None
    return levels, attrs


def level0_geometry(attrs: dict[str, Any], ndim: int) -> tuple[list[float], list[float], tuple[str, ...]]:
    """(scale, translate, napari units) of level 0 of a store's NGFF multiscales metadata."""
    multiscale = attrs["multiscales"][0]
    transforms = multiscale["datasets"][0].get("coordinateTransformations", [])
    scale = next((t["scale"] for t in transforms if t["type"] == "scale"), [1.0] * ndim)
    translate = next((t["translation"] for t in transforms if t["type"] == "translation"), [0.0] * ndim)
    axes = multiscale.get("axes", [])
    units = tuple(_NAPARI_UNITS.get(a.get("unit"), a.get("unit") or "pixel") if isinstance(a, dict) else "pixel"
                  for a in axes)
    return [float(v) for v in scale], [float(v) for v in translate], units


def read(path: str) -> list[LayerData]:
    levels, attrs = open_store(path)
    multiscale = attrs["multiscales"][0]
    scale, translate, units = level0_geometry(attrs, levels[0].ndim)
    is_labels = "image-label" in attrs
    kwargs: dict[str, Any] = {
        "name": multiscale.get("name") or Path(path).name,
        "scale": tuple(scale),
        "translate": tuple(translate),
        "multiscale": len(levels) > 1,
        "metadata": {"format": "OME-Zarr", "path": path, "attributes": attrs},
    }
    if len(units) == levels[0].ndim:
        kwargs["units"] = units
    data = levels if len(levels) > 1 else levels[0]
    if is_labels:
        colors = attrs["image-label"].get("colors")
        if colors:
            transparent = np.zeros(4)
            kwargs["colormap"] = {None: transparent, 0: transparent,
                                  **{c["label-value"]: np.asarray(c["rgba"]) / 255.0 for c in colors}}
        return [(data, kwargs, "labels")]
    return [(data, kwargs, "image")]
