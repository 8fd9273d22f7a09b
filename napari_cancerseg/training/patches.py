"""Image/mask patch datasets from annotations and corrected regions, at the model's µm/px.

A dataset is a zarr group: ``images`` (N, H, W, 3) uint8, ``masks`` (N, H, W)
uint8 and ``coords`` (N, 4: level-0 x, y, width, height), with the slide, the
level read, µm/px and the class table in its attributes.  Each image is
OpenSlide's read of its coords at that level; each mask is the labels there
(rasterised annotations, or the corrected store resampled by nearest neighbour).

Patches are cut on a grid over every annotation's bounding box and every
corrected region, grown by one patch so the surroundings come too.  Patches
without tumour are kept (a model that never sees benign tissue or glass
learns to call everything tumour) and the classes are balanced: every
category (tumour, benign, other, background) keeps at most as many patches
as the tumour category has (or, without tumour, the largest foreground one).
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..classes import BENIGN, CLASSES, GLEASON_3, GLEASON_4, GLEASON_5, TUMOUR, label_for
from ..errors import CancersegError
from ..io.stores import PatchDataset, check_output
from ..io.wsi import SlideHandle, read_level

TUMOUR_LABELS = (GLEASON_3, GLEASON_4, GLEASON_5, TUMOUR)


@dataclass
class PatchSummary:
    out: str
    patches: int
    categories: dict[str, int]  # patches kept per category
    candidates: dict[str, int]  # before balancing
    patches_per_class: dict[str, int]  # patches containing each class
    level: int
    mpp: float | None
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def grid_boxes(boxes: list[tuple[float, float, float, float]], footprint: float,
               slide_size: tuple[int, int]) -> list[tuple[int, int]]:
    """Level-0 origins of patches (``footprint`` level-0 px square) tiling each box grown by one patch."""
    width, height = slide_size
    origins = set()
    for x0, y0, x1, y1 in boxes:
        gx0, gy0 = max(0.0, x0 - footprint), max(0.0, y0 - footprint)
        gx1, gy1 = min(width, x1 + footprint), min(height, y1 + footprint)
        for row in range(max(1, math.ceil((gy1 - gy0) / footprint))):
            for col in range(max(1, math.ceil((gx1 - gx0) / footprint))):
                x = min(gx0 + col * footprint, width - footprint)
                y = min(gy0 + row * footprint, height - footprint)
                origins.add((int(round(max(0.0, x))), int(round(max(0.0, y)))))
    return sorted(origins, key=lambda o: (o[1], o[0]))


def category(mask: np.ndarray, class_names: dict[int, str]) -> str:
    present = {int(v) for v in np.unique(mask)} - {0}
    grades = {v: label_for(class_names.get(v, ""), unknown=None) for v in present}
    if any(g in TUMOUR_LABELS for g in grades.values()):
        return "tumour"
    if any(g == BENIGN for g in grades.values()):
        return "benign"
    return "other" if present else "background"


def balance(categories: list[str], seed: int = 0) -> list[int]:
    """Indices kept: each category capped at the tumour count (or the largest foreground count)."""
    counts = Counter(categories)
    foreground = {c: n for c, n in counts.items() if c != "background"}
    cap = counts["tumour"] if counts["tumour"] else max(foreground.values(), default=counts["background"])
    rng = np.random.default_rng(seed)
    kept = []
    for name in counts:
        members = [i for i, c in enumerate(categories) if c == name]
        if len(members) > cap:
            members = sorted(rng.choice(members, cap, replace=False).tolist())
        kept.extend(members)
    return sorted(kept)


def extract_patches(slide: str, out: str, size: int, mpp: float | None = None, annotations: str | None = None,
                    store: str | None = None, seed: int = 0, mapping: dict[str, int] | None = None,
                    overwrite: bool = False) -> PatchSummary:
    """Cut a balanced patch dataset of ``slide`` from an annotation file and/or a corrected label store.

    ``out`` must be free; ``overwrite=True`` replaces a dataset of ours, never anything else.
    """
    from ..annotations import read as read_annotations
    from ..annotations.raster import labelled_shapes, rasterise_region

    if not annotations and not store:
        raise CancersegError("give annotations, a corrected store, or both")
    check_output(out, overwrite, "patch dataset")  # refused before any patch is read
    read = read_level(slide, mpp)
    level, downsample, level_mpp = read.level, read.downsample, read.mpp
    handle = SlideHandle.shared(slide)
    footprint = size * downsample
    notes = [note] if (note := read.note(mpp, "patches read at")) else []
    sources: list[tuple[str, Any, list]] = []  # (kind, labels source, level-0 patch origins)
    class_names = {label: name for label, (name, _) in CLASSES.items()}
    if annotations:
        annotation_set = read_annotations(annotations)
        shapes = labelled_shapes(annotation_set, unknown=TUMOUR, mapping=mapping)
        boxes = [g.bounds for g, _ in shapes.shapes]
        sources.append(("annotations", shapes, grid_boxes(boxes, footprint, handle.slide.dimensions)))
    if store:
        from ..io.stores import LabelStore

        labels = LabelStore(store, writable=False)
        boxes = [(x, y, x + w, y + h) for x, y, w, h in (c["box"] for c in labels.corrections)]
        if not boxes:
            raise CancersegError(f"{store}: no corrected region yet: accept a correction first")
        if not annotations:
            class_names = labels.classes
        sources.append(("store", labels, grid_boxes(boxes, footprint, handle.slide.dimensions)))

    origins, masks, coords = [], [], []  # origins: level pixels, read once a patch is kept
    for kind, source, grid in sources:
        for x, y in grid:
            lx, ly = int(round(x / downsample)), int(round(y / downsample))
            if kind == "annotations":
                mask = rasterise_region(source, lx, ly, size, size, downsample)
            else:
                mask = _store_mask(source, lx * downsample, ly * downsample, size, downsample)
            coords.append((int(round(lx * downsample)), int(round(ly * downsample)), int(round(footprint)),
                           int(round(footprint))))
            masks.append(mask)
            origins.append((lx, ly))
    categories = [category(m, class_names) for m in masks]
    kept = balance(categories, seed)
    if not kept:
        raise CancersegError(f"{annotations or store}: no patches: the annotations or regions are empty")
    kept_categories = Counter(categories[i] for i in kept)
    per_class = Counter(class_names.get(int(v), str(v)) for i in kept for v in np.unique(masks[i]))
    summary = PatchSummary(out, len(kept), dict(kept_categories), dict(Counter(categories)), dict(per_class), level,
                           level_mpp, notes)
    with PatchDataset.create(out, len(kept), size, overwrite) as dataset:  # appears at ``out`` only when whole
        for n, index in enumerate(kept):
            lx, ly = origins[index]
            dataset.images[n] = handle.read(level, lx, ly, size, size)
            dataset.masks[n] = masks[index]
        dataset.coords[:] = np.asarray([coords[i] for i in kept])
        dataset.attributes.update({
            "slide": os.path.basename(slide), "slide_path": os.path.abspath(slide), "level": level,
            "downsample": downsample, "mpp": level_mpp, "size": size,
            "classes": [{"label": k, "name": v} for k, v in sorted(class_names.items())],
            "sources": {"annotations": annotations and os.path.abspath(annotations),
                        "store": store and os.path.abspath(store)},
            "summary": summary.to_dict(),
        })
    return summary


def _store_mask(labels, x: float, y: float, size: int, downsample: float) -> np.ndarray:
    """A store's level-0 labels under a patch, by nearest neighbour (pixel centres) when the scales differ."""
    base = labels.levels[0]
    scale = downsample / labels.downsample  # patch pixels -> store pixels
    rows = np.floor((y / downsample + np.arange(size) + 0.5) * scale).astype(int)
    cols = np.floor((x / downsample + np.arange(size) + 0.5) * scale).astype(int)
    inside_rows, inside_cols = (rows >= 0) & (rows < base.shape[0]), (cols >= 0) & (cols < base.shape[1])
    window = np.asarray(base[rows[inside_rows].min():rows[inside_rows].max() + 1,
                             cols[inside_cols].min():cols[inside_cols].max() + 1])
    mask = np.zeros((size, size), np.uint8)
    mask[np.ix_(inside_rows, inside_cols)] = window[np.ix_(rows[inside_rows] - rows[inside_rows].min(),
                                                           cols[inside_cols] - cols[inside_cols].min())]
    return mask
