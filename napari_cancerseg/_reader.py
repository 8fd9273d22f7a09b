"""napari reader: hands a path to ``io.opening`` and tells the user what the backend noted, nothing else."""

from __future__ import annotations

from collections.abc import Callable

from .io import LayerData
from .io.opening import layer_reader


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
    return show_scale_bar_for_slides(layers)


def show_scale_bar_for_slides(layers: list[LayerData]) -> list[LayerData]:
    """A slide opened in napari (File > Open, drag and drop, sample data) turns on the scale bar, in the slide's µm,
    in the viewer it opens in: a pathologist reads sizes off it."""
    if any((kwargs.get("metadata") or {}).get("format") == "whole-slide image" for _, kwargs, _ in layers):
        import napari  # readers run inside napari; the headless core never gets here

        viewer = napari.current_viewer()
        if viewer is not None:
            show_scale_bar(viewer)
    return layers


def show_scale_bar(viewer) -> None:
    """Turn napari's scale bar on; its unit follows the layers' (µm on a slide with µm/px)."""
    overlays = getattr(getattr(viewer, "canvas", None), "overlays", None)  # napari >= 0.9; viewer.scale_bar before
    (overlays.scale_bar if overlays is not None else viewer.scale_bar).visible = True
