"""A store's attributes as one typed, validated dataclass: read by ``read_attributes``, written by ``write_attributes``.

Everything a store says about itself (NGFF multiscales, image-label colours,
the ``cancerseg`` properties of a prediction or label store) is parsed here
when the store is opened, and every number is checked before anyone computes
with it: a store is a file a user can hand us from anywhere, so a NaN or
negative scale, a level path pointing outside the store, or an array declaring
10^7 x 10^7 pixels is refused with the store's path and the problem, instead
of giving a wrong area or hanging (issue 15, items 2, 3 and 8).

Older stores (earlier napari-cancerseg versions, other NGFF writers) parse
with defaults: fields they lack are ``None``.
"""

from __future__ import annotations

import base64
import json
import math
import os
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ...errors import ReadError, WriteError

#: marks a folder this plugin wrote (what ``--overwrite`` may replace); older stores are known by ``cancerseg``
MARK = "napari-cancerseg"
#: no slide needs more chunks than this per array (a 200k x 200k slide at 512 px has 150k); more is a bad declaration
MAX_CHUNKS = 1 << 21
#: one chunk is decoded whole into memory: refuse chunks larger than this before allocating them
MAX_CHUNK_BYTES = 1 << 28
#: keys of ``cancerseg`` that are typed fields; any other key is kept as it is in ``extra``
_TYPED = ("format", "slide", "model", "grid", "level", "downsample", "mpp", "tissue_threshold", "classes",
          "slide_path", "complete", "corrections", "expected_chunks", "glass_fraction")
_NAPARI_UNITS = {"micrometer": "um", "millimeter": "mm", "nanometer": "nm"}


@dataclass(frozen=True)
class Level:
    """One pyramid level as declared: its path inside the store, its array's shape, chunks and dtype, its scale."""

    path: str
    shape: tuple[int, ...]
    chunks: tuple[int, ...]
    dtype: str
    scale: tuple[float, ...]
    translate: tuple[float, ...]

    @property
    def grid(self) -> tuple[int, ...]:
        return tuple(-(-s // c) for s, c in zip(self.shape, self.chunks))


@dataclass
class StoreAttributes:
    """What a store says about itself, validated.  ``levels``: level 0 first."""

    name: str
    axes: list[dict[str, Any]]
    levels: list[Level]
    colors: dict[int, tuple[int, ...]] = field(default_factory=dict)
    is_labels: bool = True
    kind: str | None = None  # "prediction", "labels" (written by this plugin); None: an older or foreign store
    # -- the cancerseg properties (None: not recorded) --
    format: str | None = None
    slide: Any = None  # a prediction's slide identity {"name", "dimensions", "quickhash"}; older stores: a name
    model: dict[str, Any] | None = None
    grid: dict[str, Any] | None = None
    level: int | None = None  # the slide level predicted
    downsample: float | None = None  # store level 0 vs slide level 0
    mpp: float | None = None
    tissue_threshold: float | None = None
    classes: list[dict[str, Any]] | None = None
    slide_path: str | None = None
    complete: bool | None = None
    corrections: list[dict[str, Any]] = field(default_factory=list)
    expected_chunks: np.ndarray | None = None  # bool over the chunk grid: the chunks the run set out to predict
    glass_fraction: float | None = None  # share of the slide's chunks skipped as glass (not predicted)
    extra: dict[str, Any] = field(default_factory=dict)

    # ---- derived -------------------------------------------------------------------------------
    @property
    def ndim(self) -> int:
        return len(self.levels[0].shape)

    @property
    def scale(self) -> tuple[float, ...]:
        return self.levels[0].scale

    @property
    def translate(self) -> tuple[float, ...]:
        return self.levels[0].translate

    @property
    def units(self) -> tuple[str, ...]:
        """napari unit names per axis ("pixel" where none is given)."""
        units = tuple(_NAPARI_UNITS.get(str(a.get("unit")), str(a.get("unit") or "pixel")) for a in self.axes)
        return units if len(units) == self.ndim else ("pixel",) * self.ndim

    @property
    def scale_downsample(self) -> float:
        return self.downsample if self.downsample is not None else 1.0

    @property
    def is_prediction(self) -> bool:
        return bool(self.format and self.format.startswith("napari-cancerseg prediction"))

    @property
    def properties(self) -> dict[str, Any]:
        """The ``cancerseg`` attribute as written: typed fields that are set, then the rest as found."""
        out: dict[str, Any] = {}
        for key in _TYPED:
            value = getattr(self, key)
            if key == "corrections" and not value:
                continue
            if value is None:
                continue
            if key == "expected_chunks":
                value = _pack(value)
            out[key] = value
        return {**out, **self.extra}

    def with_properties(self, **changes: Any) -> StoreAttributes:
        return replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        """The store's ``.zattrs``: NGFF 0.4 multiscales and image-label, the mark, and ``cancerseg``."""
        from .ngff import NGFF_VERSION

        datasets = [{"path": lvl.path, "coordinateTransformations": [
            {"type": "scale", "scale": [float(s) for s in lvl.scale]},
            {"type": "translation", "translation": [float(t) for t in lvl.translate]}]} for lvl in self.levels]
        attrs: dict[str, Any] = {
            "multiscales": [{"version": NGFF_VERSION, "name": self.name, "axes": self.axes, "datasets": datasets}]}
        if self.is_labels:
            label_meta: dict[str, Any] = {"version": NGFF_VERSION}
            if self.colors:
                label_meta["colors"] = [{"label-value": int(k), "rgba": [int(c) for c in rgba]}
                                        for k, rgba in sorted(self.colors.items())]
            attrs["image-label"] = label_meta
        if self.kind:
            attrs[MARK] = {"kind": self.kind, "version": 2}
        properties = self.properties
        if properties:
            attrs["cancerseg"] = properties
        return attrs


# ---- reading -------------------------------------------------------------------------------------

def _load_json(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)  # NaN and Infinity parse as floats: the checks below refuse them


def raw_attributes(path: str) -> dict[str, Any] | None:
    """The store's attribute JSON (zarr v2 ``.zattrs`` or v3 ``zarr.json``).

    None where there is none or it is not JSON.
    """
    for meta_file in (".zattrs", "zarr.json"):
        meta_path = os.path.join(path, meta_file)
        if os.path.isfile(meta_path):
            try:
                attrs = _load_json(meta_path)
            except (OSError, ValueError, UnicodeDecodeError):
                return None
            if not isinstance(attrs, dict):
                return None
            attrs = attrs.get("attributes", attrs)  # zarr v3 nests user attributes
            attrs = attrs.get("ome", attrs) if isinstance(attrs.get("ome"), dict) else attrs  # NGFF 0.5
            return attrs if isinstance(attrs, dict) else None
    return None


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def level_folder(store: str, relative: Any) -> str:
    """The folder of a level path, which must be relative and stay inside the store (issue 15, item 8)."""
    if not isinstance(relative, str) or not relative or "\x00" in relative or "\\" in relative:
        raise ReadError(store, f"level path {relative!r} is not a relative path inside the store")
    parts = relative.split("/")
    if os.path.isabs(relative) or relative.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ReadError(store, f"level path {relative!r} points outside the store: only paths inside it are read")
    folder = os.path.join(store, *parts)
    root = os.path.realpath(store)
    if os.path.commonpath([root, os.path.realpath(folder)]) != root:  # a symbolic link out of the store
        raise ReadError(store, f"level path {relative!r} leads outside the store (a link): refused")
    return folder


def array_header(store: str, relative: str) -> tuple[tuple[int, ...], tuple[int, ...], str]:
    """(shape, chunks, dtype) an array declares, checked to be sizes a slide can have before anything is allocated."""
    folder = level_folder(store, relative)
    try:
        if os.path.isfile(os.path.join(folder, ".zarray")):
            meta = _load_json(os.path.join(folder, ".zarray"))
            shape, chunks, dtype = meta["shape"], meta["chunks"], meta["dtype"]
        elif os.path.isfile(os.path.join(folder, "zarr.json")):
            meta = _load_json(os.path.join(folder, "zarr.json"))
            shape, dtype = meta["shape"], meta["data_type"]
            chunks = meta["chunk_grid"]["configuration"]["chunk_shape"]
        else:
            raise ReadError(store, f"level {relative!r} has no zarr array (no .zarray or zarr.json)")
        if not isinstance(dtype, str):
            raise TypeError("dtype is not a string")
        np.dtype(dtype)
    except ReadError:
        raise
    except (OSError, ValueError, KeyError, TypeError, UnicodeDecodeError) as err:
        raise ReadError(store, f"array {relative!r}: unreadable metadata ({type(err).__name__}: {err})") from None
    if not (isinstance(shape, list) and isinstance(chunks, list) and len(shape) == len(chunks) and shape
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
            and all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in chunks)):
        raise ReadError(store, f"array {relative!r}: shape {shape} and chunks {chunks} are not sizes of an array")
    n_chunks = math.prod(-(-s // c) for s, c in zip(shape, chunks))
    chunk_bytes = math.prod(chunks) * np.dtype(dtype).itemsize
    if n_chunks > MAX_CHUNKS or chunk_bytes > MAX_CHUNK_BYTES:
        raise ReadError(store, f"array {relative!r} declares {' x '.join(map(str, shape))} pixels in "
                               f"{n_chunks:,} chunks of {chunk_bytes:,} bytes: larger than any slide; refused")
    return tuple(shape), tuple(chunks), dtype


def _unpack(store: str, value: Any) -> np.ndarray:
    try:
        shape = tuple(int(v) for v in value["shape"])
        bits = np.unpackbits(np.frombuffer(base64.b64decode(value["bits"], validate=True), np.uint8))
        if len(shape) != 2 or min(shape) < 0 or bits.size < shape[0] * shape[1]:
            raise ValueError(f"{bits.size} bits for a grid of {shape}")
        return bits[:shape[0] * shape[1]].reshape(shape).astype(bool)
    except (KeyError, TypeError, ValueError) as err:
        raise ReadError(store, f"the list of expected chunks is damaged ({err})") from None


def _pack(grid: np.ndarray) -> dict[str, Any]:
    grid = np.asarray(grid, bool)
    return {"shape": list(grid.shape), "bits": base64.b64encode(np.packbits(grid.ravel()).tobytes()).decode("ascii")}


def read_attributes(path: str | os.PathLike) -> StoreAttributes:
    """The one reader: parse and validate a store's attributes and its levels' declared arrays."""
    store = os.fspath(path)
    attrs = raw_attributes(store)
    if attrs is None:
        raise ReadError(store, "not an OME-Zarr store: no readable multiscales metadata")
    multiscales = attrs.get("multiscales")
    if not (isinstance(multiscales, list) and multiscales and isinstance(multiscales[0], dict)):
        raise ReadError(store, "not an OME-Zarr store: no multiscales metadata")
    multiscale = multiscales[0]
    datasets = multiscale.get("datasets")
    if not (isinstance(datasets, list) and datasets and all(isinstance(d, dict) for d in datasets)):
        raise ReadError(store, "the multiscales metadata lists no datasets (levels)")
    axes = multiscale.get("axes") or []
    axes = [a if isinstance(a, dict) else {"name": str(a)} for a in axes] if isinstance(axes, list) else []
    levels: list[Level] = []
    for index, dataset in enumerate(datasets):
        shape, chunks, dtype = array_header(store, dataset.get("path"))
        ndim = len(shape)
        transforms = dataset.get("coordinateTransformations") or []
        transforms = transforms if isinstance(transforms, list) else []
        scale = next((t.get("scale") for t in transforms if isinstance(t, dict) and t.get("type") == "scale"),
                     [1.0] * ndim)
        translate = next((t.get("translation") for t in transforms
                          if isinstance(t, dict) and t.get("type") == "translation"), [0.0] * ndim)
        if not (isinstance(scale, list) and len(scale) == ndim and all(_finite(s) and s > 0 for s in scale)):
            raise ReadError(store, f"level {index} has scale {scale}: a scale must be {ndim} finite, positive numbers")
        if not (isinstance(translate, list) and len(translate) == ndim and all(_finite(t) for t in translate)):
            raise ReadError(store, f"level {index} has translation {translate}: it must be {ndim} finite numbers")
        if levels and ndim != len(levels[0].shape):
            raise ReadError(store, f"level {index} has {ndim} dimensions, level 0 has {len(levels[0].shape)}")
        if levels and any(s > p for s, p in zip(shape, levels[-1].shape)):
            raise ReadError(store, f"level {index} ({shape}) is larger than the level below it ({levels[-1].shape})")
        levels.append(Level(dataset["path"], shape, chunks, dtype, tuple(float(s) for s in scale),
                            tuple(float(t) for t in translate)))
    label_meta = attrs.get("image-label")
    colors: dict[int, tuple[int, ...]] = {}
    if isinstance(label_meta, dict):
        for entry in label_meta.get("colors") or []:
            try:
                value, rgba = int(entry["label-value"]), tuple(int(c) for c in entry["rgba"])
            except (KeyError, TypeError, ValueError):
                raise ReadError(store, f"image-label colour {entry!r} is not a label value and RGBA") from None
            if len(rgba) != 4 or not all(0 <= c <= 255 for c in rgba):
                raise ReadError(store, f"image-label colour of {value} is {list(rgba)}, not 4 values from 0 to 255")
            colors[value] = rgba
    mark = attrs.get(MARK)
    kind = str(mark.get("kind")) if isinstance(mark, dict) and mark.get("kind") else None
    result = StoreAttributes(str(multiscale.get("name") or ""), axes, levels, colors, isinstance(label_meta, dict),
                             kind)
    props = attrs.get("cancerseg")
    if props is None:
        return result
    if not isinstance(props, dict):
        raise ReadError(store, "its cancerseg attributes are not a mapping")
    return parse_properties(store, result, props)


def parse_properties(store: str, result: StoreAttributes, props: dict[str, Any]) -> StoreAttributes:
    def bad(key: str, why: str) -> ReadError:
        return ReadError(store, f"attribute {key} = {props.get(key)!r}: {why}")

    typed: dict[str, Any] = {}
    for key in ("downsample", "mpp"):
        value = props.get(key)
        if value is not None:
            if not (_finite(value) and value > 0):
                raise bad(key, "must be a finite, positive number")
            typed[key] = float(value)
    threshold = props.get("tissue_threshold")
    if threshold is not None:
        if not (_finite(threshold) and 0 <= threshold <= 1):
            raise bad("tissue_threshold", "must be a fraction from 0 to 1")
        typed["tissue_threshold"] = float(threshold)
    glass = props.get("glass_fraction")
    if glass is not None:
        if not (_finite(glass) and 0 <= glass <= 1):
            raise bad("glass_fraction", "must be a fraction from 0 to 1")
        typed["glass_fraction"] = float(glass)
    level = props.get("level")
    if level is not None:
        if not (isinstance(level, int) and not isinstance(level, bool) and level >= 0):
            raise bad("level", "must be a slide level, 0 or more")
        typed["level"] = level
    for key in ("format", "slide_path"):
        if props.get(key) is not None:
            if not isinstance(props[key], str):
                raise bad(key, "must be text")
            typed[key] = props[key]
    if props.get("complete") is not None:
        if not isinstance(props["complete"], bool):
            raise bad("complete", "must be true or false")
        typed["complete"] = props["complete"]
    for key in ("model", "grid"):
        if props.get(key) is not None:
            if not isinstance(props[key], dict):
                raise bad(key, "must be a mapping")
            typed[key] = dict(props[key])
    if props.get("slide") is not None:
        typed["slide"] = props["slide"]
    classes = props.get("classes")
    if classes is not None:
        ok = isinstance(classes, list) and all(
            isinstance(c, dict) and isinstance(c.get("label"), int) and not isinstance(c.get("label"), bool)
            and 0 <= c["label"] <= 65535 and isinstance(c.get("name"), str) for c in classes)
        if not ok or len({c["label"] for c in classes}) != len(classes):
            raise bad("classes", "must be a list of distinct {label: 0..65535, name: text}")
        typed["classes"] = [dict(c) for c in classes]
    corrections = props.get("corrections")
    if corrections is not None:
        if not (isinstance(corrections, list) and all(isinstance(c, dict) for c in corrections)):
            raise bad("corrections", "must be a list of corrections")
        for c in corrections:
            box = c.get("box")
            if not (isinstance(box, list) and len(box) == 4 and all(_finite(v) for v in box)):
                raise ReadError(store, f"a correction's box {box!r} is not 4 finite numbers")
        typed["corrections"] = [dict(c) for c in corrections]
    if props.get("expected_chunks") is not None:
        typed["expected_chunks"] = _unpack(store, props["expected_chunks"])
    parsed = replace(result, **typed, extra={k: v for k, v in props.items() if k not in _TYPED})
    _check_prediction(store, parsed)
    return parsed


def _check_prediction(store: str, attrs: StoreAttributes) -> None:
    """A prediction's level 0 is its tile grid's size, and its expected chunks cover that grid."""
    if not attrs.is_prediction:
        return
    grid = attrs.grid or {}
    shape = attrs.levels[0].shape
    declared = (grid.get("height"), grid.get("width"))
    if all(isinstance(v, int) for v in declared) and tuple(shape[-2:]) != declared:
        raise ReadError(store, f"level 0 is {shape}, but its tile grid covers {declared[0]} x {declared[1]} pixels")
    if attrs.expected_chunks is not None:
        chunks = attrs.levels[0].grid[-2:]
        if attrs.expected_chunks.shape != tuple(chunks):
            raise ReadError(store, f"its expected chunks cover a {attrs.expected_chunks.shape} grid, level 0 has "
                                   f"{tuple(chunks)} chunks")


# ---- writing -------------------------------------------------------------------------------------

def write_attributes(path: str | os.PathLike, attributes: StoreAttributes) -> None:
    """The one writer: replace the store's ``.zattrs`` atomically (a crash leaves the old attributes)."""
    store = os.fspath(path)
    text = json.dumps(attributes.to_json(), indent=2, allow_nan=False)
    target = os.path.join(store, ".zattrs")
    temporary = f"{target}.{os.getpid()}.partial"
    try:
        with open(temporary, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.replace(temporary, target)
    except OSError as err:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise WriteError(store, f"cannot write the store's attributes: {describe_os_error(err)}") from None


def describe_os_error(err: OSError) -> str:
    import errno

    if err.errno == errno.ENOSPC:
        return "the disk is full; free some space and run again (what was written is kept)"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"not allowed to write there ({err.strerror})"
    return err.strerror or str(err)
