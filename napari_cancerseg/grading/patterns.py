"""Gleason pattern overlay: the patch classifier grades every tumour tile of a segmentation.

For each tile of the classifier's size (at its µm/px) that holds tumour in
the segmentation store, the classifier (benign, pattern 3, 4, 5) gives a class
and that tile's tumour pixels take its label; everything else keeps the
segmentation's label (mapped to DESIGN.md's table by class name).  The result
is a multiscale label store with DESIGN.md's colours, graded by ``cancerseg
grade``.  Runs where Keras may run: the CLI or a model process, never napari.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import dask.array as da
import numpy as np

from ..classes import BENIGN, GLEASON_3, GLEASON_4, GLEASON_5, TUMOUR, label_for, rgba_255
from ..errors import CancersegError, WriteError
from ..io import stores
from ..io.stores import LabelStore
from ..io.stores.output import is_creation_leftover
from ..io.wsi import SlideHandle, read_level
from .report import TUMOUR_LABELS, label_mapping


@dataclass
class OverlaySummary:
    out: str
    tiles: int  # tiles with tumour, classified
    tiles_per_label: dict[str, int]


def classifier_labels(classes: list[dict]) -> np.ndarray:
    """The DESIGN.md label of each classifier output (benign, patterns), by class name."""
    labels = [label_for(str(c["name"]), unknown=None) for c in sorted(classes, key=lambda c: int(c["label"]))]
    if any(label not in (BENIGN, GLEASON_3, GLEASON_4, GLEASON_5) for label in labels):
        names = ", ".join(str(c["name"]) for c in classes)
        raise CancersegError(f"the classifier's classes ({names}) are not benign and Gleason patterns")
    return np.asarray(labels, np.uint8)


def is_pattern_store(path: str) -> bool:
    """A pattern overlay this plugin wrote (its attributes name the classifier that coloured it)."""
    try:
        return "patterns_from" in stores.read_attributes(path).extra
    except CancersegError:
        return False


def refused_output(out: str) -> str | None:
    """Why ``out`` cannot take a pattern overlay (said to the user), or None: free, an empty folder, or an earlier
    pattern overlay (replaced whole when the new one is complete).  Anything else, a prediction or annotations of
    ours included, is never replaced."""
    if not out.lower().rstrip("/").endswith(".zarr"):
        return f"{out}: a pattern overlay is saved as an OME-Zarr store: choose a name ending in .zarr"
    if not os.path.lexists(out) or is_pattern_store(out) or _empty_folder(out):
        return None
    return f"{out} already exists and is not a pattern overlay: nothing was changed; choose another path"


def _empty_folder(path: str) -> bool:
    """Free to build in: an empty folder, or an interrupted creation (zarr metadata only, no data)."""
    return os.path.isdir(path) and not os.path.islink(path) and (not os.listdir(path) or is_creation_leftover(path))


SCAN_BAND_PIXELS = 1 << 24  # segmentation pixels read at once to find the tumour tiles (~3 bytes each in memory)


def _tumour_tiles(seg: LabelStore, table: np.ndarray, footprint: float, rows: int, cols: int,
                  min_tumour: float) -> list[tuple[int, int]]:
    """The tiles (row, col) whose share of tumour pixels is at least ``min_tumour``, row-major.

    Tile ``(r, c)`` covers segmentation rows ``ceil(r * footprint)`` up to ``ceil((r + 1) * footprint)`` (and the
    same for columns), clipped to the level. Level 0 is read in bands of whole tile rows, about
    ``SCAN_BAND_PIXELS`` each, and counted per tile with ``np.add.reduceat``: memory stays one band whatever the
    slide, and each chunk is decoded once or twice instead of once per tile (16,384 tiles: 8.0 s read one by one,
    0.3-0.5 s so).
    The share is the same float64 count / area the per-tile mean gave.
    """
    height, width = seg.levels[0].shape[:2]
    if not height or not width:
        return []
    edges_y = [min(height, math.ceil(r * footprint)) for r in range(rows + 1)]
    edges_x = np.asarray([min(width, math.ceil(c * footprint)) for c in range(cols + 1)])
    widths = np.diff(edges_x)
    starts = np.minimum(edges_x[:-1], width - 1)  # an empty tile's start may be the width itself
    is_tumour = np.isin(table, TUMOUR_LABELS)  # stored label -> tumour, one lookup per pixel
    band_rows = max(1, int(SCAN_BAND_PIXELS // width // max(1.0, footprint)))
    tiles: list[tuple[int, int]] = []
    for r0 in range(0, rows, band_rows):
        r1 = min(rows, r0 + band_rows)
        y0, y1 = edges_y[r0], edges_y[r1]
        if y1 <= y0:
            continue
        # tumour pixels per tile column (reduceat sums [start, next start)), then per tile row; an empty tile
        # (footprint under 1 px) gets reduceat's single pixel, so it is never counted (widths > 0 below)
        per_column = np.add.reduceat(is_tumour[seg.read(0, (y0, y1))], starts, axis=1, dtype=np.int64)
        for r in range(r0, r1):
            top, bottom = edges_y[r] - y0, edges_y[r + 1] - y0
            if bottom <= top:
                continue
            share = per_column[top:bottom].sum(axis=0) / np.maximum((bottom - top) * widths, 1)
            tiles.extend((r, int(c)) for c in np.flatnonzero((widths > 0) & (share >= min_tumour)))
    return tiles


def pattern_overlay(slide: str, segmentation: str, classifier, out: str, min_tumour: float = 0.05, batch: int = 16,
                    progress: Callable[[int, int], None] | None = None, overwrite: bool = False) -> OverlaySummary:
    """Grade the tumour of ``segmentation`` tile by tile with ``classifier`` (a loaded classifier bundle).

    ``out`` must be free; ``overwrite=True`` replaces an earlier pattern overlay, never anything else.
    ``progress(done, total)`` counts tumour tiles classified: once with 0 when they are known, then after each batch.
    """
    seg = LabelStore(segmentation, writable=False)
    missing = seg.missing_chunks()
    if missing is not None:  # chunks not predicted would be graded as background
        raise CancersegError(f"{segmentation}: incomplete prediction ({missing[0]} of {missing[1]} chunks missing): "
                             "finish it with the same --out first")
    # refused before an hour of classifying, not after
    exists = stores.check_output(out, overwrite, "pattern overlay")
    if exists and overwrite and not is_pattern_store(out) and not _empty_folder(out):
        raise WriteError(out, "is a napari-cancerseg store but not a pattern overlay: nothing there was changed; "
                              "choose another output path")
    table = label_mapping(seg.attributes.classes)
    to_label = classifier_labels(classifier.info.classes)
    size = classifier.recipe.tile_size
    handle = SlideHandle.shared(slide)
    read = read_level(slide, classifier.recipe.mpp)
    level, downsample = read.level, read.downsample
    footprint = size * downsample / seg.downsample  # a tile's side in segmentation pixels
    seg0 = seg.levels[0]
    rows, cols = int(np.ceil(seg0.shape[0] / footprint)), int(np.ceil(seg0.shape[1] / footprint))

    def window(row: int, col: int):  # pixel y is in tile floor(y / footprint), as ``block`` below assigns it
        return (slice(math.ceil(row * footprint), min(seg0.shape[0], math.ceil((row + 1) * footprint))),
                slice(math.ceil(col * footprint), min(seg0.shape[1], math.ceil((col + 1) * footprint))))

    tumour_tiles = _tumour_tiles(seg, table, footprint, rows, cols, min_tumour)
    assigned: dict[tuple[int, int], int] = {}
    if progress:  # the total is known before the first (slow) batch: a bar at 0 of N, not an empty one
        progress(0, len(tumour_tiles))
    for start in range(0, len(tumour_tiles), batch):
        members = tumour_tiles[start:start + batch]
        tiles = []
        for r, c in members:
            y0, x0 = window(r, c)[0].start * seg.downsample, window(r, c)[1].start * seg.downsample
            tiles.append(handle.read(level, int(round(x0 / downsample)), int(round(y0 / downsample)), size, size))
        predicted = classifier.classify(np.stack(tiles)).argmax(axis=1)
        assigned.update({tile: int(to_label[k]) for tile, k in zip(members, predicted)})
        if progress:
            progress(min(start + batch, len(tumour_tiles)), len(tumour_tiles))
    tile_labels = np.full((rows + 1, cols + 1), TUMOUR, np.uint8)  # tumour in tiles below min_tumour: ungraded
    for (r, c), label in assigned.items():
        tile_labels[r, c] = label

    def block(labels: np.ndarray, block_info=None) -> np.ndarray:
        (y0, y1), (x0, x1) = block_info[0]["array-location"]
        mapped = table[labels]
        out_block = mapped.copy()
        tumour = np.isin(mapped, TUMOUR_LABELS)
        if not tumour.any():
            return out_block
        ys, xs = np.nonzero(tumour)
        out_block[ys, xs] = tile_labels[((ys + y0) // footprint).astype(int), ((xs + x0) // footprint).astype(int)]
        return out_block

    # da.map_blocks is what Array.map_blocks calls; dask's wrapper of the method hides its signature from mypy
    level0 = da.map_blocks(block, stores.lazy_level(segmentation, seg.attributes.levels[0].path), dtype=np.uint8)
    dropped = ("classes", "corrections", "format", "expected_chunks", "complete")
    properties = {**{k: v for k, v in seg.properties.items() if k not in dropped},
                  "downsample": seg.downsample, "slide_path": os.path.abspath(slide),
                  "segmentation": os.path.abspath(segmentation),
                  "patterns_from": {"name": classifier.info.name, "version": classifier.info.version,
                                    "tile": size, "level": level, "min_tumour": min_tumour}}
    # named by slide and classifier, as predictions are: two slides' or two classifiers' overlays are told apart
    name = f"{os.path.splitext(os.path.basename(slide))[0]} · {classifier.info.name} {classifier.info.version} patterns"
    stores.write_labels(out, stores.label_pyramid(level0), scale=seg.scale, units=seg.units, name=name,
                        colors=rgba_255(), properties=properties, overwrite=overwrite)
    names = {BENIGN: "benign", GLEASON_3: "3", GLEASON_4: "4", GLEASON_5: "5"}
    counts = {names[label]: sum(v == label for v in assigned.values()) for label in names}
    return OverlaySummary(out, len(assigned), counts)
