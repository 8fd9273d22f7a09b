"""Tissue masks: Otsu on a low-resolution image, small objects and holes removed."""

from __future__ import annotations

import numpy as np


def tissue_mask(rgb: np.ndarray, min_object_fraction: float = 0.0005, min_object_px: int = 16) -> np.ndarray:
    """Boolean tissue mask of a low-resolution RGB image (a slide's thumbnail or low level).

    Tissue is darker and more saturated than glass: Otsu's threshold on the
    saturation-weighted darkness separates them whatever the stain intensity.
    """
    from skimage import color, filters, morphology

    rgb = np.asarray(rgb)[..., :3]
    hsv = color.rgb2hsv(rgb)
    score = hsv[..., 1] * 0.5 + (1.0 - hsv[..., 2]) * 0.5
    if np.ptp(score) < 1e-3:  # a uniform image: all glass or all tissue, decide by saturation
        return np.full(score.shape, bool(hsv[..., 1].mean() > 0.1))
    mask = score > filters.threshold_otsu(score)
    min_size = max(min_object_px, int(min_object_fraction * mask.size))
    mask = morphology.remove_small_objects(mask, max_size=min_size)
    return morphology.remove_small_holes(mask, max_size=min_size)


def slide_tissue_mask(path: str, max_side: int = 2048) -> tuple[np.ndarray, float]:
    """Tissue mask of a slide from its lowest level not larger than ``max_side`` (never level 0 of a pyramid).

    Returns the mask and its downsample relative to level 0.
    """
    from ..io.wsi import open_slide

    info = open_slide(path)
    level = next((lvl for lvl in info.levels if max(lvl.shape[:2]) <= max_side), info.levels[-1])
    image = np.asarray(level)
    return tissue_mask(image), info.levels[0].shape[1] / level.shape[1]
