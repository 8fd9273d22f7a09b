"""The one annotation model all formats read into and write from.

Coordinates are level-0 pixels of the slide, x to the right and y down, in
the continuous convention: pixel (i, j) covers [j, j+1) x [i, i+1) and its
centre is (j + 0.5, i + 0.5).  Geometry is shapely: Polygon (with holes),
MultiPolygon, LineString (rulers, arrows, measurements), Point/MultiPoint.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any

from shapely.geometry.base import BaseGeometry

from ..errors import ReadError

#: Refuse annotation files larger than this (a slide's annotations are a few MB at most).
MAX_FILE_BYTES = 256 * 1024**2
#: No slide is wider than this many level-0 pixels (the largest are ~200,000 px); a coordinate past it is a
#: corrupt file, and squaring one near 1e300 gives an infinite area.
MAX_COORDINATE = 1e8
#: No scanner resolves below 0.01 µm/px, and no slide is useful above 1000 µm/px.
MPP_RANGE = (1e-3, 1e3)


@dataclass
class Annotation:
    geometry: BaseGeometry
    class_name: str
    color: tuple[int, int, int] | None = None
    kind: str = "polygon"  # polygon, rectangle, ellipse, spline, points, line, arrow, ruler
    exclusion: bool = False  # a negative region that lies in no positive one: it removes area
    source: dict[str, Any] = field(default_factory=dict)  # what the file said, for lossless writing


@dataclass
class AnnotationSet:
    annotations: list[Annotation]
    path: str = ""
    source_format: str = ""
    mpp: float | None = None  # µm per level-0 pixel, when the file says
    notes: list[str] = field(default_factory=list)

    def classes(self) -> list[str]:
        return sorted({a.class_name for a in self.annotations})

    def by_class(self, name: str) -> list[Annotation]:
        return [a for a in self.annotations if a.class_name == name]


def check_size(path: str) -> None:
    try:
        size = os.path.getsize(path)
    except OSError as err:
        raise ReadError(path, f"cannot open: {err.strerror}") from None
    if size > MAX_FILE_BYTES:
        raise ReadError(path, f"is {size / 1e6:.0f} MB; "
                              f"annotation files over {MAX_FILE_BYTES / 1e6:.0f} MB are refused")


def parse_xml(path: str):
    """The root element, parsed safely: no DTDs, no entities, no external references."""
    from xml.etree.ElementTree import ParseError

    import defusedxml.ElementTree as SafeET
    from defusedxml import DefusedXmlException

    check_size(path)
    try:
        return SafeET.parse(path, forbid_dtd=True, forbid_entities=True, forbid_external=True).getroot()
    except DefusedXmlException as err:
        raise ReadError(path, f"refused: the XML declares a DTD or entities ({type(err).__name__}); "
                              "annotation files never need them and they enable XXE and entity-expansion attacks"
                        ) from None
    except ParseError as err:
        raise ReadError(path, f"malformed XML: {err}") from None


def number(text: str | float | None, path: str, where: str) -> float:
    """A coordinate, or a ReadError saying exactly which one is malformed."""
    try:
        if text is None:  # an attribute that is not there
            raise TypeError
        value = float(text)
    except (TypeError, ValueError):
        raise ReadError(path, f"{where}: {text!r} is not a number") from None
    if not math.isfinite(value):
        raise ReadError(path, f"{where}: {text!r} is not a finite number")
    return value


def coordinate(text: str | float | None, path: str, where: str) -> float:
    """A vertex coordinate: a finite number no slide could be bigger than."""
    value = number(text, path, where)
    if abs(value) > MAX_COORDINATE:
        raise ReadError(path, f"{where}: {text!r} lies outside any slide (coordinates past "
                              f"±{MAX_COORDINATE:.0e} px are refused)")
    return value


def microns_per_pixel(text, path: str, where: str) -> float:
    """A µm/px value: finite and in the range real scanners give, else a ReadError (areas would be wrong)."""
    value = number(text, path, where)
    low, high = MPP_RANGE
    if not low <= value <= high:
        raise ReadError(path, f"{where}: {text!r} µm per pixel is not a real scale (expected a positive "
                              f"number between {low:g} and {high:g})")
    return value


def check_coordinates(geometry: BaseGeometry, path: str, where: str) -> None:
    """Refuse a geometry with NaN, infinite or out-of-slide coordinates (its area would be NaN or Infinity)."""
    import numpy as np
    import shapely

    coords = shapely.get_coordinates(geometry)
    if coords.size == 0:
        return
    if not np.isfinite(coords).all():
        raise ReadError(path, f"{where}: has NaN or infinite coordinates")
    if np.abs(coords).max() > MAX_COORDINATE:
        raise ReadError(path, f"{where}: a coordinate ({np.abs(coords).max():.3g}) lies outside any slide "
                              f"(coordinates past ±{MAX_COORDINATE:.0e} px are refused)")


def repair(geometry: BaseGeometry) -> tuple[BaseGeometry, bool]:
    """A valid polygonal geometry (self-intersecting freehand outlines are split as QuPath does).

    Returns the geometry and whether it had to be repaired.
    """
    from shapely.geometry import MultiPolygon, Polygon
    from shapely.validation import make_valid

    if geometry.is_valid or not isinstance(geometry, (Polygon, MultiPolygon)):
        return geometry, False
    fixed = make_valid(geometry)
    parts = [g for g in getattr(fixed, "geoms", [fixed]) if isinstance(g, (Polygon, MultiPolygon))]
    polygons = [p for part in parts for p in getattr(part, "geoms", [part])]
    return (polygons[0] if len(polygons) == 1 else MultiPolygon(polygons)), True
