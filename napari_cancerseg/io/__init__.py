"""Opening images: one small module per backend, each with ``claims(path)`` and ``read(path)``.

``read`` returns napari layer data tuples ``(data, kwargs, layer_type)`` but the
modules import neither napari nor Qt, so the CLI and tests use them headless.
"""

from __future__ import annotations

from typing import Any

LayerData = tuple[Any, dict[str, Any], str]

#: Plain 2-D image files (training folders, evaluation masks), read with imageio.
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")


def open_layers(path) -> list[LayerData]:
    """Every layer in ``path`` as (data, kwargs, layer_type): see ``io.opening``."""
    from .opening import open_layers as _open_layers

    return _open_layers(path)
