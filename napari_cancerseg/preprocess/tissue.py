"""Tissue masks: Otsu on a low-resolution image, small objects and holes removed."""

from __future__ import annotations

import numpy as np


def tissue_mask(rgb: np.ndarray, min_object_fraction: float = 0.0005, min_object_px: int = 16) -> np.ndarray:
    """Boolean tissue mask of a low-resolution RGB image (a slide's thumbnail or low level).

    Tissue is darker and more saturated than glass: Otsu's threshold on the
    saturation-weighted darkness separates them whatever the stain intensity.
    """
    from skimage import filters, morphology

    rgb = np.asarray(rgb)[..., :3]
    # HSV saturation and value, as skimage.color.rgb2hsv defines them, without its float64 hue
    brightest = rgb.max(axis=-1).astype(np.float32)
    spread = brightest - rgb.min(axis=-1)
    saturation = np.divide(spread, brightest, out=np.zeros_like(spread), where=brightest > 0)
    score = saturation * 0.5 + (1.0 - brightest / 255.0) * 0.5
    if np.ptp(score) < 1e-3:  # a uniform image: all glass or all tissue, decide by saturation
        return np.full(score.shape, bool(saturation.mean() > 0.1))
    mask = score > filters.threshold_otsu(score)
    min_size = max(min_object_px, int(min_object_fraction * mask.size))
    mask = morphology.remove_small_objects(mask, max_size=min_size)
    return morphology.remove_small_holes(mask, max_size=min_size)


def slide_tissue_mask(path: str, max_side: int = 2048) -> tuple[np.ndarray, float]:
    """Tissue mask of a slide from its lowest level not larger than ``max_side`` (never level 0 of a pyramid).

    Returns the mask and its downsample relative to level 0.
    """
    from ..io.wsi import SlideHandle

    handle = SlideHandle.shared(path)
    sizes = handle.slide.level_dimensions  # (width, height) per level
    level = next((i for i, size in enumerate(sizes) if max(size) <= max_side), len(sizes) - 1)
    width, height = sizes[level]
    image = handle.read(level, 0, 0, width, height)  # one read of a small level, no dask graph
    return tissue_mask(image), sizes[0][0] / width
