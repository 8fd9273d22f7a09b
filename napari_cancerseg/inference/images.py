"""Whole-image inference: MRI volumes slice by slice, and mammograms at model size mapped back.

MRI: intensities normalised once per volume (percentiles of the whole
volume, never per slice), each axial slice centre-padded or cropped to the
model's size, predicted in batches, and put back by the exact inverse of that
pad/crop, so labels land on the voxels they were predicted for.

Mammograms: the display pipeline's 16-bit-aware windowing (in the reader),
the breast's bounding box (film borders ignored), CLAHE on the image only,
a resize of the crop to the model's size, and the predicted mask mapped back
to full resolution by nearest neighbour: masks are never filtered, smoothed
or interpolated.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import CancersegError
from ..preprocess.contrast import clahe, normalise_intensity
from ..preprocess.geometry import breast_box, pad_crop


def _labels(probabilities: np.ndarray) -> np.ndarray:
    return np.argmax(probabilities, axis=-1).astype(np.uint8)


def predict_volume(volume: np.ndarray, model, batch: int = 8,
                   progress: Callable[[int, int], None] | None = None) -> np.ndarray:
    """(z, y, x) labels of a (z, y, x) volume with a 2D model (a loaded bundle), slice by slice;
    ``progress(slices done, slices)`` after each batch."""
    volume = np.asarray(volume)
    if volume.ndim != 3:
        raise CancersegError(f"a volume has 3 axes, not shape {volume.shape}")
    recipe = model.recipe
    size = (recipe.tile_size, recipe.tile_size)
    normalised = normalise_intensity(volume)
    labels = np.zeros(volume.shape, np.uint8)
    for start in range(0, volume.shape[0], batch):
        slices, transforms = [], []
        for z in range(start, min(start + batch, volume.shape[0])):
            padded, transform = pad_crop(normalised[z], size)
            slices.append(_channels(padded, recipe))
            transforms.append(transform)
        predicted = _labels(model.predict_batch(np.stack(slices)))
        for offset, (transform, mask) in enumerate(zip(transforms, predicted)):
            labels[start + offset] = transform.invert(mask)
        if progress is not None:
            progress(start + len(slices), volume.shape[0])
    return labels


def _channels(image: np.ndarray, recipe) -> np.ndarray:
    """A [0, 1] float image in the channels and dtype the model takes."""
    image = image[..., None] if image.ndim == 2 else image
    if recipe.channels == 3 and image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    if recipe.input_dtype == "uint8":
        return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
    return image.astype(np.float32)


@dataclass
class MammogramPrediction:
    labels: np.ndarray  # full resolution
    box: tuple[int, int, int, int]  # top, left, bottom, right of the breast crop


def prepare_mammogram(image: np.ndarray, size: int) -> tuple[np.ndarray, Any]:
    """The breast crop, CLAHE-enhanced, resized to ``size`` x ``size``, in [0, 1]; and its box."""
    image = np.asarray(image, dtype=np.float32)
    box = breast_box(image)
    crop = image[box.top:box.bottom, box.left:box.right]
    low, high = float(crop.min()), float(crop.max())
    crop = (crop - low) / (high - low) if high > low else np.zeros_like(crop)
    enhanced = clahe(crop)  # the image only: masks never go through CLAHE
    from skimage.transform import resize

    return resize(enhanced, (size, size), order=1, preserve_range=True, anti_aliasing=True).astype(np.float32), box


def predict_mammogram(image: np.ndarray, model) -> MammogramPrediction:
    """Full-resolution labels of a mammogram (2D, windowed) from a model working at its own size."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[-1] in (3, 4):
        image = image[..., :3].mean(axis=-1)
    if image.ndim != 2:
        raise CancersegError(f"a mammogram is a 2D image, not shape {image.shape}")
    prepared, box = prepare_mammogram(image, model.recipe.tile_size)
    mask = _labels(model.predict_batch(_channels(prepared, model.recipe)[None]))[0]
    return MammogramPrediction(box.paste(mask, image.shape), (box.top, box.left, box.bottom, box.right))


def canonical_nifti_metadata(shape: tuple[int, int, int], scale, translate) -> dict[str, Any]:
    """What ``nifti.write_labels`` needs for a canonical (z, y, x) = (S, P, L) volume that came from DICOM.

    Data are stored as (x, y, z) = (L, P, S) voxels; the RAS affine flips L and P.
    """
    sz, sy, sx = (float(s) for s in scale)
    tz, ty, tx = (float(t) for t in translate)
    affine = np.array([[-sx, 0, 0, -tx], [0, -sy, 0, -ty], [0, 0, sz, tz], [0, 0, 0, 1]], float)
    return {"original_affine": affine.tolist(), "original_shape": tuple(int(s) for s in shape[::-1]),
            "zooms": (sx, sy, sz)}


def segment_file(path: str, bundle: str, out: str,
                 progress: Callable[[int, int], None] | None = None) -> dict[str, Any]:
    """Segment a NIfTI/DICOM volume or a mammogram with a bundle; save NIfTI (volumes) or OME-Zarr (2D).
    ``progress(slices done, slices)`` follows a volume's slices."""
    from ..io import nifti, stores
    from ..io.opening import first_image
    from ..models.bundle import load_bundle

    data, kwargs, _ = first_image(path)
    model = load_bundle(bundle)
    if model.is_classifier:
        raise CancersegError(f"{bundle}: a classifier, not a segmentation model (use cancerseg classify)")
    image = np.asarray(data[0] if kwargs.get("multiscale") else data)
    metadata = kwargs.get("metadata", {})
    if image.ndim == 3 and not kwargs.get("rgb"):
        labels = predict_volume(image, model, progress=progress)
        if not out.endswith((".nii", ".nii.gz")):
            raise CancersegError(f"{out}: volumes are saved as NIfTI (.nii.gz)")
        geometry = metadata if "original_affine" in metadata else canonical_nifti_metadata(
            image.shape, kwargs.get("scale", (1, 1, 1)), kwargs.get("translate", (0, 0, 0)))
        nifti.write_labels(out, labels, geometry)
        kind = "volume"
    else:
        labels = predict_mammogram(image, model).labels
        scale, units = kwargs.get("scale", (1.0, 1.0)), kwargs.get("units", ("pixel", "pixel"))
        # an earlier segmentation of ours at ``out`` is replaced (built beside it, renamed into place); anything
        # else there (a prediction, annotations, another program's folder) is refused, nothing changed
        stores.write_labels(out, stores.label_pyramid(labels), scale=scale, units=units, name=os.path.basename(out),
                            properties={"format": IMAGE_SEGMENTATION, "source": os.path.abspath(path),
                                        # a mapping, as the store's attributes require (a bare name was refused)
                                        "model": {"name": model.info.name, "version": model.info.version},
                                        "classes": list(model.info.classes)},
                            overwrite=is_image_segmentation(out))
        kind = "image"
    values, counts = np.unique(labels, return_counts=True)
    result = {"event": "done", "out": out, "kind": kind, "shape": list(labels.shape),
              "voxels_per_label": {str(int(v)): int(c) for v, c in zip(values, counts)},
              "classes": {str(c["label"]): str(c["name"]) for c in model.info.classes}}
    if kind == "volume":
        result["volumes_ml"] = label_volumes_ml(out)
    else:
        result["areas"], result["area_unit"] = label_areas(labels, scale, units)
    return result


#: The format a 2D image's segmentation store records: it marks a result ``segment`` may replace.
IMAGE_SEGMENTATION = "napari-cancerseg image segmentation"


def is_image_segmentation(path: str) -> bool:
    """A label store this plugin wrote as an image's segmentation (not a prediction, not annotations)."""
    from ..io import stores

    try:
        return stores.read_attributes(path).format == IMAGE_SEGMENTATION
    except CancersegError:
        return False


#: Micrometres per unit of a 2D image's scale: DICOM pixel spacing is in mm, slides in µm.
MICROMETRES_PER_UNIT = {"mm": 1e3, "millimeter": 1e3, "millimetre": 1e3, "um": 1.0, "µm": 1.0,
                        "micrometer": 1.0, "micrometre": 1.0, "micron": 1.0}


def label_areas(labels: np.ndarray, scale, units) -> tuple[dict[str, float], str]:
    """Area per label value of a 2D label image: µm² ("um2") when its scale is a known length per pixel (a
    mammogram's PixelSpacing or ImagerPixelSpacing, in mm), else the pixel count ("px2")."""
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    per_unit = [MICROMETRES_PER_UNIT.get(str(unit).strip().lower(), 0.0) for unit in tuple(units)[-2:]]
    if len(per_unit) != 2 or not all(per_unit):  # "pixel" (no spacing in the file), or a unit not a length
        return {str(int(v)): float(c) for v, c in zip(values, counts)}, "px2"
    row_um, col_um = (float(s) * f for s, f in zip(tuple(scale)[-2:], per_unit))
    return {str(int(v)): float(c) * row_um * col_um for v, c in zip(values, counts)}, "um2"


#: mm per NIfTI spatial unit (xyzt_units); "unknown" is read as mm, as NIfTI readers do
MM_PER_NIFTI_UNIT = {"mm": 1.0, "unknown": 1.0, "micron": 1e-3, "meter": 1e3}


def label_volumes_ml(path: str) -> dict[str, float]:
    """mL per label value of a NIfTI label volume: voxel count x voxel volume (its zooms, mm³) / 1000."""
    import nibabel as nib

    try:
        image = nib.load(path)
        if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
            raise TypeError(f"a {type(image).__name__}, not NIfTI")
        data = np.asarray(image.dataobj)
    except Exception as err:  # noqa: BLE001 - nibabel's errors vary: all mean "not a readable NIfTI"
        raise CancersegError(f"{path}: cannot read it as a NIfTI label volume ({type(err).__name__}: {err})") from None
    if data.ndim < 3 or not np.issubdtype(data.dtype, np.integer):
        raise CancersegError(f"{path}: a {data.ndim}-D {data.dtype} image, not a 3-D label volume")
    unit = image.header.get_xyzt_units()[0] or "unknown"
    if unit not in MM_PER_NIFTI_UNIT:
        raise CancersegError(f"{path}: voxel sizes in {unit!r}: no volume in mL")
    voxel_mm3 = float(np.prod(image.header.get_zooms()[:3])) * MM_PER_NIFTI_UNIT[unit] ** 3
    values, counts = np.unique(data, return_counts=True)
    return {str(int(v)): float(c) * voxel_mm3 / 1000.0 for v, c in zip(values, counts)}


def classifier_input(image: np.ndarray, size: int) -> np.ndarray:
    """A 2D image (or the middle slice of a volume) as (size, size, 3) uint8, contrast-stretched to 0-255."""
    from skimage.transform import resize

    image = np.asarray(image, dtype=np.float32)
    if image.ndim == 3 and image.shape[-1] not in (3, 4):
        image = image[image.shape[0] // 2]  # a volume: its middle slice
    if image.ndim == 3:
        image = image[..., :3].mean(axis=-1)
    low, high = np.percentile(image, [0.5, 99.5])
    image = np.clip((image - low) / (high - low), 0, 1) if high > low else np.zeros_like(image)
    resized = resize(image, (size, size), order=1, preserve_range=True, anti_aliasing=True)
    return np.repeat(np.clip(np.rint(resized * 255), 0, 255).astype(np.uint8)[..., None], 3, axis=-1)


def classify_image(image: np.ndarray, model) -> dict[str, float]:
    """Class name -> probability from an image-level classifier bundle."""
    if not model.is_classifier:
        raise CancersegError(f"{model.info.path}: not a classifier bundle")
    probabilities = model.classify(classifier_input(image, model.recipe.tile_size)[None])[0]
    names = model.info.class_names
    return {names[k]: float(p) for k, p in enumerate(probabilities)}


def route(probabilities: dict[str, float], routes: dict[str, str]) -> tuple[str, str | None]:
    """The most probable class and the segmentation bundle routed to it (None if no route)."""
    best = max(probabilities, key=lambda name: probabilities[name])
    lowered = {k.lower(): v for k, v in routes.items()}
    return best, lowered.get(best.lower())
