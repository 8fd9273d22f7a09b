"""Annotation files as layers and as label stores: the io backend of ImageScope/ASAP XML and GeoJSON.

Annotations <-> napari layer data (Shapes for outlines, Points for dots), without importing napari.

napari Shapes have no holes: a hole is its own polygon with the feature
``role = "hole"`` and ``parent`` = the index of its outline, and an exclusion
has ``role = "exclusion"``; ``to_annotations`` puts them back together, so a
Shapes layer exports to XML or GeoJSON without losing them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from shapely.geometry import LineString, MultiPoint, Point, Polygon

from ..annotations import read as read_annotations
from ..annotations import sniff
from ..annotations.model import Annotation, AnnotationSet
from ..annotations.raster import LabelledShapes, label_array
from ..classes import CLASSES, label_for, rgba_255
from . import LayerData, stores

EXTENSIONS = (".xml", ".json", ".geojson")
FACE_ALPHA = 0.25


def claims(path: str) -> bool:
    return path.lower().endswith(EXTENSIONS) and os.path.isfile(path) and sniff(path) is not None


def class_color(item: Annotation) -> tuple[int, int, int]:
    """The class table's colour for a class it knows (a file's "CaP" drawn green must not read as benign), the
    file's own colour for any other class, else cyan."""
    rgb = CLASSES.get(label_for(item.class_name, None) or -1, (None, None))[1]
    return rgb or item.color or (0, 200, 255)


def _yx(coords) -> np.ndarray:
    return np.asarray(coords, dtype=float)[:, ::-1]


def to_layer_data(annotation_set: AnnotationSet, scale: tuple[float, float] | None = None,
                  name: str | None = None, units: tuple[str, str] | None = None) -> list[LayerData]:
    """A Shapes layer (polygons, holes, lines) and, if any, a Points layer, in level-0 pixels.

    ``scale`` and ``units``: those of the slide the annotations lie on; without a slide, the file's µm/px in µm
    (pixels when it records none), so the layers never mix units with the slide's (napari's scale bar then
    drops its unit).
    """
    if scale is None:
        scale = (annotation_set.mpp, annotation_set.mpp) if annotation_set.mpp else (1.0, 1.0)
        units = units or (("um", "um") if annotation_set.mpp else ("pixel", "pixel"))
    units = units or ("pixel", "pixel")
    name = name or (Path(annotation_set.path).name if annotation_set.path else "annotations")
    features: dict[str, list] = {"class": [], "role": [], "parent": [], "kind": []}
    shapes: list[np.ndarray] = []
    shape_types: list[str] = []
    edge: list[tuple[float, ...]] = []
    face: list[tuple[float, ...]] = []
    points: list[tuple[float, ...]] = []
    point_classes: list[str] = []
    point_colors: list[tuple[float, ...]] = []

    def add(data, shape_type, item, role, parent):
        rgb = np.array(class_color(item)) / 255.0
        shapes.append(data)
        shape_types.append(shape_type)
        features["class"].append(item.class_name)
        features["role"].append(role)
        features["parent"].append(parent)
        features["kind"].append(item.kind)
        edge.append((*rgb, 1.0))
        face.append((*rgb, 0.0 if role == "hole" or shape_type == "path" else FACE_ALPHA))

    for item in annotation_set.annotations:
        geometry = item.geometry
        if isinstance(geometry, (Point, MultiPoint)):
            for point in getattr(geometry, "geoms", [geometry]):
                points.append(point.coords[0][::-1])
                point_classes.append(item.class_name)
                point_colors.append((*np.array(class_color(item)) / 255.0, 1.0))
        elif isinstance(geometry, LineString):
            add(_yx(geometry.coords), "path", item, "line", -1)
        else:
            for polygon in getattr(geometry, "geoms", [geometry]):
                outline = len(shapes)
                role = "exclusion" if item.exclusion else "outline"
                add(_yx(polygon.exterior.coords[:-1]), "polygon", item, role, -1)
                for hole in polygon.interiors:
                    add(_yx(hole.coords[:-1]), "polygon", item, "hole", outline)
    metadata = {"format": f"{annotation_set.source_format} annotations", "path": annotation_set.path,
                "mpp": annotation_set.mpp, "notes": annotation_set.notes, "classes": annotation_set.classes(),
                "coordinates": "level-0 pixels of the slide"}
    layers: list[LayerData] = []
    if shapes:
        layers.append((shapes, {"name": name, "shape_type": shape_types, "features": features, "edge_color": edge,
                                "face_color": face, "edge_width": 2, "scale": scale, "units": units,
                                "metadata": metadata}, "shapes"))
    if points:
        layers.append((np.asarray(points), {"name": f"{name} points", "features": {"class": point_classes},
                                            "face_color": point_colors, "size": 20, "scale": scale,
                                            "units": units, "metadata": metadata}, "points"))
    return layers


def read(path: str) -> list[LayerData]:
    return to_layer_data(read_annotations(path))


def to_annotations(data: list[np.ndarray], shape_types: list[str], features: dict[str, Any] | None = None,
                   default_class: str = "Annotation", colors: dict[str, tuple[int, int, int]] | None = None,
                   mpp: float | None = None) -> AnnotationSet:
    """Shapes layer data (level-0 (y, x) vertices) back to annotations, holes rejoined to their outlines."""
    n = len(data)
    features = features or {}
    classes = list(features.get("class", [default_class] * n))
    roles = list(features.get("role", ["outline"] * n))
    parents = list(features.get("parent", [-1] * n))
    kinds = list(features.get("kind", [None] * n))
    holes: dict[int, list[np.ndarray]] = {}
    for index, role in enumerate(roles):
        if role == "hole" and 0 <= int(parents[index]) < n:
            holes.setdefault(int(parents[index]), []).append(data[index][:, ::-1])
    annotations = []
    for index, (vertices, shape_type) in enumerate(zip(data, shape_types)):
        role = roles[index]
        if role == "hole":
            continue
        xy = np.asarray(vertices, float)[:, -2:][:, ::-1]  # (x, y); drop any leading (z) axes
        class_name = str(classes[index]) if classes[index] is not None else default_class
        color = (colors or {}).get(class_name)
        if shape_type in ("path", "line"):
            annotations.append(Annotation(LineString(xy), class_name, color, "line"))
            continue
        kind = kinds[index] if kinds[index] and kinds[index] != "None" else (
            "rectangle" if shape_type == "rectangle" else "ellipse" if shape_type == "ellipse" else "polygon")
        polygon = Polygon(xy, holes.get(index, []))
        annotations.append(Annotation(polygon, class_name, color, kind, exclusion=role == "exclusion"))
    return AnnotationSet(annotations, source_format="napari", mpp=mpp)


def rasterise_to_store(path: str, shapes: LabelledShapes, level0_shape: tuple[int, int], downsample: float,
                       mpp: float | None, properties: dict | None = None, overwrite: bool = False) -> str:
    """Write the labels of one level to a multiscale OME-Zarr store, one tile at a time.

    ``mpp``: µm per level-0 pixel (None: unknown). An existing store of ours is replaced only with ``overwrite``.
    """
    height, width = (int(np.ceil(s / downsample)) for s in level0_shape)
    labels = label_array(shapes, (height, width), downsample)
    scale = (mpp * downsample,) * 2 if mpp else (downsample, downsample)
    return stores.write_labels(path, stores.label_pyramid(labels), scale=scale,
                               units=("um", "um") if mpp else ("pixel", "pixel"), name="annotations",
                               colors=dict(rgba_255()),  # a fresh dict of the type write_labels declares
                               properties={"downsample": downsample, **(properties or {})}, overwrite=overwrite)
