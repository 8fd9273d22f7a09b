"""Aperio ImageScope XML: Annotations/Annotation/Regions/Region/Vertices/Vertex.

Region types: 0 freehand/polygon, 1 rectangle, 2 ellipse (two corners of its
bounding box), 3 arrow and 4 ruler (kept as lines).  ``NegativeROA="1"``
regions become holes of the positive region that contains them, or exclusions
when none does.  ``LineColor`` is a Windows COLORREF: R + G*256 + B*65536.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

import numpy as np
from shapely.geometry import LineString, MultiPolygon, Point, Polygon

from ..errors import ReadError
from .model import Annotation, AnnotationSet, coordinate, microns_per_pixel, number, parse_xml, repair

#: ImageScope's default attribute column: its name is not a class.
DEFAULT_ATTRIBUTE = "Description"

REGION_KINDS = {0: "polygon", 1: "rectangle", 2: "ellipse", 3: "arrow", 4: "ruler"}
KIND_TYPES = {"polygon": 0, "spline": 0, "rectangle": 1, "ellipse": 2, "arrow": 3, "ruler": 4, "line": 4}
ELLIPSE_POINTS = 64


def colorref_to_rgb(value: int) -> tuple[int, int, int]:
    return (value & 0xFF, (value >> 8) & 0xFF, (value >> 16) & 0xFF)


def rgb_to_colorref(rgb) -> int:
    r, g, b = (int(c) for c in rgb)
    return r + g * 256 + b * 65536


def ellipse_polygon(x0: float, y0: float, x1: float, y1: float, points: int = ELLIPSE_POINTS) -> Polygon:
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, abs(x1 - x0) / 2, abs(y1 - y0) / 2
    angles = np.linspace(0, 2 * np.pi, points, endpoint=False)
    return Polygon(np.column_stack([cx + rx * np.cos(angles), cy + ry * np.sin(angles)]))


def _class_name(annotation: ET.Element, region: ET.Element) -> str:
    text = (region.get("Text") or "").strip()
    if text:
        return text
    name = (annotation.get("Name") or "").strip()
    if name:
        return name
    for attribute in annotation.iter("Attribute"):
        value, attribute_name = (attribute.get("Value") or "").strip(), (attribute.get("Name") or "").strip()
        if value:
            return value
        if attribute_name and attribute_name != DEFAULT_ATTRIBUTE:
            return attribute_name
    return f"Annotation {annotation.get('Id', '')}".strip()


def read(path: str | os.PathLike) -> AnnotationSet:
    path = os.fspath(path)
    root = parse_xml(path)
    if root.tag != "Annotations":
        raise ReadError(path, f"not an Aperio ImageScope XML: the root element is <{root.tag}>, not <Annotations>")
    mpp_text = root.get("MicronsPerPixel")
    # "0" is ImageScope's "unknown"; anything else must be a real scale, or every area printed is wrong
    mpp = microns_per_pixel(mpp_text, path, "Annotations/@MicronsPerPixel") \
        if mpp_text is not None and mpp_text.strip() not in ("", "0") else None
    positives: list[Annotation] = []
    negatives: list[Annotation] = []
    others: list[Annotation] = []
    notes: list[str] = []
    for annotation in root.findall("Annotation"):
        annotation_id = annotation.get("Id", "?")
        color_text = annotation.get("LineColor")
        color = colorref_to_rgb(int(number(color_text, path, f"Annotation Id={annotation_id} LineColor"))) \
            if color_text not in (None, "") else None
        for region in annotation.iter("Region"):
            region_id = region.get("Id", "?")
            where = f"Annotation Id={annotation_id}, Region Id={region_id}"
            region_type = int(number(region.get("Type", "0"), path, f"{where} Type"))
            vertices = [(coordinate(v.get("X"), path, f"{where}, Vertex {i + 1} X"),
                         coordinate(v.get("Y"), path, f"{where}, Vertex {i + 1} Y"))
                        for i, v in enumerate(region.iter("Vertex"))]
            kind = REGION_KINDS.get(region_type, "polygon")
            source = {"annotation_id": annotation_id, "region_id": region_id, "region_type": region_type,
                      "annotation_name": annotation.get("Name", ""), "text": region.get("Text", "")}
            item = Annotation(Point(0, 0), _class_name(annotation, region), color, kind, source=source)
            if kind in ("arrow", "ruler"):
                if len(vertices) < 2:
                    notes.append(f"{where}: {kind} with {len(vertices)} vertex skipped")
                    continue
                item.geometry = LineString(vertices)
                others.append(item)
                continue
            if kind == "ellipse" and len(vertices) >= 2:
                (x0, y0), (x1, y1) = vertices[0], vertices[-1]
                item.geometry = ellipse_polygon(x0, y0, x1, y1)
                item.source["corners"] = [vertices[0], vertices[-1]]
            elif kind == "rectangle" and len(vertices) == 2:
                (x0, y0), (x1, y1) = vertices
                item.geometry = Polygon([(x0, y0), (x1, y0), (x1, y1), (x0, y1)])
            elif len(vertices) >= 3:
                item.geometry = Polygon(vertices)
                if kind == "rectangle" and len(vertices) != 4:
                    item.kind = "polygon"  # ImageScope stores some freehand outlines as Type 1
            elif len(vertices) == 1:
                item.geometry, item.kind = Point(vertices[0]), "points"
                others.append(item)
                continue
            else:
                notes.append(f"{where}: region with {len(vertices)} vertices skipped (a polygon needs 3)")
                continue
            (negatives if region.get("NegativeROA") == "1" else positives).append(item)
    for negative in negatives:
        inside = negative.geometry.representative_point()
        # the innermost positive region holding it (annotations may nest)
        containers = [p for p in positives if p.geometry.contains(inside)]
        container = min(containers, key=lambda p: p.geometry.area) if containers else None
        if container is None:
            negative.exclusion = True
            others.append(negative)
            continue
        shell = container.geometry
        container.geometry = Polygon(shell.exterior.coords, [*[h.coords for h in shell.interiors],
                                                             negative.geometry.exterior.coords])
        container.source.setdefault("hole_regions", []).append(negative.source)
    for item in positives + [n for n in others if n.exclusion]:
        item.geometry, repaired = repair(item.geometry)
        if repaired:
            notes.append(f"Annotation Id={item.source['annotation_id']}, Region Id={item.source['region_id']}: "
                         "self-intersecting outline repaired into valid polygons")
    return AnnotationSet(positives + others, path=path, source_format="aperio", mpp=mpp, notes=notes)


def _fmt(value: float) -> str:
    return repr(float(value))


def _add_region(regions: ET.Element, region_id: int, region_type: int, vertices, negative: bool, text: str = ""):
    region = ET.SubElement(regions, "Region", Id=str(region_id), Type=str(region_type), Text=text,
                           NegativeROA="1" if negative else "0", Analyze="1")
    ET.SubElement(region, "Attributes")
    vertices_element = ET.SubElement(region, "Vertices")
    for x, y in vertices:
        ET.SubElement(vertices_element, "Vertex", X=_fmt(x), Y=_fmt(y), Z="0")


def _polygons(geometry):
    return list(geometry.geoms) if isinstance(geometry, MultiPolygon) else [geometry]


def write(annotation_set: AnnotationSet, path: str | os.PathLike) -> str:
    """One <Annotation> per (class, colour); holes and exclusions as NegativeROA regions."""
    path = os.fspath(path)
    root = ET.Element("Annotations")
    if annotation_set.mpp:
        root.set("MicronsPerPixel", _fmt(annotation_set.mpp))
    groups: dict[tuple, list[Annotation]] = {}
    for item in annotation_set.annotations:
        groups.setdefault((item.class_name, item.color), []).append(item)
    for annotation_id, ((class_name, color), items) in enumerate(groups.items(), start=1):
        element = ET.SubElement(root, "Annotation", Id=str(annotation_id), Name=class_name, Type="4",
                                LineColor=str(rgb_to_colorref(color or (0, 255, 0))), Visible="1")
        attributes = ET.SubElement(element, "Attributes")
        ET.SubElement(attributes, "Attribute", Name=class_name, Id="0", Value="")
        regions = ET.SubElement(element, "Regions")
        region_id = 0
        for item in items:
            geometry = item.geometry
            region_type = KIND_TYPES.get(item.kind, 0)
            if isinstance(geometry, (LineString, Point)) or item.kind == "points":
                region_id += 1
                coords = (list(geometry.coords) if not hasattr(geometry, "geoms")
                          else [g.coords[0] for g in geometry.geoms])
                _add_region(regions, region_id, region_type if isinstance(geometry, LineString) else 0, coords, False)
                continue
            for polygon in _polygons(geometry):
                region_id += 1
                if item.kind == "ellipse" and "corners" in item.source:
                    _add_region(regions, region_id, 2, item.source["corners"], item.exclusion)
                else:
                    _add_region(regions, region_id, region_type if region_type in (0, 1) else 0,
                                polygon.exterior.coords[:-1], item.exclusion)
                for hole in polygon.interiors:
                    region_id += 1
                    _add_region(regions, region_id, 0, hole.coords[:-1], True)
    ET.indent(root)
    tmp = f"{path}.tmp-{os.getpid()}"
    ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=False)
    os.replace(tmp, path)
    return path
