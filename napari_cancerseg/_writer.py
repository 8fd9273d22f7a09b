"""napari writers for Labels layers: OME-Zarr (any labels) and NIfTI (labels of an MRI volume)."""

from __future__ import annotations

from typing import Any, cast

import numpy as np

from .errors import WriteError
from .io import nifti, stores
from .io.orientation import RAS_TO_LPS


def write_labels_zarr(path: str, data: Any, attributes: dict) -> list[str]:
    """Labels as an OME-Zarr store.  An existing path that is not a store of ours is refused (its files are
    never deleted); a store of ours is replaced, napari's save dialog having asked before overwriting it."""
    levels = list(data) if isinstance(data, (list, tuple)) else stores.label_pyramid(data)
    ndim = levels[0].ndim
    units = attributes.get("units") or ("pixel",) * ndim
    colors = _direct_colors(attributes.get("colormap"))
    stores.write_labels(
        path, levels, scale=attributes.get("scale", (1.0,) * ndim), units=[str(u) for u in units],
        name=attributes.get("name", "labels"), translate=attributes.get("translate"), colors=colors, overwrite=True,
    )
    return [path]


def write_labels_nifti(path: str, data: Any, attributes: dict) -> list[str]:
    """Labels opened with (or drawn on) a NIfTI volume go back in that file's geometry.

    Labels without a source file (e.g. a new layer painted over the volume) are
    written on the canonical (S, P, L) grid their scale and translate describe.
    """
    labels = np.asarray(data[0] if isinstance(data, (list, tuple)) else data)
    if labels.ndim not in (3, 4):
        raise WriteError(path, f"NIfTI needs a 3D or 4D labels layer, this one has {labels.ndim} dimensions")
    metadata = attributes.get("metadata") or {}
    if "original_affine" not in metadata:
        scale = np.asarray(attributes.get("scale", (1.0,) * labels.ndim), float)[-3:]
        translate = np.asarray(attributes.get("translate", (0.0,) * labels.ndim), float)[-3:]
        affine_lps = np.eye(4)
        affine_lps[:3, :3] = np.diag(scale[::-1])  # canonical i, j, k = x, y, z along L, P, S
        affine_lps[:3, 3] = translate[::-1]
        shape_ijk = labels.shape[::-1][:3] + labels.shape[:-3]
        metadata = {"original_affine": (RAS_TO_LPS @ affine_lps).tolist(), "original_shape": shape_ijk,
                    "zooms": tuple(scale[::-1]) + (1.0,) * (labels.ndim - 3)}
    return [nifti.write_labels(path, labels, metadata)]


def _direct_colors(colormap: Any) -> dict[int, tuple[int, int, int, int]] | None:
    """Label -> RGBA 0-255 from a napari direct colormap, when the layer has one."""
    mapping = getattr(colormap, "color_dict", None)
    if not mapping:
        return None
    # napari's colour_dict values are RGBA arrays: four numbers each
    return {int(k): cast(tuple[int, int, int, int], tuple(int(round(float(c) * 255)) for c in v))
            for k, v in mapping.items() if k is not None and int(k) != 0}
