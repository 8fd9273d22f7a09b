"""``open_layers(path)``: the one public way to read any file this package reads, napari-free.

Each backend is a module with ``claims(path) -> bool`` and ``read(path) -> list[LayerData]``
(``Backend``); the first backend that claims a path reads it.  napari's reader
(``_reader.py``), the CLI and the core all go through here.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np

from ..errors import CancersegError
from . import IMAGE_SUFFIXES, LayerData, annotation_files, dicom, nifti, stores, wsi


class Backend(Protocol):
    """What every reader module in ``io/`` provides."""

    def claims(self, path: str) -> bool: ...

    def read(self, path: str) -> list[LayerData]: ...


#: Order matters only for folders: an OME-Zarr store is a folder, not a DICOM series.
BACKENDS: tuple[Backend, ...] = (stores, wsi, nifti, dicom, annotation_files)


def backend_for(path: str) -> Backend | None:
    """The io module that reads ``path``, or None."""
    return next((backend for backend in BACKENDS if backend.claims(path)), None)


def layer_reader(path: str | os.PathLike | Sequence[str | os.PathLike]) -> Callable[[], list[LayerData]] | None:
    """A function reading ``path`` (or several files of one kind) into layer data, or None if no backend claims it."""
    paths = [os.fspath(p) for p in path] if isinstance(path, (list, tuple)) else [os.fspath(path)]  # type: ignore[arg-type]
    backends = {backend_for(p) for p in paths}
    if None in backends or len(backends) != 1:
        return None
    backend = backends.pop()
    if backend is dicom and len(paths) > 1:
        return lambda: dicom.read(paths)  # files of one series belong together
    return lambda: [layer for p in paths for layer in backend.read(p)]  # type: ignore[union-attr]


def open_layers(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[LayerData]:
    """Every layer in ``path`` as (data, kwargs, layer_type); a CancersegError when no backend reads it."""
    read = layer_reader(path)
    if read is None:
        paths = [os.fspath(p) for p in path] if isinstance(path, (list, tuple)) else [os.fspath(path)]  # type: ignore[arg-type]
        raise CancersegError(_why_unread(paths))
    return read()


def _why_unread(paths: list[str]) -> str:
    """A person's words for why no backend reads these paths: missing, a plain TIFF, an unknown kind, a mix."""
    for p in paths:
        if not os.path.exists(p):
            return f"{p}: no such file or folder"
    for p in paths:
        reason = wsi.explain_unread(p) if backend_for(p) is None else None
        if reason:
            return f"{p}: {reason}"
    unread = [p for p in paths if backend_for(p) is None]
    if unread:
        return (f"{unread[0]}: not a kind of file this plugin reads (whole-slide images, NIfTI, DICOM, "
                "OME-Zarr stores, Aperio/ASAP/GeoJSON annotations)")
    return f"{paths[0]}: these files are of different kinds and cannot be opened as one"


def first_image(path: str) -> LayerData:
    """The first image layer of ``path``."""
    for layer in open_layers(path):
        if layer[2] == "image":
            return layer
    raise CancersegError(f"{path}: holds no image (only {', '.join(sorted({t for *_, t in open_layers(path)}))})")


def read_any_image(path: str) -> np.ndarray:
    """Pixels of a 2D image file (PNG, JPEG...) or of the first image layer the plugin reads (its smallest level)."""
    if path.lower().endswith(IMAGE_SUFFIXES):
        from PIL import Image

        return np.asarray(Image.open(path))
    data, kwargs, _ = first_image(path)
    return np.asarray(data[-1] if kwargs.get("multiscale") else data)
