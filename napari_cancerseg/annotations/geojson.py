"""GeoJSON (FeatureCollection, a bare list of features as QuPath exports, or one Feature).

Polygon and MultiPolygon keep their interior rings as holes; the class comes
from QuPath's ``properties.classification`` (``name``, and ``colorRGB`` as a
signed ARGB integer or ``color`` as [r, g, b]), else ``properties.name``.
"""

from __future__ import annotations

import json
import os
from typing import Any

from shapely.geometry import mapping, shape

from ..errors import ReadError
from .model import Annotation, AnnotationSet, check_coordinates, check_size, microns_per_pixel, repair

KINDS = {"Polygon": "polygon", "MultiPolygon": "polygon", "LineString": "line", "MultiLineString": "line",
         "Point": "points", "MultiPoint": "points"}


def _color(classification: dict, path: str, where: str) -> tuple[int, int, int] | None:
    """QuPath's colour: [r, g, b] or a signed ARGB integer; a ReadError naming the feature for anything else."""
    color = classification.get("color")
    if color is not None:
        if (isinstance(color, (list, tuple)) and len(color) >= 3
                and all(isinstance(c, (int, float)) and not isinstance(c, bool) and 0 <= c <= 255 for c in color[:3])):
            return tuple(int(c) for c in color[:3])  # type: ignore[return-value]
        raise ReadError(path, f"{where}: classification color {color!r} is not [r, g, b] with values 0-255")
    if "colorRGB" in classification:
        value = classification["colorRGB"]
        if not isinstance(value, int) or isinstance(value, bool):
            raise ReadError(path, f"{where}: classification colorRGB {value!r} is not an integer (QuPath writes "
                                  "a signed ARGB integer such as -65536 for red)")
        value &= 0xFFFFFF  # signed Java ARGB -> RGB
        return ((value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF)
    return None


def _short(value) -> str:
    """A value as the file wrote it, cut to fit in a message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _text(value, path: str, where: str, what: str) -> str | None:
    if value is None or isinstance(value, str):
        return value or None
    raise ReadError(path, f"{where}: {what} {value!r} is not text")


def _features(data, path: str) -> list[dict]:
    if isinstance(data, list):
        return data
    if isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features", [])
        if not isinstance(features, list):
            raise ReadError(path, f"the FeatureCollection's 'features' is {type(features).__name__} "
                                  f"{_short(features)}, not a list of features")
        return features
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
    mpp = None
    if isinstance(data, dict) and isinstance(data.get("cancerseg"), dict) and data["cancerseg"].get("mpp") is not None:
        mpp = microns_per_pixel(data["cancerseg"]["mpp"], path, "cancerseg.mpp")  # what write() records
    for index, feature in enumerate(_features(data, path)):
        where = f"feature {index + 1}"
        if not isinstance(feature, dict):
            raise ReadError(path, f"{where} is {type(feature).__name__} {_short(feature)}, not a GeoJSON Feature")
        geometry_data = feature.get("geometry")
        if not geometry_data:
            notes.append(f"{where}: no geometry, skipped")
            continue
        if not isinstance(geometry_data, dict):
            raise ReadError(path, f"{where}: geometry {_short(geometry_data)} is not a GeoJSON geometry object")
        kind = KINDS.get(geometry_data.get("type"))  # type: ignore[arg-type]
        if kind is None:
            notes.append(f"{where}: geometry type {geometry_data.get('type')!r} skipped")
            continue
        try:
            geometry = shape(geometry_data)
        except (ValueError, TypeError, AttributeError, IndexError, KeyError) as err:
            raise ReadError(path, f"{where}: malformed {geometry_data.get('type')} coordinates: {err}") from None
        # NaN or 1e300 coordinates would give NaN or infinite areas (and invalid JSON when written)
        check_coordinates(geometry, path, where)
        geometry, repaired = repair(geometry)
        if repaired:
            notes.append(f"{where}: self-intersecting outline repaired into valid polygons")
        properties = feature.get("properties") or {}
        if not isinstance(properties, dict):
            raise ReadError(path, f"{where}: properties {_short(properties)} is not an object")
        classification = properties.get("classification") or {}
        if isinstance(classification, str):  # some tools write the class name alone
            classification = {"name": classification}
        if not isinstance(classification, dict):
            raise ReadError(path, f"{where}: classification {_short(classification)} is neither a name nor "
                                  "an object with a 'name'")
        extra = properties.get("cancerseg") or {}
        if not isinstance(extra, dict):
            raise ReadError(path, f"{where}: properties.cancerseg {_short(extra)} is not an object")
        class_name = (_text(classification.get("name"), path, where, "classification name")
                      or _text(properties.get("name"), path, where, "name")
                      or _text(properties.get("class"), path, where, "class") or "Unclassified")
        annotations.append(Annotation(
            geometry, class_name, _color(classification, path, where), extra.get("kind", kind),
            exclusion=bool(extra.get("exclusion", False)),
            source={"id": feature.get("id"), "properties": {k: v for k, v in properties.items() if k != "cancerseg"},
                    **({"corners": extra["corners"]} if "corners" in extra else {}),
                    **({"control_points": extra["control_points"]} if "control_points" in extra else {})}))
    return AnnotationSet(annotations, path=path, source_format="geojson", mpp=mpp, notes=notes)


def _closed(ring: Any) -> list[list[float]]:
    """A ring as GeoJSON lists, its first point repeated at its end (RFC 7946; QuPath refuses open rings)."""
    points = [[float(x), float(y)] for x, y, *_ in ring]
    if points and points[0] != points[-1]:
        points.append(list(points[0]))
    return points


def qupath_geometry(geometry: Any) -> dict:
    """A shapely geometry as QuPath writes and reads it: a MultiPolygon of one part is that Polygon, and every
    polygon ring is closed."""
    if geometry.geom_type == "MultiPolygon" and len(geometry.geoms) == 1:
        geometry = geometry.geoms[0]
    data = dict(mapping(geometry))
    if data["type"] == "Polygon":
        data["coordinates"] = [_closed(ring) for ring in data["coordinates"]]
    elif data["type"] == "MultiPolygon":
        data["coordinates"] = [[_closed(ring) for ring in part] for part in data["coordinates"]]
    return data


def to_feature_collection(annotation_set: AnnotationSet) -> dict:
    """QuPath's GeoJSON: one Feature per annotation, its class in ``properties.classification`` (``name``, and
    ``color`` as [r, g, b] integers), geometries as :func:`qupath_geometry` makes them."""
    features = []
    for item in annotation_set.annotations:
        classification: dict[str, Any] = {"name": item.class_name}
        if item.color:
            classification["color"] = [int(c) for c in item.color[:3]]
        extra: dict[str, Any] = {"kind": item.kind, "exclusion": item.exclusion}
        for key in ("corners", "control_points"):
            if item.source.get(key):
                extra[key] = item.source[key]
        features.append({"type": "Feature", "geometry": qupath_geometry(item.geometry),
                         "properties": {"objectType": "annotation", "classification": classification,
                                        "cancerseg": extra}})
    collection: dict[str, Any] = {"type": "FeatureCollection", "features": features}
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
