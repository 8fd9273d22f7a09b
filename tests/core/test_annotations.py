"""Annotations: ImageScope, ASAP and QuPath files, round trips, safe parsing, rasterisation, vectorisation."""

from __future__ import annotations

import json

import numpy as np
import pytest
from shapely.geometry import Point, Polygon, box

from napari_cancerseg import annotations
from napari_cancerseg.annotations import aperio, asap, geojson
from napari_cancerseg.annotations.raster import (
    label_array,
    labelled_shapes,
    labels_to_annotations,
    mask_to_polygons,
    rasterise_region,
)
from napari_cancerseg.classes import BENIGN, GLEASON_3, GLEASON_4, GLEASON_5, TUMOUR, label_for
from napari_cancerseg.errors import ReadError
from napari_cancerseg.io.annotation_files import to_annotations, to_layer_data

from ..conftest import data_path, stand_in_path

TCGA_XML = "annotations/TCGA-EJ-5519-01Z-00-DX1.xml"
TCGA_JSON = "annotations/TCGA-EJ-5519-01Z-00-DX1.qupath.json"
ASAP = "annotations/asap1.xml"


def _polygons(annotation_set):
    return [a for a in annotation_set.annotations if a.geometry.geom_type in ("Polygon", "MultiPolygon")]


def test_tcga_xml_facts():
    parsed = annotations.read(data_path(TCGA_XML))
    assert parsed.source_format == "aperio" and parsed.mpp == pytest.approx(0.252)
    import xml.etree.ElementTree as ET

    root = ET.parse(data_path(TCGA_XML)).getroot()
    assert len(root.findall(".//Region")) == 3 and len(root.findall(".//Vertex")) == 3382  # the README's facts
    assert len(_polygons(parsed)) == 3
    cap = parsed.by_class("CaP")
    assert len(cap) == 1 and cap[0].color == (0, 255, 0)  # LineColor 65280 = G * 256
    assert label_for("CaP") == TUMOUR


def test_xml_and_qupath_give_the_same_polygons():
    xml = _polygons(annotations.read(stand_in_path(TCGA_XML)))
    qupath = _polygons(annotations.read(stand_in_path(TCGA_JSON)))
    assert len(qupath) == len(xml) == 3
    for q in qupath:
        match = max(xml, key=lambda x: x.geometry.intersection(q.geometry).area / x.geometry.union(q.geometry).area)
        assert match.geometry.area == pytest.approx(q.geometry.area, rel=0.005)
        assert match.geometry.intersection(q.geometry).area / match.geometry.union(q.geometry).area > 0.99
        x0, y0, x1, y1 = q.geometry.union(match.geometry).bounds
        downsample = max(1, (x1 - x0) / 2000)  # compare rasters of about 2000 px across
        a = rasterise_region(labelled_shapes([match], unknown=1), int(x0 / downsample), int(y0 / downsample),
                             int((x1 - x0) / downsample) + 2, int((y1 - y0) / downsample) + 2, downsample)
        b = rasterise_region(labelled_shapes([q], unknown=1), int(x0 / downsample), int(y0 / downsample),
                             int((x1 - x0) / downsample) + 2, int((y1 - y0) / downsample) + 2, downsample)
        assert (a & b).sum() / (a | b).sum() >= 0.99


def test_asap_counts_each_type():
    parsed = annotations.read(data_path(ASAP))
    kinds = sorted(a.source["type"] for a in parsed.annotations)
    assert kinds == ["Dot", "Measurement", "Polygon", "Rectangle", "Spline"]
    by_type = {a.source["type"]: a for a in parsed.annotations}
    assert by_type["Dot"].geometry.geom_type == "Point"
    measurement = by_type["Measurement"].geometry
    assert measurement.geom_type == "LineString" and len(measurement.coords) == 2
    assert by_type["Rectangle"].geometry.area == pytest.approx((8336.99023 - 5954.99219) * (26360.7676 - 24058.1719))
    spline = by_type["Spline"].geometry
    for x, y in by_type["Spline"].source["control_points"]:  # the sampled curve passes through its control points
        assert spline.exterior.distance(Point(x, y)) < 1e-9
    assert by_type["Dot"].color == (0xF4, 0xFA, 0x58)


def test_asap_coordinate_order_is_respected(tmp_path):
    path = tmp_path / "shuffled.xml"
    path.write_text("""<ASAP_Annotations><Annotations>
      <Annotation Name="a" Type="Polygon" PartOfGroup="tumor" Color="#FF0000"><Coordinates>
        <Coordinate Order="2" X="10" Y="10"/><Coordinate Order="0" X="0" Y="0"/>
        <Coordinate Order="3" X="0" Y="10"/><Coordinate Order="1" X="10" Y="0"/>
      </Coordinates></Annotation></Annotations>
      <AnnotationGroups><Group Name="tumor" PartOfGroup="None" Color="#00FF00"/></AnnotationGroups>
      </ASAP_Annotations>""")
    parsed = asap.read(str(path))
    item = parsed.annotations[0]
    assert item.geometry.is_valid and item.geometry.area == 100 and item.class_name == "tumor"
    assert item.color == (0, 255, 0)  # the group's colour


def _flat(annotation_set):
    """(class, colour, exclusion, geometry) per polygon: a MultiPolygon may come back as its parts."""
    items = [(a.class_name, a.color, a.exclusion, g) for a in annotation_set.annotations
             for g in getattr(a.geometry, "geoms", [a.geometry])]
    return sorted(items, key=lambda item: item[3].wkt)


def _same(first, second):
    flat_first, flat_second = _flat(first), _flat(second)
    assert len(flat_first) == len(flat_second)
    for a, b in zip(flat_first, flat_second):
        assert a[:3] == b[:3]
        assert a[3].equals_exact(b[3], 1e-9), a[0]


@pytest.mark.parametrize("relative", [TCGA_XML, TCGA_JSON, ASAP])
@pytest.mark.parametrize("fmt, suffix", [("aperio", ".xml"), ("geojson", ".geojson"), ("asap", ".xml")])
def test_round_trip_is_lossless(tmp_path, relative, fmt, suffix):
    original = annotations.read(data_path(relative) if relative == ASAP else stand_in_path(relative))
    if fmt == "aperio" and relative == ASAP:
        original.annotations = [a for a in original.annotations if a.kind != "spline"]  # Aperio has no splines
    path = tmp_path / f"out{suffix}"
    annotations.write(original, path, fmt)
    again = annotations.read(path)
    if fmt == "asap":  # ASAP has no holes: they come back as polygons of '<class> (hole)'
        rebuilt = [a for a in again.annotations if not a.class_name.endswith(" (hole)")]
        holes = sum(len(getattr(p, "interiors", [])) for a in original.annotations
                    for p in getattr(a.geometry, "geoms", [a.geometry]))
        assert len(again.annotations) - len(rebuilt) == holes
        return
    _same(original, again)
    if fmt == "aperio" and original.mpp:
        assert again.mpp == original.mpp


def test_negative_regions_become_holes_or_exclusions(tmp_path):
    path = tmp_path / "holes.xml"
    path.write_text("""<Annotations MicronsPerPixel="0.5"><Annotation Id="1" Name="Gleason 4" LineColor="255"><Regions>
      <Region Id="1" Type="0" NegativeROA="0"><Vertices><Vertex X="0" Y="0"/><Vertex X="100" Y="0"/>
        <Vertex X="100" Y="100"/><Vertex X="0" Y="100"/></Vertices></Region>
      <Region Id="2" Type="0" NegativeROA="1"><Vertices><Vertex X="20" Y="20"/><Vertex X="40" Y="20"/>
        <Vertex X="40" Y="40"/><Vertex X="20" Y="40"/></Vertices></Region>
      <Region Id="3" Type="0" NegativeROA="1"><Vertices><Vertex X="200" Y="200"/><Vertex X="220" Y="200"/>
        <Vertex X="220" Y="220"/></Vertices></Region>
      <Region Id="4" Type="2" NegativeROA="0"><Vertices><Vertex X="300" Y="300"/><Vertex X="340" Y="320"/>
        </Vertices></Region>
      </Regions></Annotation></Annotations>""")
    parsed = aperio.read(str(path))
    square = next(a for a in parsed.annotations if a.kind == "polygon" and not a.exclusion)
    assert square.geometry.area == 100 * 100 - 20 * 20 and len(square.geometry.interiors) == 1
    assert square.color == (255, 0, 0)
    exclusion = next(a for a in parsed.annotations if a.exclusion)
    assert exclusion.geometry.area == 200
    ellipse = next(a for a in parsed.annotations if a.kind == "ellipse")
    assert ellipse.geometry.area == pytest.approx(np.pi * 20 * 10, rel=0.01)
    # the hole is not drawn: rasterised area is the shapely area
    labels = rasterise_region(labelled_shapes(parsed), 0, 0, 400, 400)
    assert (labels == GLEASON_4).sum() == pytest.approx(10000 - 400 + ellipse.geometry.area, rel=0.01)
    assert labels[30, 30] == 0


def test_xml_with_entities_is_refused(tmp_path):
    bomb = tmp_path / "bomb.xml"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;">]>'
                    '<Annotations><Annotation Name="&lol2;"/></Annotations>')
    xxe = tmp_path / "xxe.xml"
    xxe.write_text('<?xml version="1.0"?><!DOCTYPE a [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
                   '<ASAP_Annotations><Annotations><Annotation Name="&e;"/></Annotations></ASAP_Annotations>')
    for path in (bomb, xxe):
        with pytest.raises(ReadError, match="refused") as info:
            annotations.read(path)
        assert str(path) in str(info.value)


def test_malformed_coordinates_say_where(tmp_path):
    path = tmp_path / "bad.xml"
    path.write_text('<Annotations><Annotation Id="7"><Regions><Region Id="3" Type="0"><Vertices>'
                    '<Vertex X="1" Y="2"/><Vertex X="abc" Y="2"/></Vertices></Region></Regions></Annotation>'
                    '</Annotations>')
    with pytest.raises(ReadError, match=r"Annotation Id=7, Region Id=3, Vertex 2 X: 'abc' is not a number"):
        annotations.read(path)
    broken = tmp_path / "broken.json"
    broken.write_text('{"type": "FeatureCollection", "features": [')
    with pytest.raises(ReadError, match="malformed JSON at line 1"):
        annotations.read(broken)
    truncated = tmp_path / "truncated.xml"
    text = open(stand_in_path(TCGA_XML)).read()
    truncated.write_text(text[: len(text) // 2])
    with pytest.raises(ReadError, match="malformed XML"):
        annotations.read(truncated)


@pytest.mark.parametrize("name, label", [("Gleason 3", GLEASON_3), ("G4", GLEASON_4), ("gleason pattern 5", GLEASON_5),
                                         ("GP4", GLEASON_4), ("Benign", BENIGN), ("Tumor", TUMOUR), ("CaP", TUMOUR),
                                         ("Other", None)])
def test_class_names_to_labels(name, label):
    assert label_for(name, unknown=None) == label


def test_overlap_priority_higher_pattern_wins_and_exclusions_win_all():
    from napari_cancerseg.annotations.model import Annotation

    items = [Annotation(box(0, 0, 60, 60), "Gleason 3"), Annotation(box(30, 30, 90, 90), "Gleason 5"),
             Annotation(box(20, 20, 80, 80), "Tumor"), Annotation(box(40, 40, 50, 50), "x", exclusion=True)]
    labels = rasterise_region(labelled_shapes(items), 0, 0, 100, 100)
    assert labels[10, 10] == GLEASON_3 and labels[35, 35] == GLEASON_5 and labels[25, 25] == GLEASON_3
    assert labels[75, 25] == TUMOUR and labels[45, 45] == 0


@pytest.mark.parametrize("level", [0, 1, 2])
def test_rasterised_area_equals_shapely_area(level):
    parsed = annotations.read(data_path(TCGA_XML))
    item = parsed.by_class("Annotation 4")[0] if level else parsed.by_class("Annotation 3")[0]
    downsample = 2**level
    x0, y0, x1, y1 = item.geometry.bounds
    labels = label_array(labelled_shapes([item], unknown=1), (int(y1 / downsample) + 2, int(x1 / downsample) + 2),
                         downsample, chunk=2048)[int(y0 / downsample):, int(x0 / downsample):]
    assert int((labels > 0).sum().compute()) * downsample**2 == pytest.approx(item.geometry.area, rel=0.01)


def test_cap_rasterised_at_level_4_into_a_store(tmp_path):
    from napari_cancerseg.io import stores
    from napari_cancerseg.io.annotation_files import rasterise_to_store

    parsed = annotations.read(data_path(TCGA_XML))
    cap = parsed.by_class("CaP")
    x1, y1 = cap[0].geometry.bounds[2:]
    path = rasterise_to_store(str(tmp_path / "cap.zarr"), labelled_shapes(cap), (int(y1) + 10, int(x1) + 10), 16,
                              parsed.mpp, {"annotations": TCGA_XML})
    (levels, kwargs, layer_type), = stores.read(path)
    assert layer_type == "labels" and kwargs["scale"] == pytest.approx((0.252 * 16, 0.252 * 16))
    assert int((levels[0] == TUMOUR).sum().compute()) * 256 == pytest.approx(cap[0].geometry.area, rel=0.01)


def test_mask_to_polygons_round_trip_with_holes():
    from skimage.draw import disk

    labels = np.zeros((300, 300), np.uint8)
    labels[disk((150, 150), 100)] = 3
    labels[disk((150, 150), 40)] = 0  # a hole
    labels[disk((150, 150), 15)] = 3  # an island in the hole
    labels[disk((40, 250), 25)] = 5
    polygons = mask_to_polygons(labels)
    assert set(polygons) == {3, 5}
    ring = max(polygons[3].geoms, key=lambda p: p.area)
    assert len(ring.interiors) == 1 and len(polygons[3].geoms) == 2
    assert polygons[3].area == (labels == 3).sum()  # pixel-edge outlines: area is the pixel count
    shapes = labelled_shapes(labels_to_annotations(labels, {3: "Gleason 4", 5: "Tumor"}))
    back = rasterise_region(shapes, 0, 0, 300, 300)
    np.testing.assert_array_equal(back, labels)  # exact round trip
    simplified = rasterise_region(labelled_shapes(labels_to_annotations(labels, {3: "Gleason 4", 5: "Tumor"},
                                                                        tolerance=1.0)), 0, 0, 300, 300)
    for value in (3, 5):
        a, b = labels == value, simplified == value
        assert (a & b).sum() / (a | b).sum() > 0.98
    scaled = mask_to_polygons(labels, downsample=4, offset=(10, 20))
    assert scaled[5].area == pytest.approx(polygons[5].area * 16, rel=1e-6)
    assert scaled[5].bounds[0] == pytest.approx((polygons[5].bounds[0] + 10) * 4)


def test_napari_layer_data_round_trip():
    parsed = annotations.read(stand_in_path(TCGA_XML))
    (data, kwargs, layer_type), = to_layer_data(parsed)
    assert layer_type == "shapes" and parsed.mpp and kwargs["scale"] == (parsed.mpp, parsed.mpp)  # TCGA: 0.252
    holes = sum(1 for role in kwargs["features"]["role"] if role == "hole")
    assert holes == sum(len(getattr(p, "interiors", [])) for a in parsed.annotations
                        for p in getattr(a.geometry, "geoms", [a.geometry]))
    back = to_annotations(data, kwargs["shape_type"], kwargs["features"])
    assert sum(a.geometry.area for a in back.annotations) == pytest.approx(
        sum(a.geometry.area for a in parsed.annotations), rel=1e-9)
    assert json.dumps(geojson.to_feature_collection(back))  # exportable


def test_scanline_fill_matches_shapely_point_in_polygon():
    import shapely

    from napari_cancerseg.annotations.raster import fill_rings

    rng = np.random.default_rng(12)
    yy, xx = np.mgrid[0:80, 0:90] + 0.5
    for _ in range(30):
        geometry = shapely.make_valid(Polygon(rng.uniform(-5, 95, (10, 2))))
        polygons = [g for g in getattr(geometry, "geoms", [geometry]) if g.geom_type == "Polygon"]
        rings = [np.asarray(r.coords) for g in polygons for r in (g.exterior, *g.interiors)]
        expected = shapely.contains_xy(shapely.MultiPolygon(polygons), xx, yy)
        np.testing.assert_array_equal(fill_rings((80, 90), rings), expected)


# ---- QuPath's rules for GeoJSON ----------------------------------------------------------------------------

def _rings(geometry: dict):
    polygons = [geometry["coordinates"]] if geometry["type"] == "Polygon" else geometry["coordinates"]
    return [ring for polygon in polygons for ring in polygon]


def test_geojson_written_as_qupath_reads_it(tmp_path):
    """QuPath's rules: a one-part MultiPolygon is a Polygon; the colour is classification.color, [r, g, b]
    integers, beside classification.name; every ring is closed. Checked on the file, parsed back by shapely."""
    from shapely.geometry import MultiPolygon, shape

    from napari_cancerseg.annotations.model import Annotation, AnnotationSet

    holed = Polygon([(0, 0), (100, 0), (100, 80), (0, 80)], [[(20, 20), (40, 20), (40, 40), (20, 40)]])
    two = MultiPolygon([box(200, 0, 260, 50), box(300, 0, 320, 90)])
    items = [Annotation(MultiPolygon([holed]), "Gleason pattern 4", (np.uint8(255), np.uint8(165), np.uint8(0))),
             Annotation(two, "benign", (0, 160, 0)), Annotation(box(500, 500, 510, 530), "Tumor")]
    path = tmp_path / "qupath.geojson"
    geojson.write(AnnotationSet(items), path)
    features = json.loads(path.read_text())["features"]
    assert [f["geometry"]["type"] for f in features] == ["Polygon", "MultiPolygon", "Polygon"]
    for feature, item in zip(features, items):
        geometry = feature["geometry"]
        assert shape(geometry).equals(item.geometry)  # the same area, holes included
        rings = _rings(geometry)
        assert rings and all(ring[0] == ring[-1] and len(ring) >= 4 for ring in rings)
        classification = feature["properties"]["classification"]
        assert classification["name"] == item.class_name
    assert len(_rings(features[0]["geometry"])) == 2  # the hole stays a hole of the one polygon
    colors = [f["properties"]["classification"].get("color") for f in features]
    assert colors == [[255, 165, 0], [0, 160, 0], None]
    assert all(type(c) is int for c in colors[0])  # JSON integers, not 255.0


def test_qupath_export_rewritten_keeps_qupaths_rules(tmp_path):
    """The QuPath export of the TCGA slide, read and written again: QuPath's own rules hold for every feature,
    and it reads back to the same polygons."""
    original = annotations.read(stand_in_path(TCGA_JSON))
    path = tmp_path / "again.geojson"
    geojson.write(original, path)
    features = json.loads(path.read_text())["features"]
    assert len(features) == len(original.annotations)
    for feature in features:
        geometry = feature["geometry"]
        if geometry["type"] == "MultiPolygon":
            assert len(geometry["coordinates"]) > 1
        assert all(ring[0] == ring[-1] for ring in _rings(geometry))
        classification = feature["properties"]["classification"]
        color = classification.get("color")
        assert color is None or (len(color) == 3 and all(type(c) is int and 0 <= c <= 255 for c in color))
    names = [f["properties"]["classification"]["name"] for f in features]
    assert names == [a.class_name for a in original.annotations] and "Tumor" in names
    _same(original, annotations.read(path))
