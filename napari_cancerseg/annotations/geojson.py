"""GeoJSON (FeatureCollection, a bare list of features as QuPath exports, or one Feature).

Polygon and MultiPolygon keep their interior rings as holes; the class comes
from QuPath's ``properties.classification`` (``name``, and ``colorRGB`` as a
signed ARGB integer or ``color`` as [r, g, b]), else ``properties.name``.
"""

from __future__ import annotations

import json
import os

from shapely.geometry import mapping, shape

from ..errors import ReadError
from .model import Annotation, AnnotationSet, check_size, repair

KINDS = {"Polygon": "polygon", "MultiPolygon": "polygon", "LineString": "line", "MultiLineString": "line",
         "Point": "points", "MultiPoint": "points"}


def _color(classification: dict) -> tuple[int, int, int] | None:
    if isinstance(classification.get("color"), (list, tuple)) and len(classification["color"]) >= 3:
        return tuple(int(c) for c in classification["color"][:3])
    if "colorRGB" in classification:
        value = int(classification["colorRGB"]) & 0xFFFFFF  # signed Java ARGB -> RGB
        return ((value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF)
    return None


def _features(data, path: str) -> list[dict]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        return data.get("features", [])
    if isinstance(data, dict) and data.get("type") == "Feature":
        return [data]
    if isinstance(data, dict) and data.get("type") in KINDS:
        return [{"type": "Feature", "geometry": data, "properties": {}}]
    raise ReadError(path, "not GeoJSON annotations: expected a FeatureCollection, a list of features or a Feature")


def read(path: str | os.PathLike) -> AnnotationSet:
    path = os.fspath(path)
    check_size(path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as err:
        raise ReadError(path, f"malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    except UnicodeDecodeError as err:
        raise ReadError(path, f"not UTF-8 text: {err}") from None
    annotations, notes = [], []
    for index, feature in enumerate(_features(data, path)):
        where = f"feature {index + 1}"
        geometry_data = feature.get("geometry") if isinstance(feature, dict) else None
        if not geometry_data:
            notes.append(f"{where}: no geometry, skipped")
            continue
        kind = KINDS.get(geometry_data.get("type"))
        if kind is None:
            notes.append(f"{where}: geometry type {geometry_data.get('type')!r} skipped")
            continue
        try:
            geometry = shape(geometry_data)
        except (ValueError, TypeError, AttributeError, IndexError) as err:
            raise ReadError(path, f"{where}: malformed {geometry_data.get('type')} coordinates: {err}") from None
        geometry, repaired = repair(geometry)
        if repaired:
            notes.append(f"{where}: self-intersecting outline repaired into valid polygons")
        properties = feature.get("properties") or {}
        classification = properties.get("classification") or {}
        extra = properties.get("cancerseg") or {}
        class_name = classification.get("name") or properties.get("name") or properties.get("class") or "Unclassified"
        annotations.append(Annotation(
            geometry, class_name, _color(classification), extra.get("kind", kind),
            exclusion=bool(extra.get("exclusion", False)),
            source={"id": feature.get("id"), "properties": {k: v for k, v in properties.items() if k != "cancerseg"},
                    **({"corners": extra["corners"]} if "corners" in extra else {}),
                    **({"control_points": extra["control_points"]} if "control_points" in extra else {})}))
    return AnnotationSet(annotations, path=path, source_format="geojson", notes=notes)


def to_feature_collection(annotation_set: AnnotationSet) -> dict:
    features = []
    for item in annotation_set.annotations:
        classification = {"name": item.class_name}
        if item.color:
            classification["color"] = list(item.color)
        extra = {"kind": item.kind, "exclusion": item.exclusion}
        for key in ("corners", "control_points"):
            if item.source.get(key):
                extra[key] = item.source[key]
        features.append({"type": "Feature", "geometry": mapping(item.geometry),
                         "properties": {"objectType": "annotation", "classification": classification,
                                        "cancerseg": extra}})
    collection = {"type": "FeatureCollection", "features": features}
    if annotation_set.mpp:
        collection["cancerseg"] = {"mpp": annotation_set.mpp}
    return collection


def write(annotation_set: AnnotationSet, path: str | os.PathLike) -> str:
    path = os.fspath(path)
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(to_feature_collection(annotation_set), fh)
    os.replace(tmp, path)
    return path
