"""Image/mask pairs from folders, split by case (patient or slide), and Keras data pipelines."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CancersegError
from ..io import IMAGE_SUFFIXES
from ..preprocess.augment import Augmenter, random_crop

MASK_MARKERS = ("_labels", "_label", "_mask", "_masks", "_seg")


@dataclass
class Pair:
    name: str
    case: str
    image: np.ndarray  # (H, W, 3) uint8 or (H, W, 1)
    mask: np.ndarray  # (H, W) uint8 class labels


def _is_mask_name(stem: str) -> bool:
    return stem.lower().endswith(MASK_MARKERS)


def find_mask(image_path: Path, masks_dir: Path) -> Path | None:
    for candidate in [image_path.stem + marker for marker in ("",) + MASK_MARKERS]:
        for suffix in IMAGE_SUFFIXES:
            path = masks_dir / f"{candidate}{suffix}"
            if path.is_file() and path != image_path:
                return path
    return None


def read_mask(path: Path, threshold: int | None) -> np.ndarray:
    """A mask file as class labels.

    ``threshold`` binarises grey masks (lossy JPEG masks must be thresholded,
    e.g. at 128); None keeps integer labels, and instance labels (many values)
    become foreground 1.
    """
    from PIL import Image

    mask = np.asarray(Image.open(path))
    if mask.ndim == 3:
        mask = mask[..., 0]
    if threshold is not None:
        return (mask >= threshold).astype(np.uint8)
    if mask.max() > 255 or len(np.unique(mask)) > 16:  # instance ids, not classes
        return (mask > 0).astype(np.uint8)
    return mask.astype(np.uint8)


def load_pairs(images_dir: str, masks_dir: str | None = None, case_pattern: str | None = None,
               mask_threshold: int | None = None, channels: int = 3) -> list[Pair]:
    """Every image with a mask; ``case_pattern`` (a regex) takes the case id from the file name."""
    from PIL import Image

    images_dir_p, masks_dir_p = Path(images_dir), Path(masks_dir or images_dir)
    pattern = re.compile(case_pattern) if case_pattern else None
    pairs = []
    for path in sorted(images_dir_p.iterdir()):
        if path.suffix.lower() not in IMAGE_SUFFIXES or _is_mask_name(path.stem):
            continue
        mask_path = find_mask(path, masks_dir_p)
        if mask_path is None:
            continue
        image = np.asarray(Image.open(path).convert("RGB" if channels == 3 else "L"))
        if image.ndim == 2:
            image = image[..., None]
        mask = read_mask(mask_path, mask_threshold)
        if mask.shape != image.shape[:2]:
            raise CancersegError(f"{mask_path}: mask {mask.shape} does not match its image {image.shape[:2]}")
        case = path.stem
        if pattern:
            match = pattern.search(path.stem)
            if not match:
                raise CancersegError(f"{path}: the case pattern {pattern.pattern!r} does not match this file name")
            case = match.group(1) if match.groups() else match.group(0)
        pairs.append(Pair(path.stem, case, image, mask))
    if not pairs:
        raise CancersegError(f"{images_dir}: no image with a matching mask in {masks_dir or images_dir}")
    return pairs


def load_volume_pairs(volumes: list[str], masks: list[str]) -> list[Pair]:
    """Axial slices of MRI volumes (NIfTI or DICOM) with their masks; the case is the volume (the patient).

    Intensities are normalised once per volume, as ``predict_volume`` does;
    slices without foreground are kept (the model must learn to say "none").
    """
    from ..io import open_layers
    from ..preprocess.contrast import normalise_intensity

    if len(volumes) != len(masks):
        raise CancersegError(f"{len(volumes)} volumes but {len(masks)} masks: give one mask per volume")
    pairs = []
    for volume_path, mask_path in zip(volumes, masks):
        arrays = []
        for path in (volume_path, mask_path):
            data, kwargs, _ = open_layers(path)[0]
            arrays.append(np.asarray(data[0] if kwargs.get("multiscale") else data))
        volume, mask = arrays
        if volume.shape != mask.shape:
            raise CancersegError(f"{mask_path}: mask {mask.shape} does not match its volume {volume.shape}")
        case = Path(volume_path).name.split(".")[0]
        normalised = normalise_intensity(volume)
        pairs += [Pair(f"{case}[{z}]", case, normalised[z][..., None], mask[z].astype(np.uint8))
                  for z in range(volume.shape[0])]
    return pairs


def split_by_case(pairs: list[Pair], held_out: list[str]) -> tuple[list[Pair], list[Pair]]:
    """(kept, held out): every image of a held-out case goes to the held-out side, none leaks."""
    held = set(held_out)
    unknown = held - {p.case for p in pairs}
    if unknown:
        raise CancersegError(f"held-out cases not found in the data: {sorted(unknown)}")
    return [p for p in pairs if p.case not in held], [p for p in pairs if p.case in held]


def to_target(mask: np.ndarray, n_classes: int) -> np.ndarray:
    """(H, W, 1) float for a sigmoid head, one-hot (H, W, C) for softmax."""
    if n_classes == 1:
        return (mask > 0).astype(np.float32)[..., None]
    return np.eye(n_classes, dtype=np.float32)[mask]


def _keras_dataset_base():
    import keras

    return keras.utils.PyDataset


#: Keras ships no type information: to mypy the base of the Keras datasets is Any (a named variable, not a call).
PyDatasetBase: Any = _keras_dataset_base()


class RandomPatches(PyDatasetBase):
    """Random augmented patches from image/mask pairs, fresh every epoch (Keras PyDataset)."""

    def __init__(self, pairs: list[Pair], size: int, batch_size: int, steps: int, n_classes: int = 1,
                 augmenter: Augmenter | None = None, seed: int = 0, foreground_fraction: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.pairs, self.size, self.batch_size, self.steps = pairs, size, batch_size, steps
        self.n_classes, self.augmenter, self.seed = n_classes, augmenter, seed
        self.foreground_fraction = foreground_fraction
        self.epoch = 0
        weights = np.array([p.mask.size for p in pairs], float)
        self.weights = weights / weights.sum()  # larger images give proportionally more patches

    def __len__(self) -> int:
        return self.steps

    def on_epoch_end(self):
        self.epoch += 1

    def __getitem__(self, index: int):
        rng = np.random.default_rng([self.seed, self.epoch, index])
        images, targets = [], []
        for _ in range(self.batch_size):
            pair = self.pairs[rng.choice(len(self.pairs), p=self.weights)]
            image, mask = random_crop(pair.image, pair.mask, self.size, rng)
            if self.augmenter is not None:
                image, mask = self.augmenter(image, mask, rng)
            images.append(image)
            targets.append(to_target(mask, self.n_classes))
        return np.stack(images), np.stack(targets)


class WholeImages(PyDatasetBase):
    """Each image once, whole, reflect-padded to a multiple of ``divisor`` (validation, batch of 1)."""

    def __init__(self, pairs: list[Pair], n_classes: int = 1, divisor: int = 16, **kwargs):
        super().__init__(**kwargs)
        self.pairs, self.n_classes, self.divisor = pairs, n_classes, divisor

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int):
        pair = self.pairs[index]
        height, width = pair.mask.shape
        pad = ((0, (-height) % self.divisor), (0, (-width) % self.divisor))
        image = np.pad(pair.image, pad + ((0, 0),), mode="reflect")
        # the padded border counts as background: it makes validation Dice slightly pessimistic,
        # never optimistic (the model card's test scores use the unpadded image)
        mask = np.pad(pair.mask, pad, mode="constant")
        return image[None], to_target(mask, self.n_classes)[None]


def load_patch_dataset(path: str) -> list[Pair]:
    """Pairs from a patch dataset (zarr group: ``images`` (N, H, W, 3) uint8, ``masks`` (N, H, W) uint8).

    The case of each patch is its slide: the ``slides`` array (one id per patch)
    when the dataset mixes slides, else the group's ``slide`` attribute, so a
    split by case never puts patches of one slide on both sides.
    """
    from ..io.stores.datasets import open_patch_dataset

    images, masks, slides = open_patch_dataset(path)
    return [Pair(f"{Path(path).stem}[{i}]", slides[i], np.asarray(images[i]), np.asarray(masks[i]))
            for i in range(images.shape[0])]
