"""Slide grading reports from a label store (a prediction or rasterised annotations) or an annotation file.

Areas per class in µm² (px² when the scale is unknown; printed in mm², µm²
below 0.01 mm²), the share of each pattern in the graded tumour, the tumour's
share of the slide's tissue, the slide's Gleason score and ISUP grade group,
and the same for every connected tumour region.  Stores are counted at level
0 a band of rows at a time; regions come from a pyramid level no larger than
``REGION_SIDE`` pixels.  Stores of a nucleus model give the nucleus count
(connected components at level 0, counted band by band) and its density.
Annotation files are measured on their polygons, exactly, with overlaps
resolved as the rasteriser paints them (higher pattern wins, exclusions
remove area).
"""

from __future__ import annotations

import csv
import io
import os
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..classes import BENIGN, CLASSES, GLEASON_3, GLEASON_4, GLEASON_5, PAINT_ORDER, TUMOUR, label_for
from ..errors import CancersegError
from .gleason import PATTERN_OF_LABEL, RESEARCH_ONLY, grade

REGION_SIDE = 4096
UM2_PER_MM2 = 1e6
SMALL_MM2 = 0.01  # areas below this are printed in µm²
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

    @property
    def percent_pattern_4(self) -> float | None:
        """The share of pattern 4 in the region's graded tumour when its score is 7 (as ISUP asks)."""
        graded = sum(self.areas.get(k, 0.0) for k in ("3", "4", "5"))
        if not self.gleason_score or score_total(self.gleason_score) != 7 or not graded:
            return None
        return 100.0 * self.areas.get("4", 0.0) / graded


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
    tissue_area: float | None = None  # the slide's tissue (its tissue mask), same unit as areas; None: unknown
    nuclei: int | None = None  # nucleus count of a nucleus model's store; None: not a nucleus store
    image_area: float | None = None  # the whole store's area: a nucleus density's area when the tissue is unknown

    @property
    def tumour_area(self) -> float:
        return float(sum(self.areas.values()))

    @property
    def tumour_percent_of_tissue(self) -> float | None:
        return 100.0 * self.tumour_area / self.tissue_area if self.tissue_area else None

    @property
    def percent_pattern_4(self) -> float | None:
        """The share of pattern 4 in the graded tumour, which ISUP asks for with a score of 7."""
        return self.percent.get("4") if self.gleason_score and score_total(self.gleason_score) == 7 else None

    @property
    def nuclei_per_mm2(self) -> float | None:
        """Nuclei per mm² of tissue (of the whole image when the tissue is unknown)."""
        if self.nuclei is None or self.unit != "um2":
            return None
        area = self.tissue_area or self.image_area
        return self.nuclei / (area / UM2_PER_MM2) if area else None

    def area_text(self, value: float | None) -> str:
        return area_text(value, self.unit)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        areas_key = "areas_um2" if self.unit == "um2" else "areas_px2"
        data[areas_key] = data.pop("areas")
        data["tumour_area"] = self.tumour_area
        if self.unit == "um2":
            data["areas_mm2"] = {k: v / UM2_PER_MM2 for k, v in self.areas.items()}
            data["tumour_area_mm2"] = self.tumour_area / UM2_PER_MM2
            data["tissue_area_mm2"] = self.tissue_area / UM2_PER_MM2 if self.tissue_area is not None else None
        data["tumour_percent_of_tissue"] = self.tumour_percent_of_tissue
        data["percent_pattern_4"] = self.percent_pattern_4
        data["nuclei_per_mm2"] = self.nuclei_per_mm2
        data["research_use_only"] = RESEARCH_ONLY
        return data

    def csv(self) -> str:
        """One row for the slide, then one per region."""
        out = io.StringIO()
        writer = csv.writer(out)
        keys = ["3", "4", "5", "ungraded"]
        unit, per = ("mm2", UM2_PER_MM2) if self.unit == "um2" else ("px2", 1.0)

        def optional(value: float | None) -> float | str:
            return "" if value is None else value

        writer.writerow(["row", "gleason_score", "isup_grade_group", "percent_pattern_4",
                         "tumour_percent_of_tissue", f"tumour_area_{unit}", f"tissue_area_{unit}",
                         *[f"area_{k}_{unit}" for k in keys], "nuclei", "nuclei_per_mm2",
                         "x", "y", "width", "height", "note"])
        writer.writerow(["slide", self.gleason_score or "", self.isup_grade_group or "",
                         optional(self.percent_pattern_4), optional(self.tumour_percent_of_tissue),
                         self.tumour_area / per, optional(None if self.tissue_area is None else self.tissue_area / per),
                         *[self.areas.get(k, 0.0) / per for k in keys], optional(self.nuclei),
                         optional(self.nuclei_per_mm2), "", "", "", "", RESEARCH_ONLY])
        for region in self.regions:
            writer.writerow([f"region {region.region}", region.gleason_score or "", region.isup_grade_group or "",
                             optional(region.percent_pattern_4), "", region.area / per, "",
                             *[region.areas.get(k, 0.0) / per for k in keys], "", "", *region.box, ""])
        return out.getvalue()

    def headline(self) -> str:
        """The grade first, then the amounts: "Gleason 3+4 = 7, ISUP grade group 2 (20% pattern 4); tumour ..."."""
        if self.nuclei is not None:
            return self.nuclei_text()
        if self.gleason_score:
            grade_text = (f"Gleason {self.gleason_score} = {score_total(self.gleason_score)}, "
                          f"ISUP grade group {self.isup_grade_group}")
            if self.percent_pattern_4 is not None:
                grade_text += f" ({self.percent_pattern_4:.0f}% pattern 4)"
        else:
            grade_text = "no Gleason grade (no graded tumour)"
        return f"{grade_text}; {self.tumour_text()}"

    def tumour_text(self) -> str:
        """"tumour 2.31 mm² of 14.2 mm² tissue (16%)", or "tumour 2.31 mm²" when the tissue is unknown."""
        text = f"tumour {self.area_text(self.tumour_area)}"
        if self.tissue_area:
            text += f" of {self.area_text(self.tissue_area)} tissue ({self.tumour_percent_of_tissue:.0f}%)"
        return text

    def nuclei_text(self) -> str:
        density = self.nuclei_per_mm2
        where = f" in {self.area_text(self.tissue_area)} tissue" if self.tissue_area else ""
        return (f"{self.nuclei:,} nuclei{where}" + (f", {density:,.0f} per mm²" if density is not None else ""))

    def text(self) -> str:
        lines = [f"{self.source} ({self.kind}) -- {RESEARCH_ONLY}", f"  {self.headline()}"]
        if self.nuclei is None:
            lines.append(f"  benign {self.area_text(self.benign_area)}")
        for key in ("3", "4", "5", "ungraded"):
            if self.areas.get(key):
                share = f" ({self.percent[key]:.1f}% of graded)" if key in self.percent else ""
                lines.append(f"  {'pattern ' + key if key != 'ungraded' else 'ungraded tumour'}: "
                             f"{self.area_text(self.areas[key])}{share}")
        for region in self.regions:
            lines.append(f"  region {region.region} at {region.box[:2]}: {region.gleason_score or 'ungraded'}"
                         + (f" (ISUP {region.isup_grade_group})" if region.isup_grade_group else "")
                         + f", {self.area_text(region.area)}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines)


def area_text(value: float | None, unit: str = "um2") -> str:
    """An area as a pathologist reads it: "2.31 mm²", "14.2 mm²", "1,937 mm²"; µm² below 0.01 mm².

    ``unit`` "px2" (the scale is unknown) prints level-0 px²; None prints "-"."""
    if value is None:
        return "-"
    if unit != "um2":
        return f"{value:,.0f} px²"
    mm2 = value / UM2_PER_MM2
    if mm2 < SMALL_MM2:
        return f"{value:,.0f} µm²"
    digits = 2 if mm2 < 10 else 1 if mm2 < 100 else 0
    return f"{mm2:,.{digits}f} mm²"


def score_total(score: str) -> int:
    a, b = score.split("+")
    return int(a) + int(b)


def _pattern_areas(areas_by_label: dict[int, float]) -> dict[str, float]:
    return {AREA_KEYS[label]: float(areas_by_label.get(label, 0.0)) for label in TUMOUR_LABELS}


def _summarise(source: str, kind: str, unit: str, mpp: float | None, areas_by_label: dict[int, float],
               regions: list[RegionReport], notes: list[str], tissue_area: float | None = None,
               nuclei: int | None = None) -> SlideReport:
    areas = _pattern_areas(areas_by_label)
    graded = {PATTERN_OF_LABEL[label]: areas_by_label.get(label, 0.0) for label in PATTERN_OF_LABEL}
    total_graded = sum(graded.values())
    percent = {str(p): 100.0 * a / total_graded for p, a in graded.items()} if total_graded else {}
    result = grade(graded)
    if not total_graded and areas["ungraded"]:
        notes = [*notes, "tumour is present but not graded by pattern: no Gleason score"]
    return SlideReport(source, kind, unit, mpp, areas, float(areas_by_label.get(BENIGN, 0.0)), percent,
                       result.primary, result.secondary, result.score, result.isup_grade_group, regions, notes,
                       tissue_area, nuclei)


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


NUCLEUS_NAME = re.compile(r"nucle(us|i)", re.I)  # a nucleus model's class name: "nucleus", "nuclei"
EIGHT_NEIGHBOURS = np.ones((3, 3), bool)  # nuclei touching at a corner are one, as skimage's connectivity=2


class ComponentCounter:
    """Connected components of a mask fed band by band (rows top to bottom), never the whole image at once.

    Each band is labelled on its own; components that touch across a band
    boundary (8-connectivity) are merged with a union-find over the labels of
    the two rows that meet.
    """

    def __init__(self) -> None:
        self.parent: list[int] = [0]  # union-find over band-local labels made global; 0 is background
        self.last_row: np.ndarray | None = None

    def _root(self, label: int) -> int:
        while self.parent[label] != label:
            self.parent[label] = self.parent[self.parent[label]]
            label = self.parent[label]
        return label

    def add(self, mask: np.ndarray) -> None:
        from scipy.ndimage import label as connected

        labels, count = connected(mask, structure=EIGHT_NEIGHBOURS)
        offset = len(self.parent) - 1
        self.parent.extend(range(offset + 1, offset + count + 1))
        if not count:
            self.last_row = np.zeros(mask.shape[1], np.int64)
            return
        labels = np.where(labels > 0, labels.astype(np.int64) + offset, 0)
        if self.last_row is not None:
            above, below = self.last_row, labels[0]
            for shift in (-1, 0, 1):  # straight down and both diagonals
                a = above[max(0, -shift):len(above) - max(0, shift)]
                b = below[max(0, shift):len(below) - max(0, -shift)]
                touching = (a > 0) & (b > 0)
                for u, v in set(zip(a[touching].tolist(), b[touching].tolist())):
                    ru, rv = self._root(u), self._root(v)
                    if ru != rv:
                        self.parent[max(ru, rv)] = min(ru, rv)
        self.last_row = labels[-1]

    @property
    def count(self) -> int:
        return sum(1 for label in range(1, len(self.parent)) if self._root(label) == label)


def _tissue_area(store: Any, notes: list[str]) -> float | None:
    """µm² of tissue on the store's slide (its tissue mask at a small level), or None with a note saying why."""
    from ..preprocess.tissue import slide_tissue_mask

    try:
        slide = store.verified_slide()
        mask, downsample = slide_tissue_mask(slide)
    except Exception as err:  # noqa: BLE001 - OpenSlide's own errors too: the tissue is then unknown, not fatal
        notes.append(f"tissue area unknown ({err}): no tumour % of tissue")
        return None
    slide_mpp = float(store.scale[1]) / store.downsample  # µm per slide level-0 pixel
    return float(mask.sum()) * (downsample * slide_mpp) ** 2


def grade_store(path: str, band_bytes: int = 64 << 20) -> SlideReport:
    """Areas, grade and regions of a label store; a nucleus model's store gives its nucleus count instead."""
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
    nucleus_labels = [int(c["label"]) for c in classes or [] if int(c["label"]) and NUCLEUS_NAME.search(str(c["name"]))]
    if classes and not nucleus_labels and not any(table[int(c["label"])] in TUMOUR_LABELS for c in classes):
        names = ", ".join(str(c["name"]) for c in classes)
        raise CancersegError(f"{path}: its classes ({names}) hold no tumour, Gleason pattern or nucleus: "
                             "nothing to grade or count")
    in_um = store.in_micrometres
    pixel_area = float(store.scale[0] * store.scale[1]) if in_um else 1.0
    level0 = store.levels[0]
    if level0.ndim != 2 or not np.issubdtype(level0.dtype, np.integer):
        raise CancersegError(f"{path}: level 0 is {level0.ndim}-D {level0.dtype}, not 2-D integer labels of a slide")
    known = {int(c["label"]) for c in classes} if classes else {0, *CLASSES}
    raw = np.zeros(len(table), np.int64)  # pixels per stored label value
    nuclei = ComponentCounter() if nucleus_labels else None
    rows = max(1, band_bytes // max(1, level0.shape[1]))
    for y in range(0, level0.shape[0], rows):
        band = store.read(0, (y, y + rows))
        _check_labels(path, band, known, classes, len(table))
        raw += np.bincount(band.ravel(), minlength=len(table))
        if nuclei is not None:
            nuclei.add(np.isin(band, nucleus_labels))
    counts = np.bincount(table, weights=raw, minlength=256).astype(np.int64)  # pixels per DESIGN.md label
    areas_by_label = {label: float(counts[label]) * pixel_area for label in (BENIGN, *TUMOUR_LABELS)}
    notes: list[str] = []
    tissue = _tissue_area(store, notes) if in_um else None
    if nuclei is not None:
        nucleus_area = float(raw[nucleus_labels].sum()) * pixel_area
        image_area = float(level0.shape[0] * level0.shape[1]) * pixel_area
        if tissue is None:
            notes.append("density per mm² of the whole image (the slide's tissue is unknown)")
        else:
            notes.append(f"nuclei cover {area_text(nucleus_area, 'um2' if in_um else 'px2')}")
        report = _summarise(path, "label store", "um2" if in_um else "px2",
                            float(store.scale[1]) / store.downsample if in_um else None, areas_by_label, [],
                            notes, tissue, nuclei.count)
        report.image_area = image_area
        return report

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
    if k:
        notes.append(f"regions measured at store level {k} ({step:g} slide px per pixel)")
    mpp = float(store.scale[1]) / store.downsample if in_um else None
    return _summarise(path, "label store", "um2" if in_um else "px2", mpp, areas_by_label, regions, notes, tissue)


def measured_line(path: str) -> str:
    """What a finished prediction holds, in a pathologist's units: "tumour 2.31 mm² of 14.2 mm² tissue (16%)",
    "Gleason 3+4 = 7, ...", or "1,234 nuclei in 3.10 mm² tissue, 398 per mm²"; why not, for other models."""
    try:
        report = grade_store(path)
    except CancersegError as err:
        return f"no areas: {err}"
    return report.headline() if report.gleason_score or report.nuclei is not None else report.tumour_text()


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
