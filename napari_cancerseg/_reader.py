"""napari reader: dispatches a path to the backend in ``io/`` that claims it, and nothing else."""

from __future__ import annotations

import os
from collections.abc import Callable

from .annotations import layers as annotation_files
from .io import LayerData, dicom, nifti, stores, wsi

#: Order matters only for folders: an OME-Zarr store is a folder, not a DICOM series.
BACKENDS = (stores, wsi, nifti, dicom, annotation_files)


def backend_for(path: str):
    """The io module that reads ``path``, or None."""
    return next((backend for backend in BACKENDS if backend.claims(path)), None)


def layer_reader(path: str | list[str]) -> Callable[[], list[LayerData]] | None:
    """A function reading ``path`` into layer data (napari-free), or None if no backend claims it."""
    paths = [os.fspath(p) for p in path] if isinstance(path, (list, tuple)) else [os.fspath(path)]
    backends = {backend_for(p) for p in paths}
    if None in backends or len(backends) != 1:
        return None
    backend = backends.pop()
    if backend is dicom and len(paths) > 1:
        return lambda: dicom.read(paths)  # files of one series belong together
    return lambda: [layer for p in paths for layer in backend.read(p)]


def get_reader(path: str | list[str]) -> Callable[[str | list[str]], list[LayerData]] | None:
    read = layer_reader(path)
    if read is None:
        return None  # napari's contract: not ours (or a mix we do not stack), let others try
    return lambda _: _announce(read())


def _announce(layers: list[LayerData]) -> list[LayerData]:
    """Tell the user what a folder held or how a slide was scaled (napari notifications)."""
    from napari.utils.notifications import show_info

    notes = {kwargs["metadata"].get(key) for _, kwargs, _ in layers for key in ("folder_summary", "scale_note")}
    notes |= {note for _, kwargs, _ in layers for note in kwargs["metadata"].get("notes") or []}
    for note in sorted(n for n in notes if n):
        show_info(note)
    return layers
