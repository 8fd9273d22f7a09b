"""Correcting a multiscale label store one region at a time.

napari cannot paint multiscale Labels, so an annotator edits a region: its
labels at one pyramid level become a plain array (``read_region``), and
``accept_region`` writes the edit back to level 0 by nearest neighbour and
rebuilds only the pyramid tiles above that region.  Pyramid level k holds
level-0 pixel (2^k i, 2^k j) (stride subsampling, see ``stores``), so a level-0
pixel (y, x) takes the edit's pixel (y >> k, x >> k) -- but only where the
annotator changed that pixel: level-0 detail under untouched pixels is kept.
So accepting an unchanged region changes nothing, and reading an accepted
region back gives the edit.

Boxes are (x, y, width, height) in slide level-0 pixels; a store's level 0 is
the slide level it was made at (``downsample`` in its attributes).
"""

from __future__ import annotations

import datetime
import math
import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import zarr

from ...errors import CancersegError, ReadError
from .attributes import level_folder, read_attributes, write_attributes


@dataclass(frozen=True)
class Region:
    """A region of a store: the level-0 box asked for, the pyramid level, and that level's pixel window."""

    box: tuple[int, int, int, int]  # slide level-0 x, y, width, height
    level: int
    rows: tuple[int, int]  # [start, stop) at that level
    cols: tuple[int, int]

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows[1] - self.rows[0], self.cols[1] - self.cols[0]


@dataclass
class Correction:
    slide: str
    box: list[int]
    level: int
    time: str
    pixels_changed: int
    labels_before: dict[str, int]
    labels_after: dict[str, int]


class LabelStore:
    """A multiscale label store (a prediction or rasterised annotations) opened for correction."""

    def __init__(self, path: str | os.PathLike, writable: bool = True):
        self.path = os.fspath(path)
        if not os.path.isdir(self.path):
            raise CancersegError(f"{self.path}: not a multiscale label store (no such folder)")
        try:
            self.attributes = read_attributes(self.path)
        except ReadError as err:
            raise CancersegError(f"{self.path}: not a multiscale label store ({err.problem})") from None
        try:
            self.levels = [zarr.open_array(level_folder(self.path, lvl.path), mode="r+" if writable else "r")
                           for lvl in self.attributes.levels]
        except (OSError, KeyError, ValueError, TypeError) as err:
            raise CancersegError(f"{self.path}: not a multiscale label store ({type(err).__name__}: {err})") from None
        self.properties: dict[str, Any] = self.attributes.properties
        self.downsample = self.attributes.scale_downsample  # store level 0 vs slide level 0
        self.colors = dict(self.attributes.colors)
        self.scale, self.units = tuple(self.attributes.scale[-2:]), tuple(self.attributes.units[-2:])

    def read(self, level: int, rows: tuple[int, int], cols: tuple[int, int] | None = None) -> np.ndarray:
        """Rows (and columns) of a level; a corrupt chunk is named, not reported as a codec's error code."""
        array = self.levels[level]
        window = (slice(*rows),) if cols is None else (slice(*rows), slice(*cols))
        try:
            return np.asarray(array[window])
        except (RuntimeError, ValueError, TypeError) as err:
            raise ReadError(self.path, f"level {self.attributes.levels[level].path!r}, rows {rows[0]}..{rows[1]}: "
                                       f"a chunk there is corrupt (it does not decode: {err})") from None

    def missing_chunks(self) -> tuple[int, int] | None:
        """(missing, expected) chunks when this is an incomplete prediction (see ``prediction.missing_chunks``)."""
        from .prediction import missing_chunks

        return missing_chunks(self.path, self.attributes)

    @property
    def probabilities(self):
        """A prediction's uint8 probabilities (classes, rows, cols), or None for other label stores."""
        folder = os.path.join(self.path, "probabilities")
        return zarr.open_array(folder, mode="r") if os.path.isdir(folder) else None

    def predicted(self) -> np.ndarray:
        """bool over a prediction's chunk grid: the chunks predicted (or corrected)."""
        from .prediction import predicted_chunks

        return predicted_chunks(zarr.open_group(self.path, mode="r"))

    def verified_slide(self) -> str:
        """The slide the store names, after checking it is the slide the store was made from (issue 15, item 8)."""
        from .identity import verified_slide

        return verified_slide(self)

    @property
    def in_micrometres(self) -> bool:
        return all(u == "um" for u in self.units)

    @property
    def slide(self) -> str:
        """The slide the store was made from (predictions and rasterised annotations record it)."""
        return self.attributes.slide_path or ""

    @property
    def classes(self) -> dict[int, str]:
        """Label -> name, from the store's class table (predictions) or DESIGN.md's table."""
        table = self.attributes.classes
        if table:
            return {int(c["label"]): str(c["name"]) for c in table}
        from ...classes import CLASSES

        return {label: name for label, (name, _) in CLASSES.items()}

    def region(self, box: tuple[int, int, int, int], level: int) -> Region:
        """The pixel window of ``box`` at pyramid ``level``, clipped to the store."""
        if not 0 <= level < len(self.levels):
            raise CancersegError(f"{self.path}: level {level} does not exist (the store has {len(self.levels)})")
        x, y, width, height = box
        step = self.downsample * 2 ** level
        height_k, width_k = self.levels[level].shape
        rows = (max(0, math.floor(y / step)), min(height_k, math.ceil((y + height) / step)))
        cols = (max(0, math.floor(x / step)), min(width_k, math.ceil((x + width) / step)))
        if rows[0] >= rows[1] or cols[0] >= cols[1]:
            raise CancersegError(f"{self.path}: the box {tuple(box)} lies outside the slide")
        return Region((int(x), int(y), int(width), int(height)), level, rows, cols)

    def read_region(self, region: Region) -> np.ndarray:
        return self.read(region.level, region.rows, region.cols)

    def accept_region(self, region: Region, labels: np.ndarray) -> Correction:
        """Write an edited region back into level 0 and rebuild the pyramid above it; record the correction."""
        labels = np.asarray(labels)
        if labels.shape != region.shape:
            raise CancersegError(f"{self.path}: the edit is {labels.shape}, the region {region.shape}")
        before = self.read_region(region)
        k = region.level
        level0 = self.levels[0]
        y0, y1 = region.rows[0] << k, min(level0.shape[0], region.rows[1] << k)
        x0, x1 = region.cols[0] << k, min(level0.shape[1], region.cols[1] << k)
        rows = ((np.arange(y0, y1) >> k) - region.rows[0])[:, None]
        cols = ((np.arange(x0, x1) >> k) - region.cols[0])[None, :]
        changed = (labels != before)[rows, cols]
        merged = np.where(changed, labels[rows, cols], np.asarray(level0[y0:y1, x0:x1])).astype(level0.dtype)
        level0[y0:y1, x0:x1] = merged
        self._write_probabilities(y0, y1, x0, x1, merged)
        for j in range(1, len(self.levels)):  # each level from the one below, over the edited window only
            y0, y1, x0, x1 = y0 >> 1, (y1 + 1) >> 1, x0 >> 1, (x1 + 1) >> 1
            below, here = self.levels[j - 1], self.levels[j]
            y1, x1 = min(y1, here.shape[0]), min(x1, here.shape[1])
            here[y0:y1, x0:x1] = below[2 * y0:2 * y1:2, 2 * x0:2 * x1:2]
        values_before, counts_before = np.unique(before, return_counts=True)
        values_after, counts_after = np.unique(labels, return_counts=True)
        correction = Correction(
            slide=self.slide, box=list(region.box), level=k,
            time=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            pixels_changed=int((before != labels).sum()),
            labels_before={str(v): int(c) for v, c in zip(values_before, counts_before)},
            labels_after={str(v): int(c) for v, c in zip(values_after, counts_after)})
        self.attributes = read_attributes(self.path).with_properties(
            corrections=[*self.attributes.corrections, asdict(correction)])
        write_attributes(self.path, self.attributes)
        self.properties = self.attributes.properties
        return correction

    def _write_probabilities(self, y0: int, y1: int, x0: int, x1: int, labels: np.ndarray) -> None:
        """An annotator's labels are certain: a prediction's probabilities become one-hot there."""
        folder = os.path.join(self.path, "probabilities")
        if not os.path.isdir(folder):
            return
        probabilities = zarr.open_array(folder, mode="r+")
        classes = np.arange(probabilities.shape[0], dtype=labels.dtype)[:, None, None]
        probabilities[:, y0:y1, x0:x1] = np.where(labels[None] == classes, 255, 0).astype(np.uint8)

    @property
    def corrections(self) -> list[dict[str, Any]]:
        return list(self.attributes.corrections)


