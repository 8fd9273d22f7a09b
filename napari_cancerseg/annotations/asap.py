"""ASAP XML: ASAP_Annotations/Annotations/Annotation/Coordinates/Coordinate, and AnnotationGroups.

Polygon and Rectangle become polygons, Spline a polygon sampled along a closed
Catmull-Rom curve through its control points (kept for writing back), Dot and
PointSet points, Measurement a line.  Coordinates are taken in their ``Order``,
not in file order.  The class is the group (``PartOfGroup``); ungrouped
annotations use their own name.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import numpy as np
from shapely.geometry import LineString, MultiPoint, Point, Polygon

from ..errors import ReadError
from .model import Annotation, AnnotationSet, coordinate, number, parse_xml, repair

SPLINE_SAMPLES_PER_SEGMENT = 16
KINDS = {"Polygon": "polygon", "Rectangle": "rectangle", "Spline": "spline", "Dot": "points",
         "PointSet": "points", "Measurement": "line"}


def hex_to_rgb(text: str | None, path: str = "", where: str = "") -> tuple[int, int, int] | None:
    """'#RRGGBB' as (r, g, b); None when absent; a ReadError naming the file for '#zzzzzz'."""
    if not text:
        return None
    try:
        if not text.startswith("#") or len(text) != 7:
            raise ValueError(text)
        return tuple(int(text[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
    except ValueError:
        raise ReadError(path, f"{where}: colour {text!r} is not a #RRGGBB hex colour") from None


def rgb_to_hex(rgb) -> str:
    return "#{:02X}{:02X}{:02X}".format(*(int(c) for c in rgb))


def catmull_rom_closed(points: np.ndarray, samples: int = SPLINE_SAMPLES_PER_SEGMENT) -> np.ndarray:
    """A closed centripetal-free (uniform) Catmull-Rom curve through every control point."""
    n = len(points)
    t = np.linspace(0, 1, samples, endpoint=False)[:, None]
    out = []
    for i in range(n):
        p0, p1, p2, p3 = points[(i - 1) % n], points[i], points[(i + 1) % n], points[(i + 2) % n]
        out.append(0.5 * ((2 * p1) + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                          + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3))
    return np.concatenate(out)


def read(path: str | os.PathLike) -> AnnotationSet:
    path = os.fspath(path)
    root = parse_xml(path)
    if root.tag != "ASAP_Annotations":
        raise ReadError(path, f"not an ASAP XML: the root element is <{root.tag}>, not <ASAP_Annotations>")
    group_colors = {g.get("Name"): hex_to_rgb(g.get("Color"), path, f"Group {g.get('Name')!r}")
                    for g in root.iter("Group")}
    annotations, notes = [], []
    for index, element in enumerate(root.iter("Annotation")):
        name, kind_text = element.get("Name", f"Annotation {index}"), element.get("Type", "Polygon")
        group = element.get("PartOfGroup", "None")
        where = f"Annotation {name!r}"
        coordinates: list[tuple[int, float, float]] = []
        for c in element.iter("Coordinate"):
            order = int(number(c.get("Order", len(coordinates)), path, f"{where}, Coordinate Order"))
            coordinates.append((order, coordinate(c.get("X"), path, f"{where}, Coordinate {order} X"),
                                coordinate(c.get("Y"), path, f"{where}, Coordinate {order} Y")))
        points = np.array([(x, y) for _, x, y in sorted(coordinates)], dtype=float).reshape(-1, 2)
        kind = KINDS.get(kind_text)
        if kind is None:
            notes.append(f"{where}: unknown type {kind_text!r} skipped")
            continue
        needed = {"polygon": 3, "rectangle": 3, "spline": 3, "line": 2, "points": 1}[kind]
        if len(points) < needed:
            notes.append(f"{where}: {kind_text} with {len(points)} coordinates skipped (needs {needed})")
            continue
        if kind == "spline":
            geometry = Polygon(catmull_rom_closed(points))
        elif kind in ("polygon", "rectangle"):
            geometry = Polygon(points)
        elif kind == "line":
            geometry = LineString(points)
        else:
            geometry = Point(points[0]) if kind_text == "Dot" else MultiPoint(points)
        geometry, repaired = repair(geometry)
        if repaired:
            notes.append(f"{where}: self-intersecting outline repaired into valid polygons")
        class_name = group if group and group != "None" else name
        color = group_colors.get(group) or hex_to_rgb(element.get("Color"), path, where)
        source = {"name": name, "type": kind_text, "group": group, "color": element.get("Color"),
                  "control_points": points.tolist() if kind == "spline" else None}
        annotations.append(Annotation(geometry, class_name, color, kind, source=source))
    return AnnotationSet(annotations, path=path, source_format="asap", notes=notes)


def _coordinates(item: Annotation) -> tuple[str, list]:
    geometry = item.geometry
    if item.kind == "spline" and item.source.get("control_points"):
        return "Spline", item.source["control_points"]
    if isinstance(geometry, Point):
        return "Dot", [geometry.coords[0]]
    if isinstance(geometry, MultiPoint):
        return "PointSet", [g.coords[0] for g in geometry.geoms]
    if isinstance(geometry, LineString):
        return "Measurement" if len(geometry.coords) == 2 else "PointSet", list(geometry.coords)
    return ("Rectangle" if item.kind == "rectangle" else "Polygon"), list(geometry.exterior.coords)[:-1]


def write(annotation_set: AnnotationSet, path: str | os.PathLike) -> str:
    """Every annotation in a group named after its class (ASAP has no holes: they are written as their own
    polygons in a '<class> (hole)' group, so nothing is silently dropped)."""
    path = os.fspath(path)
    root = ET.Element("ASAP_Annotations")
    annotations_element = ET.SubElement(root, "Annotations")
    groups: dict[str, tuple[int, int, int] | None] = {}
    count = 0

    def add(name, kind, group, color, coords):
        nonlocal count
        element = ET.SubElement(annotations_element, "Annotation", Name=name, Type=kind, PartOfGroup=group,
                                Color=rgb_to_hex(color or (244, 250, 88)))
        coordinates = ET.SubElement(element, "Coordinates")
        for order, (x, y) in enumerate(coords):
            ET.SubElement(coordinates, "Coordinate", Order=str(order), X=repr(float(x)), Y=repr(float(y)))
        count += 1

    for item in annotation_set.annotations:
        group = item.class_name
        groups.setdefault(group, item.color)
        polygons = list(item.geometry.geoms) if item.geometry.geom_type == "MultiPolygon" else [item.geometry]
        for polygon in polygons:
            single = Annotation(polygon, item.class_name, item.color, item.kind, source=item.source)
            kind, coords = _coordinates(single)
            add(item.source.get("name") or f"Annotation {count}", kind, group, item.color, coords)
            for hole in getattr(polygon, "interiors", []):
                groups.setdefault(f"{group} (hole)", item.color)
                add(f"Annotation {count}", "Polygon", f"{group} (hole)", item.color, list(hole.coords)[:-1])
    groups_element = ET.SubElement(root, "AnnotationGroups")
    for name, color in groups.items():
        group_element = ET.SubElement(groups_element, "Group", Name=name, PartOfGroup="None",
                                      Color=rgb_to_hex(color or (244, 250, 88)))
        ET.SubElement(group_element, "Attributes")
    ET.indent(root)
    tmp = f"{path}.tmp-{os.getpid()}"
    ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, path)
    return path
