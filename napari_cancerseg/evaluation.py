"""Segmentation evaluation: Dice, IoU, precision, recall and the 95th-percentile Hausdorff distance in mm or µm.

Any two label images the plugin reads (NIfTI, DICOM SEG or series, OME-Zarr,
PNG/JPEG/TIFF, or folders of them paired by name) are compared per case and
per label.  Distances use the prediction's physical spacing (volumes in mm,
slides in µm), so an anisotropic MRI (0.6 x 0.6 x 4 mm) is measured as it is.

hd95 follows the usual definition (as in MONAI and the medical segmentation
decathlon): the surfaces are the foreground voxels with a background
neighbour (6-/4-connectivity); for each surface point the distance to the
nearest point of the other surface; the 95th percentile of each direction;
the larger of the two.  Both empty: 0.  One empty: undefined (None).
"""

from __future__ import annotations

import csv
import io
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .errors import CancersegError
from .io import IMAGE_SUFFIXES

MASK_SUFFIXES = ("_mask", "_masks", "_seg", "_labels", "_label", "_gt", "_pred", "_prediction")


@dataclass
class LabelImage:
    case: str
    labels: np.ndarray
    spacing: tuple[float, ...]
    unit: str  # "mm", "um" or "px"
    path: str


@dataclass
class Score:
    case: str
    label: int
    dice: float
    iou: float
    precision: float | None
    recall: float | None
    hd95: float | None
    unit: str

    def to_dict(self) -> dict:
        return asdict(self)


def unit_name(units) -> str:
    names = {str(u) for u in (units or [])}
    if names <= {"mm", "millimeter", "millimetre"} and names:
        return "mm"
    if names <= {"um", "µm", "micrometer", "micron"} and names:
        return "um"
    return "px"


def read_label_image(path: str, threshold: int | None = None) -> LabelImage:
    """The first labels layer the plugin's readers give for ``path`` (plain images: PIL, spacing 1 px)."""
    case = _case_name(path)
    if path.lower().endswith(IMAGE_SUFFIXES):
        from .training.data import read_mask

        return LabelImage(case, read_mask(Path(path), threshold), (1.0, 1.0), "px", path)
    from .io import open_layers

    layers = open_layers(path)
    chosen = next((layer for layer in layers if layer[2] == "labels"), None)
    if chosen is None and len(layers) == 1 and np.issubdtype(np.asarray(layers[0][0][:1]).dtype, np.integer):
        chosen = layers[0]  # an integer volume the reader took for an image: a mask all the same
    if chosen is None:
        raise CancersegError(f"{path}: holds no label image (a segmentation, SEG object or label store)")
    data, kwargs, _ = chosen
    incomplete = (kwargs.get("metadata") or {}).get("incomplete")
    if incomplete:  # chunks not predicted are not background: a Dice over them would be wrong
        raise CancersegError(f"{path}: incomplete prediction ({incomplete['missing_chunks']} of "
                             f"{incomplete['expected_chunks']} chunks missing): finish it before evaluating it")
    level0 = data[0] if kwargs.get("multiscale") or isinstance(data, list) else data
    labels = np.asarray(level0)
    scale = tuple(float(s) for s in kwargs.get("scale", (1.0,) * labels.ndim))[-labels.ndim:]
    return LabelImage(case, labels, check_spacing(scale, path), unit_name(kwargs.get("units")), path)


def check_spacing(spacing, path: str) -> tuple[float, ...]:
    """Positive finite voxel sizes, else a CancersegError naming the file.

    A negative spacing flips the distance transform's grid and gives a store against itself an hd95 of
    hundreds of µm; a NaN one gives NaN distances.  Neither may reach a printed number.
    """
    values = tuple(float(s) for s in spacing)
    bad = [s for s in values if not (np.isfinite(s) and s > 0)]
    if bad:
        raise CancersegError(f"{path}: its pixel spacing {values} is not positive and finite: distances "
                             "(hd95) would be meaningless")
    return values


def _case_name(path: str) -> str:
    name = Path(path).name
    for suffix in (".nii.gz", ".zarr", *IMAGE_SUFFIXES, ".nii", ".dcm"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    for suffix in MASK_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def surface(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    mask = np.asarray(mask, bool)
    return mask & ~ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1),
                                          border_value=0)


def surface_distances(a: np.ndarray, b: np.ndarray, spacing) -> np.ndarray:
    """For each surface point of ``a``, the physical distance to the nearest surface point of ``b``."""
    from scipy import ndimage

    surface_a, surface_b = surface(a), surface(b)
    to_b = ndimage.distance_transform_edt(~surface_b, sampling=spacing)
    return to_b[surface_a]


def hd95(prediction: np.ndarray, truth: np.ndarray, spacing) -> float | None:
    prediction, truth = np.asarray(prediction, bool), np.asarray(truth, bool)
    if not prediction.any() and not truth.any():
        return 0.0
    if not prediction.any() or not truth.any():
        return None
    forward = surface_distances(prediction, truth, spacing)
    backward = surface_distances(truth, prediction, spacing)
    return float(max(np.percentile(forward, 95), np.percentile(backward, 95)))


def score(prediction: np.ndarray, truth: np.ndarray, label: int, spacing, case: str, unit: str) -> Score:
    p, t = np.asarray(prediction) == label, np.asarray(truth) == label
    tp, fp, fn = int((p & t).sum()), int((p & ~t).sum()), int((~p & t).sum())
    dice = 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)
    iou = 1.0 if tp + fp + fn == 0 else tp / (tp + fp + fn)
    precision = tp / (tp + fp) if tp + fp else None
    recall = tp / (tp + fn) if tp + fn else None
    return Score(case, int(label), float(dice), float(iou), precision, recall, hd95(p, t, spacing), unit)


def evaluate_pair(prediction: LabelImage, truth: LabelImage, labels: list[int] | None = None) -> list[Score]:
    if prediction.labels.shape != truth.labels.shape:
        raise CancersegError(f"{prediction.path} is {prediction.labels.shape} but {truth.path} is "
                             f"{truth.labels.shape}: they are not on the same grid")
    if labels is None:
        labels = sorted(({int(v) for v in np.unique(truth.labels)} | {int(v) for v in np.unique(prediction.labels)})
                        - {0})
    spacing = prediction.spacing if prediction.unit != "px" else truth.spacing
    unit = prediction.unit if prediction.unit != "px" else truth.unit
    check_spacing(spacing, prediction.path if prediction.unit != "px" else truth.path)
    return [score(prediction.labels, truth.labels, label, spacing, truth.case, unit) for label in labels]


def _files(path: str) -> dict[str, str]:
    if os.path.isdir(path) and not path.rstrip("/").endswith(".zarr") and not any(
            f.lower().endswith(".dcm") for f in os.listdir(path)):
        return {_case_name(f): os.path.join(path, f) for f in sorted(os.listdir(path)) if not f.startswith(".")}
    return {_case_name(path): path}


def evaluate_paths(prediction: str, truth: str, labels: list[int] | None = None,
                   threshold: int | None = None) -> list[Score]:
    """Every case of ``prediction`` against ``truth`` (files, or folders paired by case name)."""
    for path in (prediction, truth):
        if not os.path.exists(path):
            raise CancersegError(f"{path}: no such file or folder")
    predictions, truths = _files(prediction), _files(truth)
    for path, found in ((prediction, predictions), (truth, truths)):
        if not found:  # zero cases would print an empty table and exit 0, as if all was well
            raise CancersegError(f"{path}: the folder is empty: there is nothing to evaluate")
    if len(predictions) == len(truths) == 1:
        pairs = [(next(iter(predictions.values())), next(iter(truths.values())))]
    else:
        missing = sorted(set(truths) - set(predictions))
        if missing:
            raise CancersegError(f"{prediction}: no prediction for {', '.join(missing[:5])}"
                                 + (" ..." if len(missing) > 5 else ""))
        pairs = [(predictions[case], truths[case]) for case in sorted(truths)]
    scores = []
    for p, t in pairs:
        scores += evaluate_pair(read_label_image(p, threshold), read_label_image(t, threshold), labels)
    return scores


def to_csv(scores: list[Score]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(Score.__dataclass_fields__))
    writer.writeheader()
    for s in scores:
        writer.writerow(s.to_dict())
    return out.getvalue()
