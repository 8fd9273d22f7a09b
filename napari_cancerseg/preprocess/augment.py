"""Joint image/mask augmentation (``training/data.py`` applies it every epoch in a Keras PyDataset).

Geometric transforms move image and mask together; the mask is resampled by
nearest neighbour only, so it stays integer.  Colour (brightness, contrast,
saturation) and HED jitter touch the image only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Augmenter:
    flips: bool = True
    rotate90: bool = True
    affine_probability: float = 0.5
    max_rotation_deg: float = 15.0
    scale_range: tuple[float, float] = (0.9, 1.1)
    max_shear_deg: float = 5.0
    colour_probability: float = 0.8
    brightness: float = 0.1
    contrast: float = 0.15
    saturation: float = 0.15
    hed_sigma: float = 0.03

    def __call__(self, image: np.ndarray, mask: np.ndarray, rng: np.random.Generator):
        if self.flips and rng.random() < 0.5:
            image, mask = image[:, ::-1], mask[:, ::-1]
        if self.flips and rng.random() < 0.5:
            image, mask = image[::-1], mask[::-1]
        if self.rotate90:
            k = int(rng.integers(4))
            image, mask = np.rot90(image, k), np.rot90(mask, k)
        if rng.random() < self.affine_probability:
            image, mask = self._affine(image, mask, rng)
        if image.ndim == 3 and image.shape[-1] == 3 and rng.random() < self.colour_probability:
            image = self._colour(image, rng)
        return np.ascontiguousarray(image), np.ascontiguousarray(mask)

    def _affine(self, image, mask, rng):
        from skimage.transform import AffineTransform, warp

        height, width = mask.shape[:2]
        centre = np.array([width / 2, height / 2])
        transform = (AffineTransform(translation=-centre)
                     + AffineTransform(rotation=np.deg2rad(rng.uniform(-1, 1) * self.max_rotation_deg),
                                       scale=rng.uniform(*self.scale_range),
                                       shear=np.deg2rad(rng.uniform(-1, 1) * self.max_shear_deg))
                     + AffineTransform(translation=centre))
        warped = warp(image.astype(np.float32), transform.inverse, order=1, mode="reflect", preserve_range=True)
        if image.dtype == np.uint8:
            image = np.clip(np.rint(warped), 0, 255).astype(image.dtype)
        else:
            image = warped.astype(image.dtype)
        mask = warp(mask, transform.inverse, order=0, mode="reflect", preserve_range=True).astype(mask.dtype)
        return image, mask

    def _colour(self, image, rng):
        from skimage.color import hed2rgb, rgb2hed

        rgb = image.astype(np.float32) / 255.0
        if self.hed_sigma and rng.random() < 0.5:
            hed = rgb2hed(rgb)
            hed = hed * rng.normal(1.0, self.hed_sigma * 5, 3) + rng.normal(0.0, self.hed_sigma, 3)
            rgb = hed2rgb(hed).astype(np.float32)
        else:
            grey = rgb.mean(axis=-1, keepdims=True)
            rgb = grey + (rgb - grey) * rng.uniform(1 - self.saturation, 1 + self.saturation)
            rgb = (rgb - 0.5) * rng.uniform(1 - self.contrast, 1 + self.contrast) + 0.5
            rgb = rgb + rng.uniform(-self.brightness, self.brightness)
        return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def random_crop(image: np.ndarray, mask: np.ndarray, size: int, rng: np.random.Generator):
    """A size x size crop (reflect-padded first when the image is smaller)."""
    pad_y, pad_x = max(0, size - mask.shape[0]), max(0, size - mask.shape[1])
    if pad_y or pad_x:
        pads = ((pad_y // 2, pad_y - pad_y // 2), (pad_x // 2, pad_x - pad_x // 2))
        image = np.pad(image, pads + ((0, 0),) * (image.ndim - 2), mode="reflect")
        mask = np.pad(mask, pads, mode="reflect")
    y = int(rng.integers(0, mask.shape[0] - size + 1))
    x = int(rng.integers(0, mask.shape[1] - size + 1))
    return image[y:y + size, x:x + size], mask[y:y + size, x:x + size]
