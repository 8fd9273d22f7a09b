"""Geometry that must be undone exactly: centred pad/crop, and the mammogram breast crop.

Masks are only ever indexed, never interpolated: resizing goes through integer
index maps (nearest neighbour), so label values survive every round trip.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PadCrop:
    """A centred pad-or-crop of the first two axes, per axis independently, and its inverse."""

    source_shape: tuple[int, int]
    target_shape: tuple[int, int]

    def _offsets(self, axis: int) -> tuple[int, int]:
        """(start in source, start in target) of the region the two share on one axis."""
        source, target = self.source_shape[axis], self.target_shape[axis]
        if target >= source:  # pad: the source sits centred in the target
            return 0, (target - source) // 2
        return (source - target) // 2, 0  # crop: the target is the centre of the source

    def _regions(self):
        regions_source, regions_target = [], []
        for axis in (0, 1):
            start_s, start_t = self._offsets(axis)
            length = min(self.source_shape[axis], self.target_shape[axis])
            regions_source.append(slice(start_s, start_s + length))
            regions_target.append(slice(start_t, start_t + length))
        return tuple(regions_source), tuple(regions_target)

    def apply(self, array: np.ndarray, fill=0) -> np.ndarray:
        if tuple(array.shape[:2]) != tuple(self.source_shape):
            raise ValueError(f"expected an array of {self.source_shape}, got {array.shape[:2]}")
        out = np.full(tuple(self.target_shape) + array.shape[2:], fill, dtype=array.dtype)
        source, target = self._regions()
        out[target] = array[source]
        return out

    def invert(self, array: np.ndarray, fill=0) -> np.ndarray:
        """Back to the source shape; cropped-away borders come back as ``fill``."""
        if tuple(array.shape[:2]) != tuple(self.target_shape):
            raise ValueError(f"expected an array of {self.target_shape}, got {array.shape[:2]}")
        out = np.full(tuple(self.source_shape) + array.shape[2:], fill, dtype=array.dtype)
        source, target = self._regions()
        out[source] = array[target]
        return out


def pad_crop(array: np.ndarray, target_shape: tuple[int, int], fill=0) -> tuple[np.ndarray, PadCrop]:
    transform = PadCrop((array.shape[0], array.shape[1]), (target_shape[0], target_shape[1]))
    return transform.apply(array, fill), transform


def resize_nearest(array: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize by index maps (pixel centres): labels are never blended."""
    rows = np.minimum(((np.arange(shape[0]) + 0.5) * array.shape[0] / shape[0]).astype(int), array.shape[0] - 1)
    cols = np.minimum(((np.arange(shape[1]) + 0.5) * array.shape[1] / shape[1]).astype(int), array.shape[1] - 1)
    return array[rows[:, None], cols[None, :]]


@dataclass(frozen=True)
class Box:
    """A crop of a full-resolution image: rows [top, bottom), columns [left, right)."""

    top: int
    left: int
    bottom: int
    right: int

    @property
    def shape(self) -> tuple[int, int]:
        return self.bottom - self.top, self.right - self.left

    def to_full(self, rows, cols, scale: tuple[float, float] = (1.0, 1.0)):
        """Coordinates in a (possibly resized) crop -> full-resolution coordinates."""
        return np.asarray(rows) * scale[0] + self.top, np.asarray(cols) * scale[1] + self.left

    def paste(self, crop_mask: np.ndarray, full_shape: tuple[int, int]) -> np.ndarray:
        """A mask predicted on the (possibly resized) crop, back onto the full image grid."""
        full = np.zeros(full_shape, dtype=crop_mask.dtype)
        full[self.top:self.bottom, self.left:self.right] = resize_nearest(crop_mask, self.shape)
        return full


def breast_box(image: np.ndarray, border_fraction: float = 0.01, margin: int = 8) -> Box:
    """The bounding box of the breast in a mammogram: the largest bright region, film borders ignored.

    A thin band along every edge is excluded first (scanner borders and film
    edges are bright and touch it), then Otsu separates breast from background
    and the largest connected component is kept.
    """
    from skimage import filters, measure

    image = np.asarray(image, dtype=np.float32)
    height, width = image.shape
    band_y, band_x = max(1, int(height * border_fraction)), max(1, int(width * border_fraction))
    inner = image[band_y:height - band_y, band_x:width - band_x]
    step = max(1, max(inner.shape) // 1024)  # threshold on a reduced copy: fast, same answer
    small = inner[::step, ::step]
    foreground = small > filters.threshold_otsu(small)
    regions = measure.label(foreground)
    if regions.max() == 0:
        return Box(0, 0, height, width)
    largest = np.argmax(np.bincount(regions.ravel())[1:]) + 1
    rows, cols = np.nonzero(regions == largest)
    top = max(0, rows.min() * step + band_y - margin)
    left = max(0, cols.min() * step + band_x - margin)
    bottom = min(height, (rows.max() + 1) * step + band_y + margin)
    right = min(width, (cols.max() + 1) * step + band_x + margin)
    return Box(int(top), int(left), int(bottom), int(right))
