"""Tissue masks anchored on the slide's glass: whatever is stained, however lightly, is tissue.

Otsu's threshold within a slide falls inside the tissue when much of it is
pale: on a 16k mosaic of real H&E it called 29.5% of the stained area glass
(issue 19), so tumour in a pale region was never predicted and nothing said so.
Here the glass colour is measured (the bright, unsaturated mode of the low
resolution image; white if the slide shows no glass), and a pixel is tissue
if its optical density relative to that glass exceeds ``MIN_DENSITY`` in any
channel or it is clearly more saturated than glass.  Dust is removed, holes
are filled and the mask is grown by ``GROW_LEVEL0_PX`` so that tissue edges count.
"""

from __future__ import annotations

import numpy as np

#: Optical density (log10 of glass / pixel, any channel) above which a pixel is stained: 0.04 is 9% darker
#: than glass. Macenko's 0.15 is a threshold for estimating stain vectors from clearly stained pixels, and
#: drops pale tissue; JPEG noise on glass at a 16x downsample stays under 0.02.
MIN_DENSITY = 0.04
#: Saturation above glass's that is a stain's colour, not glass (eosin-pale stroma can be bright but pink).
MIN_SATURATION = 0.08
#: The mask is grown by this many level-0 pixels (at least one mask pixel): a tissue border is half glass in a
#: low-resolution pixel, and its faint edge is still tissue. 32 px is 16 µm at 0.5 µm/px, two mask pixels at 16x.
GROW_LEVEL0_PX = 32


def _brightest_and_saturation(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each pixel's brightest channel and saturation ((max - min) / max), float32.  On uint8 pixels the max and min
    are taken before the conversion (a third of the float work; the same values)."""
    if rgb.dtype == np.uint8:  # channel by channel: numpy's reduction over a last axis of 3 is 10x slower
        red, green, blue = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        brightest = np.maximum(np.maximum(red, green), blue).astype(np.float32)
        darkest = np.minimum(np.minimum(red, green), blue).astype(np.float32)
    else:
        rgb = rgb.astype(np.float32, copy=False)
        brightest, darkest = rgb.max(axis=-1), rgb.min(axis=-1)
    return brightest, (brightest - darkest) / np.maximum(brightest, np.float32(1.0))


def _upper_quartile(values: np.ndarray) -> np.ndarray:
    """np.percentile(values, 75, axis=0) of (N, 3) pixels; uint8 ones from a histogram per channel (no sort)."""
    if values.dtype != np.uint8:
        return np.percentile(values.astype(np.float32), 75, axis=0).astype(np.float32)
    position = 0.75 * (len(values) - 1)  # numpy's "linear" method: between the order statistics around it
    below = int(np.floor(position))
    weight = position - below
    quartile = np.empty(3, np.float32)
    for channel in range(3):
        cumulative = np.cumsum(np.bincount(values[:, channel], minlength=256))
        low, high = np.searchsorted(cumulative, [below, min(below + 1, len(values) - 1)], side="right")
        quartile[channel] = np.percentile(np.array([low, high], np.float32), 100 * weight)  # numpy's own lerp
    return quartile


def glass_colour(rgb: np.ndarray) -> np.ndarray:
    """The RGB of the slide's glass: the bright, unsaturated pixels' upper quartile; white if there are few."""
    rgb = np.asarray(rgb)[..., :3]
    return _glass_colour(rgb, *_brightest_and_saturation(rgb))


def _glass_colour(rgb: np.ndarray, brightest: np.ndarray, saturation: np.ndarray) -> np.ndarray:
    flat = rgb.reshape(-1, 3)
    glass = flat[((saturation < MIN_SATURATION) & (brightest > 180)).reshape(-1)]
    if len(glass) < 0.01 * len(flat):  # no glass in view (all tissue, or a fluorescence slide): compare with white
        return np.full(3, 255.0, np.float32)
    return _upper_quartile(glass)


def tissue_mask(rgb: np.ndarray, min_object_fraction: float = 0.00002, min_object_px: int = 4,
                grow_px: int = 2) -> np.ndarray:
    """Boolean tissue mask of a low-resolution RGB image (a slide's thumbnail or low level).

    Objects up to ``min_object_fraction`` of the image (21 px of a 1024 px image: dust, pen dots) are dropped;
    anything larger stays, since a small biopsy fragment is tissue. The mask is grown by ``grow_px`` pixels.
    """
    from scipy import ndimage

    rgb = np.asarray(rgb)[..., :3]
    if rgb.dtype != np.uint8:
        rgb = rgb.astype(np.float32)
    brightest, saturation = _brightest_and_saturation(rgb)
    glass = _glass_colour(rgb, brightest, saturation)
    if rgb.dtype == np.uint8:  # optical density by a lookup table per channel: 256 logarithms, not 3 per pixel
        levels = np.arange(256, dtype=np.float32)
        tables = np.log10((glass[:, None] + np.float32(1.0)) / (levels[None, :] + np.float32(1.0)))
        density = np.maximum(np.maximum(tables[0][rgb[..., 0]], tables[1][rgb[..., 1]]), tables[2][rgb[..., 2]])
    else:
        density = np.log10((glass + 1.0) / (rgb + 1.0)).max(axis=-1)
    glass_saturation = (glass.max() - glass.min()) / max(float(glass.max()), 1.0)
    mask = (density > MIN_DENSITY) | (saturation - glass_saturation > MIN_SATURATION)
    min_size = max(min_object_px, int(min_object_fraction * mask.size))
    # skimage's remove_small_objects (objects of up to min_size pixels, 4-connected) by scipy's labelling:
    # importing skimage.morphology cost every model process 0.2-0.45 s
    objects, _ = ndimage.label(mask)
    keep = np.bincount(objects.ravel()) > min_size
    keep[0] = False
    mask = keep[objects]
    mask = ndimage.binary_fill_holes(mask)
    return ndimage.binary_dilation(mask, iterations=grow_px) if grow_px > 0 else mask


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
    downsample = sizes[0][0] / width
    return tissue_mask(image, grow_px=max(1, round(GROW_LEVEL0_PX / downsample))), downsample
