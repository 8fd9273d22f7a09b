"""Annotations -> label masks at any pyramid level, tile by tile; and label masks -> polygons.

Pixel-centre convention: a pixel of a level with downsample ``d`` is inside a
polygon when its centre, at level-0 coordinates ((j + 0.5) d, (i + 0.5) d),
is.  Vertices are scaled by 1/d; nothing is ever drawn on a level-0 canvas of
the whole slide: each tile clips the polygons that touch it and draws only them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dask.array as da
import numpy as np
from shapely import affinity
from shapely.geometry import MultiPolygon, Polygon, box
from shapely.strtree import STRtree

from ..classes import PAINT_ORDER, label_for
from .model import Annotation, AnnotationSet

TILE = 1024


@dataclass
class LabelledShapes:
    """Polygons ready to draw: (geometry in level-0 px, label), plus exclusions, with a spatial index."""

    shapes: list[tuple[Polygon | MultiPolygon, int]]
    exclusions: list[Polygon | MultiPolygon]

    def __post_init__(self):
        self._tree = STRtree([g for g, _ in self.shapes]) if self.shapes else None
        self._exclusion_tree = STRtree(self.exclusions) if self.exclusions else None

    def touching(self, region: Polygon):
        shapes = [self.shapes[i] for i in sorted(self._tree.query(region))] if self._tree else []  # paint order
        exclusions = [self.exclusions[i] for i in self._exclusion_tree.query(region)] if self._exclusion_tree else []
        return shapes, exclusions


def labelled_shapes(annotations: AnnotationSet | Sequence[Annotation], unknown: int | None = None,
                    mapping: dict[str, int] | None = None) -> LabelledShapes:
    """Polygons with their labels (class table of DESIGN.md; ``unknown`` for unrecognised names)."""
    items = annotations.annotations if isinstance(annotations, AnnotationSet) else annotations
    shapes, exclusions = [], []
    for item in items:
        if not isinstance(item.geometry, (Polygon, MultiPolygon)):
            continue  # points and lines have no area
        if item.exclusion:
            exclusions.append(item.geometry)
            continue
        label = label_for(item.class_name, unknown, mapping)
        if label:
            shapes.append((item.geometry, label))
    order = {label: rank for rank, label in enumerate(PAINT_ORDER)}
    shapes.sort(key=lambda s: order.get(s[1], -1))
    return LabelledShapes(shapes, exclusions)


def fill_rings(shape: tuple[int, int], rings: list[np.ndarray]) -> np.ndarray:
    """Even-odd scanline fill: pixels whose centres (j + 0.5, i + 0.5) lie inside the rings.

    ``rings`` are (N, 2) arrays of (x, y) in this canvas's pixel units (closed
    or not).  Each edge toggles the parity of every pixel to the right of
    where it crosses a row's centre line; a cumulative sum along the row then
    gives inside/outside.  Holes need no special case (even-odd), and the cost
    is one toggle per edge and row it spans, not one test per pixel.
    """
    height, width = shape
    toggles = np.zeros((height, width + 1), np.int32)
    for ring in rings:
        ring = np.asarray(ring, float)
        x1, y1 = ring[:, 0], ring[:, 1]
        x2, y2 = np.roll(x1, -1), np.roll(y1, -1)
        low, high = np.minimum(y1, y2), np.maximum(y1, y2)
        # rows whose centre line y = r + 0.5 satisfies low <= y < high (half-open: vertices count once)
        first = np.clip(np.ceil(low - 0.5), 0, height).astype(np.int64)
        last = np.clip(np.ceil(high - 0.5), 0, height).astype(np.int64)
        counts = np.maximum(last - first, 0)
        if counts.sum() == 0:
            continue
        edge = np.repeat(np.arange(len(ring)), counts)
        rows = np.repeat(first, counts) + (np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts))
        yc = rows + 0.5
        xc = x1[edge] + (yc - y1[edge]) * (x2[edge] - x1[edge]) / (y2[edge] - y1[edge])
        cols = np.clip(np.ceil(xc - 0.5), 0, width).astype(np.int64)  # first pixel centre right of the crossing
        np.add.at(toggles, (rows, cols), 1)
    return (np.cumsum(toggles[:, :width], axis=1) & 1).astype(bool)


def _draw(canvas: np.ndarray, geometry, value: int, x0: float, y0: float, downsample: float) -> None:
    """Set ``canvas`` pixels whose centres fall in ``geometry`` (level-0 px) to ``value``."""
    rings = []
    for part in getattr(geometry, "geoms", [geometry]):
        if not isinstance(part, Polygon) or part.is_empty:
            continue
        for ring in (part.exterior, *part.interiors):
            xy = np.asarray(ring.coords)
            rings.append(np.column_stack([xy[:, 0] / downsample - x0, xy[:, 1] / downsample - y0]))
    if rings:
        canvas[fill_rings(canvas.shape, rings)] = value


def rasterise_region(shapes: LabelledShapes, x: int, y: int, width: int, height: int,
                     downsample: float = 1.0, dtype=np.uint8) -> np.ndarray:
    """Labels of one region given in *level* pixels (x, y, width, height) of a level with ``downsample``."""
    canvas = np.zeros((height, width), dtype)
    region = box(x * downsample, y * downsample, (x + width) * downsample, (y + height) * downsample)
    touching, exclusions = shapes.touching(region)
    for geometry, label in touching:  # already in paint order
        _draw(canvas, geometry.intersection(region.buffer(downsample)), label, x, y, downsample)
    for geometry in exclusions:
        _draw(canvas, geometry.intersection(region.buffer(downsample)), 0, x, y, downsample)
    return canvas


def label_array(shapes: LabelledShapes, level_shape: tuple[int, int], downsample: float = 1.0,
                chunk: int = TILE) -> da.Array:
    """A lazy (height, width) uint8 label image of a whole level, drawn chunk by chunk on demand."""

    def block(block_info=None):
        (y0, y1), (x0, x1) = block_info[None]["array-location"]
        return rasterise_region(shapes, x0, y0, x1 - x0, y1 - y0, downsample)

    return da.map_blocks(block, chunks=da.core.normalize_chunks((chunk, chunk), level_shape), dtype=np.uint8,
                         meta=np.empty((0, 0), np.uint8))


# ----------------------------------------------------------------- mask -> polygons


def mask_to_polygons(labels: np.ndarray, downsample: float = 1.0, tolerance: float = 0.0,
                     offset: tuple[float, float] = (0.0, 0.0)) -> dict[int, MultiPolygon]:
    """Outlines of each label as polygons with holes, in level-0 pixel coordinates.

    Each row's runs of a label become pixel-edge rectangles, merged by a
    union: the outline follows pixel edges exactly, holes and islands
    included, so drawing it back (pixel centres) gives the same mask.
    ``tolerance`` (level pixels; below 0.5 keeps every pixel) simplifies the
    staircase.  ``offset`` is the (x, y) of the mask's first pixel in level pixels.
    """
    import shapely

    labels = np.asarray(labels)
    result = {}
    for label in sorted(set(np.unique(labels)) - {0}):
        mask = np.pad(labels == label, ((0, 0), (1, 1)))
        changes = np.diff(mask.astype(np.int8), axis=1)
        rows, starts = np.nonzero(changes == 1)
        _, ends = np.nonzero(changes == -1)  # same row order: every run starts and ends on its row
        boxes = shapely.box(starts, rows, ends, rows + 1)
        geometry = shapely.union_all(boxes)
        if tolerance:
            geometry = geometry.simplify(tolerance, preserve_topology=True)
        geometry = affinity.translate(geometry, offset[0], offset[1])
        geometry = affinity.scale(geometry, downsample, downsample, origin=(0, 0))
        polygons = [g for g in getattr(geometry, "geoms", [geometry]) if isinstance(g, Polygon) and not g.is_empty]
        result[int(label)] = MultiPolygon(polygons)
    return result


def labels_to_annotations(labels: np.ndarray, class_names: dict[int, str], downsample: float = 1.0,
                          tolerance: float = 0.0, offset: tuple[float, float] = (0.0, 0.0),
                          colors: dict[int, tuple[int, int, int]] | None = None) -> AnnotationSet:
    """A (corrected) label mask as annotations, ready to write to XML or GeoJSON."""
    annotations = []
    for label, geometry in mask_to_polygons(labels, downsample, tolerance, offset).items():
        for polygon in geometry.geoms:
            annotations.append(Annotation(polygon, class_names.get(label, f"label {label}"),
                                          (colors or {}).get(label), "polygon", source={"label": label}))
    return AnnotationSet(annotations, source_format="labels")
