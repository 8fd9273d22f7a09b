"""Slide grading reports from a label store (a prediction or rasterised annotations) or an annotation file.

Areas per class in µm² (px² when the scale is unknown), the share of each
pattern in the graded tumour, the slide's Gleason score and ISUP grade group,
and the same for every connected tumour region.  Stores are counted at level
0 a band of rows at a time; regions come from a pyramid level no larger than
``REGION_SIDE`` pixels.  Annotation files are measured on their polygons,
exactly, with overlaps resolved as the rasteriser paints them (higher pattern
wins, exclusions remove area).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..classes import BENIGN, CLASSES, GLEASON_3, GLEASON_4, GLEASON_5, PAINT_ORDER, TUMOUR, label_for
from ..errors import CancersegError
from .gleason import PATTERN_OF_LABEL, RESEARCH_ONLY, grade

REGION_SIDE = 4096
TUMOUR_LABELS = (GLEASON_3, GLEASON_4, GLEASON_5, TUMOUR)
AREA_KEYS = {GLEASON_3: "3", GLEASON_4: "4", GLEASON_5: "5", TUMOUR: "ungraded"}


@dataclass
class RegionReport:
    region: int
    box: list[int]  # slide level-0 x, y, width, height
    area: float
    areas: dict[str, float]  # by pattern key: "3", "4", "5", "ungraded"
    gleason_score: str | None
    isup_grade_group: int | None


@dataclass
class SlideReport:
    source: str
    kind: str  # "label store" or "annotations"
    unit: str  # "um2" or "px2"
    mpp: float | None
    areas: dict[str, float]  # "3", "4", "5", "ungraded" tumour areas
    benign_area: float
    percent: dict[str, float]  # share of each pattern in the graded tumour
    primary_pattern: int | None
    secondary_pattern: int | None
    gleason_score: str | None
    isup_grade_group: int | None
    regions: list[RegionReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        areas_key = "areas_um2" if self.unit == "um2" else "areas_px2"
        data[areas_key] = data.pop("areas")
        data["tumour_area"] = float(sum(self.areas.values()))
        data["research_use_only"] = RESEARCH_ONLY
        return data

    def csv(self) -> str:
        """One row for the slide, then one per region."""
        out = io.StringIO()
        writer = csv.writer(out)
        keys = ["3", "4", "5", "ungraded"]
        writer.writerow(["row", "x", "y", "width", "height", f"tumour_area_{self.unit}",
                         *[f"area_{k}_{self.unit}" for k in keys], "gleason_score", "isup_grade_group", "note"])
        writer.writerow(["slide", "", "", "", "", sum(self.areas.values()), *[self.areas.get(k, 0.0) for k in keys],
                         self.gleason_score or "", self.isup_grade_group or "", RESEARCH_ONLY])
        for region in self.regions:
            writer.writerow([f"region {region.region}", *region.box, region.area,
                             *[region.areas.get(k, 0.0) for k in keys], region.gleason_score or "",
                             region.isup_grade_group or "", ""])
        return out.getvalue()

    def text(self) -> str:
        unit = "µm²" if self.unit == "um2" else "px²"
        lines = [f"{self.source} ({self.kind}) -- {RESEARCH_ONLY}"]
        tumour = sum(self.areas.values())
        lines.append(f"  tumour {tumour:,.0f} {unit}, benign {self.benign_area:,.0f} {unit}")
        for key in ("3", "4", "5", "ungraded"):
            if self.areas.get(key):
                share = f" ({self.percent[key]:.1f}% of graded)" if key in self.percent else ""
                lines.append(f"  {'pattern ' + key if key != 'ungraded' else 'ungraded tumour'}: "
                             f"{self.areas[key]:,.0f} {unit}{share}")
        if self.gleason_score:
            lines.append(f"  Gleason score {self.gleason_score} = {score_total(self.gleason_score)}, "
                         f"ISUP grade group {self.isup_grade_group}")
        else:
            lines.append("  no Gleason grade (no graded tumour)")
        for region in self.regions:
            lines.append(f"  region {region.region} at {region.box[:2]}: {region.area:,.0f} {unit}, "
                         f"{region.gleason_score or 'ungraded'}"
                         + (f" (ISUP {region.isup_grade_group})" if region.isup_grade_group else ""))
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def score_total(score: str) -> int:
    a, b = score.split("+")
    return int(a) + int(b)


def _pattern_areas(areas_by_label: dict[int, float]) -> dict[str, float]:
    return {AREA_KEYS[label]: float(areas_by_label.get(label, 0.0)) for label in TUMOUR_LABELS}


def _summarise(source: str, kind: str, unit: str, mpp: float | None, areas_by_label: dict[int, float],
               regions: list[RegionReport], notes: list[str]) -> SlideReport:
    areas = _pattern_areas(areas_by_label)
    graded = {PATTERN_OF_LABEL[label]: areas_by_label.get(label, 0.0) for label in PATTERN_OF_LABEL}
    total_graded = sum(graded.values())
    percent = {str(p): 100.0 * a / total_graded for p, a in graded.items()} if total_graded else {}
    result = grade(graded)
    if not total_graded and areas["ungraded"]:
        notes = [*notes, "tumour is present but not graded by pattern: no Gleason score"]
    return SlideReport(source, kind, unit, mpp, areas, float(areas_by_label.get(BENIGN, 0.0)), percent,
                       result.primary, result.secondary, result.score, result.isup_grade_group, regions, notes)


def _region_report(index: int, box, counts: dict[int, float]) -> RegionReport:
    result = grade({PATTERN_OF_LABEL[label]: counts.get(label, 0.0) for label in PATTERN_OF_LABEL})
    areas = _pattern_areas(counts)
    return RegionReport(index, [int(v) for v in box], float(sum(areas.values())), areas, result.score,
                        result.isup_grade_group)


# ---- label stores --------------------------------------------------------------------------------

def label_mapping(classes: list[dict] | None) -> np.ndarray:
    """A lookup table from a store's labels to DESIGN.md's (by class name); no table: already DESIGN.md's.

    256 entries, more when the class table has larger labels (uint16 stores)."""
    size = max(256, 1 + max((int(c["label"]) for c in classes or []), default=0))
    table = np.arange(size, dtype=np.int64).clip(0, 255).astype(np.uint8)
    if classes:
        table[:] = 0
        for entry in classes:
            mapped = label_for(str(entry["name"]), unknown=None) if int(entry["label"]) else 0
            table[int(entry["label"])] = mapped or 0
    return table


def _check_labels(path: str, band: np.ndarray, known: set[int], classes: list[dict] | None, size: int) -> None:
    """Every label value must be in the class table (a value past it would be counted as nothing, or crash)."""
    low, high = (int(band.min()), int(band.max())) if band.size else (0, 0)
    if low < 0 or high >= size:
        values = np.unique(band)
    else:
        values = np.nonzero(np.bincount(band.ravel(), minlength=size))[0]
    unknown = [int(v) for v in values if int(v) not in known]
    if unknown:
        table = "the store's class table" if classes else "DESIGN.md's class table (the store has none)"
        raise CancersegError(f"{path}: label value{'s' if len(unknown) > 1 else ''} "
                             f"{', '.join(map(str, unknown[:5]))} {'are' if len(unknown) > 1 else 'is'} not in "
                             f"{table}: cannot grade")


def grade_store(path: str, band_bytes: int = 64 << 20) -> SlideReport:
    from skimage.measure import label as connected
    from skimage.measure import regionprops

    from ..io.stores import LabelStore

    store = LabelStore(path, writable=False)
    missing = store.missing_chunks()
    if missing is not None:
        # refused, not reported with a caveat: every area, share and score could change with the missing chunks
        count = f"{missing[0]} of {missing[1]} predicted chunks are missing" if missing[1] else \
            "its run did not finish"
        raise CancersegError(f"{path}: incomplete prediction: {count}; run the prediction again with the same "
                             "--out to finish it, then grade (no area or score is given for an incomplete store)")
    classes = store.attributes.classes
    table = label_mapping(classes)
    if classes and not any(table[int(c["label"])] in TUMOUR_LABELS for c in classes):
        names = ", ".join(str(c["name"]) for c in classes)
        raise CancersegError(f"{path}: its classes ({names}) hold no tumour or Gleason pattern: nothing to grade")
    in_um = store.in_micrometres
    pixel_area = float(store.scale[0] * store.scale[1]) if in_um else 1.0
    level0 = store.levels[0]
    if level0.ndim != 2 or not np.issubdtype(level0.dtype, np.integer):
        raise CancersegError(f"{path}: level 0 is {level0.ndim}-D {level0.dtype}, not 2-D integer labels of a slide")
    known = {int(c["label"]) for c in classes} if classes else {0, *CLASSES}
    raw = np.zeros(len(table), np.int64)  # pixels per stored label value
    rows = max(1, band_bytes // max(1, level0.shape[1]))
    for y in range(0, level0.shape[0], rows):
        band = store.read(0, (y, y + rows))
        _check_labels(path, band, known, classes, len(table))
        raw += np.bincount(band.ravel(), minlength=len(table))
    counts = np.bincount(table, weights=raw, minlength=256).astype(np.int64)  # pixels per DESIGN.md label
    areas_by_label = {label: float(counts[label]) * pixel_area for label in (BENIGN, *TUMOUR_LABELS)}

    k = next((k for k, lvl in enumerate(store.levels) if max(lvl.shape) <= REGION_SIDE), len(store.levels) - 1)
    coarse = table[store.read(k, (0, store.levels[k].shape[0]))]
    components = connected(np.isin(coarse, TUMOUR_LABELS), connectivity=2)
    step = 2 ** k * store.downsample
    coarse_area = pixel_area * 4 ** k
    regions = []
    for index, props in enumerate(regionprops(components), start=1):
        y0, x0, y1, x1 = props.bbox
        window = coarse[y0:y1, x0:x1][props.image]
        region_counts = {label: float((window == label).sum()) * coarse_area for label in TUMOUR_LABELS}
        regions.append(_region_report(index, (x0 * step, y0 * step, (x1 - x0) * step, (y1 - y0) * step),
                                      region_counts))
    notes = [f"regions measured at store level {k} ({step:g} slide px per pixel)"] if k else []
    mpp = float(store.scale[1]) / store.downsample if in_um else None
    return _summarise(path, "label store", "um2" if in_um else "px2", mpp, areas_by_label, regions, notes)


# ---- annotation files ----------------------------------------------------------------------------

def grade_annotations(path: str, mpp: float | None = None, mapping: dict[str, int] | None = None) -> SlideReport:
    from shapely.ops import unary_union

    from ..annotations import read as read_annotations
    from ..annotations.raster import labelled_shapes

    annotation_set = read_annotations(path)
    mpp = mpp or annotation_set.mpp
    shapes = labelled_shapes(annotation_set, unknown=None, mapping=mapping)
    notes = []
    unknown = sorted({a.class_name for a in annotation_set.annotations
                      if not a.exclusion and label_for(a.class_name, None, mapping) is None})
    if unknown:
        notes.append(f"classes not graded (no rule or --map for them): {', '.join(unknown)}")
    # what each label keeps after overlaps: the later in paint order wins, exclusions remove area
    covered = unary_union(shapes.exclusions) if shapes.exclusions else None
    resolved = {}
    for label in reversed(PAINT_ORDER):
        union = unary_union([g for g, lab in shapes.shapes if lab == label]) if any(
            lab == label for _, lab in shapes.shapes) else None
        if union is None:
            continue
        resolved[label] = union.difference(covered) if covered is not None else union
        covered = union if covered is None else covered.union(union)
    pixel_area = mpp * mpp if mpp else 1.0
    areas_by_label = {label: geometry.area * pixel_area for label, geometry in resolved.items()}
    tumour = unary_union([resolved[label] for label in TUMOUR_LABELS if label in resolved]) if any(
        label in resolved for label in TUMOUR_LABELS) else None
    regions = []
    parts = list(getattr(tumour, "geoms", [tumour])) if tumour is not None and not tumour.is_empty else []
    for index, part in enumerate(sorted(parts, key=lambda g: (g.bounds[1], g.bounds[0])), start=1):
        counts = {label: resolved[label].intersection(part).area * pixel_area for label in TUMOUR_LABELS
                  if label in resolved}
        x0, y0, x1, y1 = part.bounds
        regions.append(_region_report(index, (x0, y0, x1 - x0, y1 - y0), counts))
    if not mpp:
        notes.append("no µm per pixel in the file or --mpp: areas in level-0 px²")
    return _summarise(os.fspath(path), "annotations", "um2" if mpp else "px2", mpp, areas_by_label, regions, notes)


def grade_path(path: str, mpp: float | None = None, mapping: dict[str, int] | None = None) -> SlideReport:
    """A store (directory) or an annotation file."""
    if os.path.isdir(path):
        return grade_store(path)
    return grade_annotations(path, mpp, mapping)


#: the DESIGN.md class names, for a mapping given on the command line as NAME=PATTERN
PATTERN_NAMES = {"3": GLEASON_3, "4": GLEASON_4, "5": GLEASON_5, "benign": BENIGN, "tumour": TUMOUR,
                 "ungraded": TUMOUR, **{name: label for label, (name, _) in CLASSES.items()}}


def parse_mapping(items: list[str] | None) -> dict[str, int]:
    """``["CaP=4", "Stroma=benign"]`` -> {"CaP": 4's label, ...}."""
    mapping = {}
    for item in items or []:
        name, _, target = item.rpartition("=")
        if not name or target.strip().lower() not in {k.lower() for k in PATTERN_NAMES}:
            raise CancersegError(f"--map {item!r}: write CLASS=3|4|5|benign|tumour")
        mapping[name] = next(v for k, v in PATTERN_NAMES.items() if k.lower() == target.strip().lower())
    return mapping
