"""OME-Zarr (NGFF 0.4) multiscale stores: label images written chunk by chunk, and read back lazily.

A store is the contract between the headless core and the viewer (DESIGN.md):
predictions, rasterised annotations and corrected labels are all written here
with their physical scale, so any NGFF reader overlays them on their image.
NGFF 0.4 (zarr format 2) is chosen over 0.5 because more viewers read it today.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Sequence

import dask.array as da
import numpy as np
import zarr

from ..errors import ReadError, WriteError
from . import LayerData

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


class ChunkFiles:
    """Whole chunks of a local zarr (format 2) array, written and read straight from their files.

    zarr 3 spends about 1 ms of Python on every write, holding the GIL: a
    process then writes a few hundred chunks per second however many cores it
    has, and the tiled engine writes two or three arrays per tile.  Here a
    chunk costs its compression (the array's own codec) and one atomic file
    write, both outside the GIL.  The files are exactly what zarr writes:
    zarr reads them back, and tests compare the two byte for byte.
    """

    def __init__(self, array: zarr.Array):
        meta = array.metadata
        store = array.store_path.store
        if getattr(meta, "zarr_format", None) != 2 or meta.filters or meta.order != "C" or not hasattr(store, "root"):
            raise WriteError(str(array.store_path), "direct chunk writes need a local zarr v2 array without filters")
        self.array = array
        self.chunks, self.shape = tuple(meta.chunks), tuple(meta.shape)
        self.dtype = np.dtype(array.dtype)
        self.fill = meta.fill_value
        self.compressor = meta.compressor
        self.separator = meta.dimension_separator
        self.folder = os.path.join(str(store.root), array.store_path.path)
        self._made: set[str] = set()

    def box(self, index: Sequence[int]) -> tuple[slice, ...]:
        """The array region that chunk ``index`` covers (clipped at the array's edge)."""
        return tuple(slice(i * c, min((i + 1) * c, s)) for i, c, s in zip(index, self.chunks, self.shape))

    def path(self, index: Sequence[int]) -> str:
        return os.path.join(self.folder, *(self.separator.join(map(str, index)).split("/")))

    def write(self, index: Sequence[int], data: np.ndarray) -> None:
        """Replace chunk ``index`` by ``data``, the chunk's region of the array (smaller at the edges)."""
        expected = tuple(b.stop - b.start for b in self.box(index))
        if data.shape != expected:
            raise ValueError(f"chunk {tuple(index)} covers {expected}, not {data.shape}")
        block = np.asarray(data, dtype=self.dtype)
        if expected != self.chunks:  # edge chunks are stored whole, padded with the fill value
            block = np.full(self.chunks, self.fill, self.dtype)
            block[tuple(slice(0, e) for e in expected)] = data
        raw = np.ascontiguousarray(block)
        encoded = self.compressor.encode(raw) if self.compressor is not None else raw.tobytes()
        path = self.path(index)
        folder = os.path.dirname(path)
        if folder not in self._made:
            os.makedirs(folder, exist_ok=True)
            self._made.add(folder)
        temporary = f"{path}.{os.getpid()}-{threading.get_ident()}.partial"  # readers never see half a chunk
        with open(temporary, "wb") as fh:
            fh.write(encoded)
        os.replace(temporary, path)

    def read(self, index: Sequence[int]) -> np.ndarray:
        """Chunk ``index`` (clipped at the array's edge); the fill value where it was never written."""
        expected = tuple(b.stop - b.start for b in self.box(index))
        try:
            with open(self.path(index), "rb") as fh:
                encoded = fh.read()
        except FileNotFoundError:
            return np.full(expected, self.fill, self.dtype)
        raw = self.compressor.decode(encoded) if self.compressor is not None else encoded
        block = np.frombuffer(raw, self.dtype).reshape(self.chunks)
        return block[tuple(slice(0, e) for e in expected)]

    def written(self) -> np.ndarray:
        """True for every chunk (over the chunk grid) whose file exists: what a run has written so far."""
        grid = tuple(-(-s // c) for s, c in zip(self.shape, self.chunks))
        out = np.zeros(grid, bool)
        for folder, _, names in os.walk(self.folder):
            relative = os.path.relpath(folder, self.folder)
            prefix = "" if relative == "." else relative.replace(os.sep, "/") + "/"
            for name in names:
                if name.startswith(".") or name.endswith(".partial"):  # metadata, chunks being written
                    continue
                key = prefix + name
                try:
                    index = tuple(int(i) for i in (key.split("/") if self.separator == "/" else key.split(".")))
                except ValueError:
                    continue
                if len(index) == len(grid) and all(0 <= i < n for i, n in zip(index, grid)):
                    out[index] = True
        return out

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Rows [start, stop) of a 2-D array, every column."""
        height, width = self.chunks
        stop = min(stop, self.shape[0])
        out = np.empty((stop - start, self.shape[1]), self.dtype)
        for row in range(start // height, -(-stop // height)):
            top, bottom = max(start, row * height), min(stop, (row + 1) * height)
            for col in range(-(-self.shape[1] // width)):
                block = self.read((row, col))
                out[top - start:bottom - start, col * width:col * width + block.shape[1]] = \
                    block[top - row * height:bottom - row * height]
        return out

    def write_rows(self, start: int, rows: np.ndarray) -> None:
        """Replace rows [start, start + len(rows)) of a 2-D array: whole chunk rows (the last may be clipped)."""
        height, width = self.chunks
        if start % height or (len(rows) % height and start + len(rows) != self.shape[0]):
            raise ValueError(f"rows {start}..{start + len(rows)} are not whole chunk rows of {height}")
        for y in range(0, len(rows), height):
            for col in range(-(-self.shape[1] // width)):
                self.write(((start + y) // height, col), rows[y:y + height, col * width:(col + 1) * width])


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
