"""Contrast and intensity: CLAHE and per-volume percentile normalisation."""

from __future__ import annotations

import numpy as np


def clahe(image: np.ndarray, clip_limit: float = 0.01, kernel_size: int | None = None) -> np.ndarray:
    """Contrast-limited adaptive histogram equalisation of a 2D image, as float32 in [0, 1].

    Applied to images only: a mask is never equalised or filtered.
    """
    from skimage import exposure

    image = np.asarray(image, dtype=np.float64)
    low, high = float(image.min()), float(image.max())
    scaled = (image - low) / (high - low) if high > low else np.zeros_like(image)
    return exposure.equalize_adapthist(scaled, clip_limit=clip_limit, kernel_size=kernel_size).astype(np.float32)


def normalise_intensity(volume: np.ndarray, low: float = 0.5, high: float = 99.5,
                        mask: np.ndarray | None = None) -> np.ndarray:
    """Clip a whole volume to its own percentiles and scale it to [0, 1] (float32).

    Percentiles come from the whole volume (or its ``mask``), not slice by
    slice, so that intensities mean the same on every slice of a patient.
    """
    volume = np.asarray(volume, dtype=np.float32)
    values = volume[mask] if mask is not None else volume
    lo, hi = np.percentile(values, [low, high])
    if hi <= lo:
        return np.zeros_like(volume)
    return ((np.clip(volume, lo, hi) - lo) / (hi - lo)).astype(np.float32)
