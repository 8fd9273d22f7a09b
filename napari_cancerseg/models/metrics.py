"""Overlap metrics per image and per case (numpy), and a per-image Dice for Keras training.

Scores are computed for each image (or case) and returned as such; a test set
is summarised by the mean and spread of per-image scores, never by pooling all
its pixels into one confusion matrix.  Two empty masks agree perfectly (1.0);
a prediction on an empty truth scores 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

import keras
import numpy as np
from keras import ops


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    total = pred.sum() + truth.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(pred, truth).sum() / total)


def iou(pred: np.ndarray, truth: np.ndarray) -> float:
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    union = np.logical_or(pred, truth).sum()
    return 1.0 if union == 0 else float(np.logical_and(pred, truth).sum() / union)


def per_label_scores(pred: np.ndarray, truth: np.ndarray, labels: Iterable[int] | None = None) -> dict[int, dict]:
    """Dice and IoU of each label (labels present in either image, background 0 excluded)."""
    if labels is None:
        labels = sorted((set(np.unique(pred)) | set(np.unique(truth))) - {0})
    return {int(k): {"dice": dice(pred == k, truth == k), "iou": iou(pred == k, truth == k)} for k in labels}


def per_image(preds: Sequence[np.ndarray], truths: Sequence[np.ndarray]) -> list[dict]:
    """Binary Dice and IoU of every image, in order."""
    if len(preds) != len(truths):
        raise ValueError(f"{len(preds)} predictions for {len(truths)} ground truths")
    return [{"dice": dice(p, t), "iou": iou(p, t)} for p, t in zip(preds, truths)]


def per_case(preds: Sequence[np.ndarray], truths: Sequence[np.ndarray], cases: Sequence[str]) -> dict[str, dict]:
    """Dice and IoU per case (patient, slide): the slices of one case are scored together."""
    grouped: dict[str, list[tuple[np.ndarray, np.ndarray]]] = defaultdict(list)
    for pred, truth, case in zip(preds, truths, cases):
        grouped[case].append((np.asarray(pred, bool).ravel(), np.asarray(truth, bool).ravel()))
    scores = {}
    for case, items in grouped.items():
        pred, truth = np.concatenate([p for p, _ in items]), np.concatenate([t for _, t in items])
        scores[case] = {"dice": dice(pred, truth), "iou": iou(pred, truth)}
    return scores


def summary(scores: Sequence[dict], key: str = "dice") -> dict:
    values = np.array([s[key] for s in scores], float)
    return {"n": int(values.size), "mean": float(values.mean()), "std": float(values.std()),
            "min": float(values.min()), "max": float(values.max())}


@keras.saving.register_keras_serializable(package="cancerseg")
class DicePerImage(keras.metrics.Metric):
    """Mean over images of the hard Dice of ``y_pred > threshold`` (binary) or argmax (multi-class).

    For multi-class outputs the Dice of each foreground class (index >= 1) is
    averaged per image; images where a class is absent in both count as 1.
    """

    def __init__(self, threshold: float = 0.5, name: str = "dice", **kwargs):
        super().__init__(name=name, **kwargs)
        self.threshold = threshold
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        if y_pred.shape[-1] == 1:
            pred = ops.cast(y_pred > self.threshold, "float32")
            true = ops.cast(y_true > 0.5, "float32")
        else:
            classes = y_pred.shape[-1]
            pred = ops.one_hot(ops.argmax(y_pred, axis=-1), classes)[..., 1:]
            true = ops.cast(y_true, "float32")[..., 1:]
        axes = list(range(1, len(pred.shape) - 1))
        intersection = ops.sum(pred * true, axis=axes)
        total = ops.sum(pred, axis=axes) + ops.sum(true, axis=axes)
        per_class = ops.where(total > 0, 2.0 * intersection / ops.maximum(total, 1e-7), 1.0)
        per_image_dice = ops.mean(per_class, axis=-1)
        self.total.assign_add(ops.sum(per_image_dice))
        self.count.assign_add(ops.cast(ops.shape(per_image_dice)[0], "float32"))

    def result(self):
        return self.total / ops.maximum(self.count, 1.0)

    def reset_state(self):
        self.total.assign(0.0)
        self.count.assign(0.0)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}


def confusion(predicted: Sequence[int], truth: Sequence[int], n_classes: int) -> np.ndarray:
    """(truth, predicted) counts."""
    matrix = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(matrix, (np.asarray(truth, int), np.asarray(predicted, int)), 1)
    return matrix


def quadratic_weighted_kappa(predicted: Sequence[int], truth: Sequence[int], n_classes: int) -> float:
    """Cohen's kappa with quadratic weights (ordinal classes: benign < 3 < 4 < 5), as in PANDA.

    1 - sum(W * O) / sum(W * E) with W_ij = (i - j)^2 / (n - 1)^2, O the observed
    confusion and E the outer product of its marginals scaled to the same total.
    """
    observed = confusion(predicted, truth, n_classes).astype(float)
    total = observed.sum()
    if total == 0:
        return float("nan")
    i, j = np.indices((n_classes, n_classes))
    weights = (i - j) ** 2 / (n_classes - 1) ** 2
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0)) / total
    denominator = (weights * expected).sum()
    return 1.0 if denominator == 0 else float(1.0 - (weights * observed).sum() / denominator)


def per_class_metrics(predicted: Sequence[int], truth: Sequence[int], names: Sequence[str]) -> dict[str, dict]:
    """Precision, recall, F1 and support of each class."""
    matrix = confusion(predicted, truth, len(names))
    result = {}
    for k, name in enumerate(names):
        tp, fp, fn = matrix[k, k], matrix[:, k].sum() - matrix[k, k], matrix[k, :].sum() - matrix[k, k]
        precision = tp / (tp + fp) if tp + fp else float("nan")
        recall = tp / (tp + fn) if tp + fn else float("nan")
        f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
        result[name] = {"precision": float(precision), "recall": float(recall), "f1": float(f1),
                        "support": int(matrix[k, :].sum())}
    return result
