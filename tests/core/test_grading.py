"""Gleason grading: the biopsy rules, areas from stores and annotation files, regions, the report's schema."""

from __future__ import annotations

import csv
import io
import json

import numpy as np
import pytest
from shapely.geometry import box as rectangle

from napari_cancerseg.annotations import write as write_annotations
from napari_cancerseg.annotations.model import Annotation, AnnotationSet
from napari_cancerseg.classes import BENIGN, GLEASON_3, GLEASON_4, GLEASON_5, TUMOUR
from napari_cancerseg.errors import CancersegError
from napari_cancerseg.grading.gleason import grade, isup_grade_group
from napari_cancerseg.grading.report import (
    ComponentCounter,
    area_text,
    grade_annotations,
    grade_store,
    parse_mapping,
)
from napari_cancerseg.io import stores

from ..conftest import data_path, stand_in_path


@pytest.mark.parametrize("areas, score, group", [
    ({3: 100}, "3+3", 1),
    ({3: 60, 4: 40}, "3+4", 2),
    ({4: 60, 3: 40}, "4+3", 3),
    ({4: 100}, "4+4", 4),
    ({3: 90, 5: 10}, "3+5", 4),
    ({5: 70, 3: 30}, "5+3", 4),
    ({4: 70, 5: 30}, "4+5", 5),
    ({5: 80, 4: 20}, "5+4", 5),
    ({5: 100}, "5+5", 5),
    ({4: 97, 3: 3}, "4+4", 4),  # a lower pattern under 5% does not count
    ({4: 95, 3: 5}, "4+3", 3),  # at 5% it does
    ({3: 99.9, 5: 0.1}, "3+5", 4),  # any amount of a higher pattern counts
    ({3: 60, 4: 35, 5: 5}, "3+5", 4),  # biopsy: primary + highest
    ({4: 50, 3: 50}, "4+3", 3),  # a tie: the higher pattern is primary
])
def test_biopsy_grading_rules(areas, score, group):
    result = grade(areas)
    assert result.score == score and result.isup_grade_group == group
    assert result.total == sum(int(p) for p in score.split("+"))


def test_no_tumour_no_grade():
    assert grade({}).score is None and grade({3: 0, 4: 0}).isup_grade_group is None
    with pytest.raises(ValueError):
        isup_grade_group(2, 3)


def tcga_area_mm2(xml: str) -> float:
    """The tumour area of the TCGA XML, read with ElementTree and shapely only (no code under test)."""
    import xml.etree.ElementTree as ElementTree

    from shapely.geometry import Polygon
    from shapely.ops import unary_union

    root = ElementTree.parse(xml).getroot()
    mpp = float(root.get("MicronsPerPixel"))
    polygons = [Polygon([(float(v.get("X")), float(v.get("Y"))) for v in region.iter("Vertex")]).buffer(0)
                for region in root.iter("Region")]
    return unary_union(polygons).area * mpp ** 2 / 1e6


def _store(tmp_path, labels, mpp=0.5, classes=None):
    path = str(tmp_path / "labels.zarr")
    stores.write_labels(path, stores.label_pyramid(labels), scale=(mpp, mpp), units=("um", "um"), name="test",
                        properties={"downsample": 1.0, **({"classes": classes} if classes else {})})
    return path


def test_store_areas_percentages_and_regions(tmp_path):
    labels = np.zeros((1200, 1600), np.uint8)
    labels[100:300, 100:400] = GLEASON_4   # region 1: 60,000 px of pattern 4 ...
    labels[100:300, 400:500] = GLEASON_3   # ... next to 20,000 px of pattern 3 (touching: one region)
    labels[800:1000, 1000:1100] = GLEASON_3  # region 2: 20,000 px of pattern 3 alone
    labels[500:520, 500:520] = BENIGN
    report = grade_store(_store(tmp_path, labels))
    px = 0.25  # µm² per pixel at 0.5 µm/px
    assert report.areas == {"3": 40000 * px, "4": 60000 * px, "5": 0.0, "ungraded": 0.0}
    assert report.benign_area == 400 * px and report.unit == "um2"
    assert report.percent == {"3": 40.0, "4": 60.0, "5": 0.0}
    assert report.gleason_score == "4+3" and report.isup_grade_group == 3
    first, second = report.regions
    assert first.box == [100, 100, 400, 200] and first.gleason_score == "4+3" and first.area == 80000 * px
    assert second.box == [1000, 800, 100, 200] and second.gleason_score == "3+3" and second.isup_grade_group == 1
    # score 7: ISUP's share of pattern 4 in the graded tumour, for the slide and for region 1 (60,000 of 80,000 px)
    assert report.percent_pattern_4 == 60.0 and first.percent_pattern_4 == 75.0 and second.percent_pattern_4 is None
    assert report.tissue_area is None and any("tissue area unknown" in n for n in report.notes)  # no slide
    data = report.to_dict()
    assert data["areas_um2"]["4"] == 15000.0 and data["research_use_only"] == "research use only, not for diagnosis"
    assert data["areas_mm2"]["4"] == 15000.0 / 1e6 and data["percent_pattern_4"] == 60.0
    json.dumps(data)
    rows = list(csv.reader(io.StringIO(report.csv())))
    header, slide = rows[0], dict(zip(rows[0], rows[1]))
    assert header[:3] == ["row", "gleason_score", "isup_grade_group"]  # the grade first
    assert slide["row"] == "slide" and slide["gleason_score"] == "4+3" and slide["isup_grade_group"] == "3"
    assert float(slide["tumour_area_mm2"]) == pytest.approx(100000 * px / 1e6)
    assert [r[0] for r in rows[2:]] == ["region 1", "region 2"]
    # printed in mm² (25,000 µm² = 0.025 mm²), the grade before the amounts
    assert report.headline() == "Gleason 4+3 = 7, ISUP grade group 3 (60% pattern 4); tumour 0.03 mm²"
    assert "e+" not in report.text() and "px²" not in report.text()


@pytest.mark.parametrize("um2, text", [
    (2.31e6, "2.31 mm²"), (14.2e6, "14.2 mm²"), (1.937e8, "194 mm²"), (1.2345e9, "1,234 mm²"),
    (0.01e6, "0.01 mm²"), (9999.4, "9,999 µm²"), (12.0, "12 µm²"),
])
def test_areas_print_in_mm2_and_small_ones_in_um2(um2, text):
    assert area_text(um2) == text
    assert area_text(um2, "px2").endswith(" px²") and area_text(None) == "-"


def test_a_nucleus_store_counts_nuclei_band_by_band_on_real_labels(tmp_path):
    from PIL import Image
    from skimage.measure import label as connected

    instances = np.asarray(Image.open(stand_in_path("nuclei/image01_labels.png")))
    mask = (instances > 0).astype(np.uint8)  # a nucleus model's output: background 0, nucleus 1
    expected = int(connected(mask, connectivity=2).max())  # independently: the whole image at once
    assert expected > 50  # a real tile holds many nuclei
    path = _store(tmp_path, mask, classes=[{"label": 0, "name": "background"}, {"label": 1, "name": "nucleus"}])
    whole = grade_store(path)
    banded = grade_store(path, band_bytes=7 * mask.shape[1])  # 7-row bands: nuclei are cut by many boundaries
    assert whole.nuclei == banded.nuclei == expected
    area_mm2 = mask.size * 0.25 / 1e6  # 0.5 µm/px, no slide: the density is per mm² of the image
    assert banded.nuclei_per_mm2 == pytest.approx(expected / area_mm2)
    assert banded.gleason_score is None and f"{expected:,} nuclei" in banded.headline()
    assert banded.to_dict()["nuclei"] == expected


def test_component_counter_merges_across_band_boundaries():
    rng = np.random.default_rng(7)
    from scipy.ndimage import label as connected

    mask = rng.random((90, 70)) > 0.6  # many touching shapes, diagonals included
    expected = connected(mask, structure=np.ones((3, 3)))[1]
    for rows in (1, 2, 13, 90):
        counter = ComponentCounter()
        for y in range(0, 90, rows):
            counter.add(mask[y:y + rows])
        assert counter.count == expected, rows


def test_a_store_without_tumour_or_nuclei_cannot_be_graded(tmp_path):
    labels = np.ones((64, 64), np.uint8)
    path = _store(tmp_path, labels, classes=[{"label": 0, "name": "background"}, {"label": 1, "name": "stroma"}])
    with pytest.raises(CancersegError, match="no tumour, Gleason pattern or nucleus"):
        grade_store(path)
    from napari_cancerseg.grading.report import measured_line

    assert measured_line(path).startswith("no areas: ") and path in measured_line(path)


def test_tumour_share_of_the_slides_tissue(tmp_path):
    from napari_cancerseg.annotations.raster import labelled_shapes
    from napari_cancerseg.io.annotation_files import rasterise_to_store
    from napari_cancerseg.preprocess.tissue import slide_tissue_mask

    slide = data_path("wsi/CMU-1-Small-Region.svs")
    path = str(tmp_path / "a.geojson")
    write_annotations(AnnotationSet([Annotation(rectangle(400, 400, 1400, 1200), "Gleason 3")]), path)
    from napari_cancerseg.annotations import read

    store = rasterise_to_store(str(tmp_path / "a.zarr"), labelled_shapes(read(path)), (2967, 2220), 1.0, 0.499,
                               properties={"slide_path": slide})
    report = grade_store(store)
    mask, downsample = slide_tissue_mask(slide)
    tissue = float(mask.sum()) * (downsample * 0.499) ** 2
    slide_area = 2220 * 2967 * 0.499 ** 2
    assert report.tissue_area == pytest.approx(tissue) and 0.3 * slide_area < tissue < slide_area
    assert report.tumour_area == pytest.approx(1000 * 800 * 0.499 ** 2)
    assert report.tumour_percent_of_tissue == pytest.approx(100 * report.tumour_area / tissue)
    assert f"of {area_text(tissue)} tissue ({100 * report.tumour_area / tissue:.0f}%)" in report.tumour_text()
    # the Predict dock's result line: the grade, then tumour mm² of tissue
    from napari_cancerseg.grading.report import measured_line

    assert measured_line(store) == f"Gleason 3+3 = 6, ISUP grade group 1; {report.tumour_text()}"


def test_a_model_store_is_graded_through_its_class_names(tmp_path):
    labels = np.zeros((64, 64), np.uint8)
    labels[:32] = 1  # the model's label 1 is "Gleason pattern 5", not DESIGN.md's label 1 (benign)
    labels[32:40] = 2
    classes = [{"label": 0, "name": "background"}, {"label": 1, "name": "Gleason pattern 5"},
               {"label": 2, "name": "G3"}]
    report = grade_store(_store(tmp_path, labels, classes=classes))
    assert report.gleason_score == "5+3" and report.benign_area == 0


def test_tcga_annotation_is_ungraded_tumour(tmp_path, capsys):
    from napari_cancerseg.cli import main

    xml = data_path("annotations/TCGA-EJ-5519-01Z-00-DX1.xml")
    report = grade_annotations(xml)
    assert report.mpp == pytest.approx(0.252) and report.unit == "um2"
    assert report.areas["ungraded"] > 0 and report.gleason_score is None and report.isup_grade_group is None
    assert any("not graded" in n for n in report.notes)
    # the QuPath export of the same annotation gives the same area (its class 'Tumor' is tumour too)
    qupath = grade_annotations(data_path("annotations/TCGA-EJ-5519-01Z-00-DX1.qupath.json"), mpp=0.252)
    assert qupath.areas["ungraded"] == pytest.approx(report.areas["ungraded"], rel=1e-4)
    assert len(report.regions) == len(qupath.regions) >= 1
    # a configurable mapping grades it: CaP as pattern 4
    assert main(["grade", xml, "--map", "CaP=4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["gleason_score"] == "4+4" and data["isup_grade_group"] == 4
    assert data["areas_um2"]["4"] == pytest.approx(report.areas["ungraded"])
    # the area, independently: the union of the XML's polygons (shapely) x 0.252² µm²/px², in mm²
    assert data["tumour_area_mm2"] == pytest.approx(tcga_area_mm2(xml), rel=1e-6)
    assert 190 < data["tumour_area_mm2"] < 200  # ImageScope's own AreaMicrons: 193.7 mm² for the large region
    with pytest.raises(CancersegError):
        parse_mapping(["CaP=7"])


def test_annotation_overlaps_exclusions_and_names(tmp_path):
    path = str(tmp_path / "graded.geojson")
    write_annotations(AnnotationSet([
        Annotation(rectangle(0, 0, 100, 100), "Gleason 3"),
        Annotation(rectangle(50, 0, 150, 100), "G4"),  # overlaps pattern 3 by 50 x 100: pattern 4 wins
        Annotation(rectangle(1000, 1000, 1010, 1010), "gleason pattern 5"),
        Annotation(rectangle(60, 40, 70, 50), "hole", exclusion=True),
        Annotation(rectangle(500, 500, 600, 600), "stroma"),
        Annotation(rectangle(700, 700, 710, 710), "mystery"),
    ]), path)
    report = grade_annotations(path, mpp=2.0)
    assert report.areas["3"] == pytest.approx(50 * 100 * 4)
    assert report.areas["4"] == pytest.approx((100 * 100 - 100) * 4)
    assert report.areas["5"] == pytest.approx(100 * 4) and report.benign_area == pytest.approx(10000 * 4)
    assert report.gleason_score == "4+5" and report.isup_grade_group == 5
    assert [r.gleason_score for r in report.regions] == ["4+3", "5+5"]
    assert any("mystery" in n for n in report.notes)


def test_grade_command_on_a_rasterised_annotation_store_matches_the_file(tmp_path, capsys):
    from napari_cancerseg.annotations.raster import labelled_shapes
    from napari_cancerseg.cli import main
    from napari_cancerseg.io.annotation_files import rasterise_to_store

    path = str(tmp_path / "a.geojson")
    write_annotations(AnnotationSet([Annotation(rectangle(10, 10, 410, 210), "Gleason 4"),
                                     Annotation(rectangle(10, 300, 110, 400), "Gleason 3")]), path)
    from napari_cancerseg.annotations import read

    store = rasterise_to_store(str(tmp_path / "a.zarr"), labelled_shapes(read(path)), (512, 512), 1.0, 0.5)
    assert main(["grade", store, "--json", "--csv", str(tmp_path / "g.csv")]) == 0
    from_store = json.loads(capsys.readouterr().out)
    from_file = grade_annotations(path, mpp=0.5).to_dict()
    assert from_store["gleason_score"] == from_file["gleason_score"] == "4+3"
    for key in ("3", "4"):
        assert from_store["areas_um2"][key] == pytest.approx(from_file["areas_um2"][key])
    assert (tmp_path / "g.csv").read_text().startswith("row,")


def test_quadratic_weighted_kappa_matches_hand_computation():
    pytest.importorskip("keras")
    from napari_cancerseg.models.metrics import per_class_metrics, quadratic_weighted_kappa

    assert quadratic_weighted_kappa([0, 1, 2, 3], [0, 1, 2, 3], 4) == 1.0
    # O = [[1, 1], [0, 2]], E = [[0.5, 1.5], [0.5, 1.5]], W = [[0, 1], [1, 0]]: 1 - 1 / 2
    assert quadratic_weighted_kappa([0, 1, 1, 1], [0, 0, 1, 1], 2) == pytest.approx(0.5)
    # three classes, errors two classes apart weigh four times errors one apart
    near = quadratic_weighted_kappa([1, 1, 2], [0, 1, 2], 3)
    far = quadratic_weighted_kappa([2, 1, 2], [0, 1, 2], 3)
    assert far < near
    scores = per_class_metrics([0, 1, 1, 1], [0, 0, 1, 1], ["a", "b"])
    assert scores["a"] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3), "support": 2}


def test_gleason_classifier_trains_on_real_tiles_and_colours_the_tumour(tmp_path):
    pytest.importorskip("keras")
    from napari_cancerseg.annotations import read
    from napari_cancerseg.annotations.raster import labelled_shapes
    from napari_cancerseg.cli import main
    from napari_cancerseg.grading.patterns import pattern_overlay
    from napari_cancerseg.io.annotation_files import rasterise_to_store
    from napari_cancerseg.io.wsi import SlideHandle
    from napari_cancerseg.models.bundle import Recipe, bundle_info, load_bundle, save_bundle
    from napari_cancerseg.models.classifier import build_classifier
    from napari_cancerseg.training.classifier import CLASS_NAMES, patch_class
    from napari_cancerseg.training.patches import extract_patches

    slide = data_path("wsi/CMU-1-Small-Region.svs")
    graded = str(tmp_path / "graded.geojson")
    write_annotations(AnnotationSet([Annotation(rectangle(200, 300, 700, 800), "Gleason 3"),
                                     Annotation(rectangle(1200, 1500, 1700, 2000), "Gleason 4"),
                                     Annotation(rectangle(200, 2000, 600, 2400), "benign")]), graded)
    patches = str(tmp_path / "patches.zarr")
    extract_patches(slide, patches, size=64, annotations=graded)
    untrained = str(tmp_path / "gleason.keras")
    save_bundle(build_classifier(4, (64, 64, 3), dense_units=16), untrained, name="gleason", version="1.0.0",
                architecture={"builder": "efficientnetb0_classifier", "task": "gleason"},
                recipe=Recipe(tile_size=64, overlap=0, mpp=0.5, divisor=1),
                classes=[{"label": k, "name": n} for k, n in enumerate(CLASS_NAMES)])
    assert main(["train", "--task", "gleason", "--patches", patches, "--init", untrained, "--epochs", "1",
                 "--steps", "2", "--batch", "8", "--lr", "0.01"]) == 0
    trained = str(tmp_path / "gleason-v1.1.0.keras")
    card = bundle_info(trained).card
    assert sum(card["class_counts"]["train"].values()) > 0 and card["class_counts"]["train"]["Gleason pattern 5"] == 0
    assert card["class_weights"]["Gleason pattern 5"] == 0.0 and "held-out" in card["metrics"]["note"]
    tiles = np.stack([SlideHandle.shared(slide).read(0, x, 500, 64, 64) for x in (300, 900, 1500)])
    before, after = load_bundle(untrained).classify(tiles), load_bundle(trained).classify(tiles)
    assert before.shape == (3, 4) and np.allclose(after.sum(axis=1), 1, atol=1e-4)
    assert np.abs(before - after).max() > 1e-4  # two steps moved it
    assert patch_class(np.full((4, 4), 3, np.uint8)) == 2 and patch_class(np.zeros((4, 4), np.uint8)) is None

    # the overlay: tumour of a segmentation graded tile by tile, the rest untouched
    tumour = str(tmp_path / "tumour.geojson")
    write_annotations(AnnotationSet([Annotation(rectangle(100, 100, 900, 700), "tumor"),
                                     Annotation(rectangle(1000, 1000, 1300, 1300), "benign")]), tumour)
    segmentation = rasterise_to_store(str(tmp_path / "seg.zarr"), labelled_shapes(read(tumour)), (2967, 2220), 1.0,
                                      0.499, properties={"slide_path": slide})
    out = str(tmp_path / "patterns.zarr")
    summary = pattern_overlay(slide, segmentation, load_bundle(trained), out)
    assert summary.tiles == sum(summary.tiles_per_label.values()) > 0
    result = np.asarray(stores.open_store(out)[0][0])
    source = np.asarray(stores.open_store(segmentation)[0][0])
    # tumour takes the classifier's labels, except slivers in tiles under 5% tumour, which stay ungraded
    assert np.isin(result[source == TUMOUR], [BENIGN, GLEASON_3, GLEASON_4, GLEASON_5]).mean() > 0.99
    np.testing.assert_array_equal(result[source != TUMOUR], source[source != TUMOUR])
    tile = result[128:192, 128:192]  # one classifier tile (64 px at level 0) inside the tumour: one label
    assert len(np.unique(tile)) == 1
    report = grade_store(out)
    assert report.gleason_score is None or report.isup_grade_group in range(1, 6)
    # the report's areas are the overlay's own pixel counts at 0.499 µm/px, graded by the rules
    counted = {p: float((result == label).sum()) * 0.499 ** 2
               for p, label in ((3, GLEASON_3), (4, GLEASON_4), (5, GLEASON_5))}
    assert [report.areas[str(p)] for p in counted] == pytest.approx(list(counted.values()))
    assert report.gleason_score == grade(counted).score


def test_overlay_reports_its_tiles_through_the_protocol_and_refuses_a_store_not_its_own(tmp_path, capsys):
    """`cancerseg overlay --json` counts the tumour tiles classified, 0 to the total, as the dock's bar reads them."""
    pytest.importorskip("keras")
    from napari_cancerseg.annotations import read
    from napari_cancerseg.annotations.raster import labelled_shapes
    from napari_cancerseg.cli import main
    from napari_cancerseg.io.annotation_files import rasterise_to_store
    from napari_cancerseg.models.bundle import Recipe, save_bundle
    from napari_cancerseg.models.classifier import build_classifier
    from napari_cancerseg.processes import Done, Error, Progress, Started, parse
    from napari_cancerseg.training.classifier import CLASS_NAMES

    slide = data_path("wsi/CMU-1-Small-Region.svs")
    tumour = str(tmp_path / "tumour.geojson")
    write_annotations(AnnotationSet([Annotation(rectangle(100, 100, 612, 356), "tumor")]), tumour)
    segmentation = rasterise_to_store(str(tmp_path / "seg.zarr"), labelled_shapes(read(tumour)), (2967, 2220), 1.0,
                                      0.499, properties={"slide_path": slide})
    classifier = str(tmp_path / "gleason.keras")
    save_bundle(build_classifier(4, (64, 64, 3), dense_units=8), classifier, name="gleason", version="0",
                architecture={"builder": "efficientnetb0_classifier"},
                recipe=Recipe(tile_size=64, overlap=0, mpp=0.5, divisor=1),
                classes=[{"label": k, "name": n} for k, n in enumerate(CLASS_NAMES)])
    # 64 px tiles at level 0 (0.499 µm/px is the level nearest 0.5): columns 1-9 (64..640 over x 100..612) and
    # rows 1-5 (64..384 over y 100..356) each hold at least 5% tumour (the edge ones 28/64 and 36/64 of a side)
    total = 9 * 5
    out = str(tmp_path / "patterns.zarr")
    capsys.readouterr()
    assert main(["overlay", slide, "--segmentation", segmentation, "--model", classifier, "--out", out, "--json",
                 "--batch", "16"]) == 0
    messages = [m for m in map(parse, capsys.readouterr().out.splitlines()) if m is not None]
    assert isinstance(messages[0], Started) and isinstance(messages[-1], Done)
    progress = [m for m in messages if isinstance(m, Progress)]
    assert [(p.stage, p.done, p.total) for p in progress] == [("tiles", n, total) for n in (0, 16, 32, total)]
    assert messages[-1].data["tiles"] == total == sum(messages[-1].data["tiles_per_label"].values())
    assert messages[-1].data["out"] == out and stores.read_attributes(out).extra["patterns_from"]["tile"] == 64

    # the segmentation is a store of ours but not a pattern overlay: refused before any tile, left as it was
    before = sorted(p.name for p in (tmp_path / "seg.zarr").rglob("*"))
    assert main(["overlay", slide, "--segmentation", segmentation, "--model", classifier, "--out", segmentation,
                 "--json", "--overwrite"]) == 2
    messages = [m for m in map(parse, capsys.readouterr().out.splitlines()) if m is not None]
    assert not any(isinstance(m, Progress) for m in messages) and isinstance(messages[-1], Error)
    assert segmentation in messages[-1].message and "not a pattern overlay" in messages[-1].message
    assert sorted(p.name for p in (tmp_path / "seg.zarr").rglob("*")) == before


@pytest.mark.parametrize("footprint", [64.0, 37.3, 7.5, 1.0, 0.7])
def test_overlay_finds_the_tumour_tiles_a_tile_by_tile_mean_finds(tmp_path, monkeypatch, footprint):
    """The banded scan picks exactly the tiles whose own window is at least 5% tumour, whatever the footprint
    (fractional, one pixel, under one pixel) and however the bands fall (a band of a few tile rows here)."""
    from shapely.geometry import Point

    from napari_cancerseg.annotations.raster import labelled_shapes
    from napari_cancerseg.grading import patterns
    from napari_cancerseg.grading.report import TUMOUR_LABELS, label_mapping
    from napari_cancerseg.io.annotation_files import rasterise_to_store
    from napari_cancerseg.io.stores import LabelStore

    shapes = AnnotationSet([Annotation(Point(120, 90).buffer(70), "tumour"), Annotation(rectangle(10, 200, 250, 215),
                            "tumour"), Annotation(rectangle(180, 20, 240, 120), "benign")])
    store = rasterise_to_store(str(tmp_path / "seg.zarr"), labelled_shapes(shapes), (300, 257), 1.0, 0.5)
    seg = LabelStore(store, writable=False)
    table = label_mapping(seg.attributes.classes)
    labels = np.asarray(seg.levels[0])
    height, width = labels.shape
    rows, cols = int(np.ceil(height / footprint)), int(np.ceil(width / footprint))
    expected = []
    for r in range(rows):
        for c in range(cols):
            window = labels[int(np.ceil(r * footprint)):min(height, int(np.ceil((r + 1) * footprint))),
                            int(np.ceil(c * footprint)):min(width, int(np.ceil((c + 1) * footprint)))]
            if window.size and np.isin(table[window], TUMOUR_LABELS).mean() >= 0.05:
                expected.append((r, c))
    assert 0 < len(expected) < rows * cols
    monkeypatch.setattr(patterns, "SCAN_BAND_PIXELS", width * 3 * max(1, int(footprint)))  # bands of ~3 tile rows
    assert patterns._tumour_tiles(seg, table, footprint, rows, cols, 0.05) == expected
