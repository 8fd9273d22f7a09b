"""Segmentation losses in keras.ops, each returning one value per sample (Keras averages them).

Axes matter: every reduction is over the pixels (and channels) of one sample,
never over the batch, so that an empty mask in a batch cannot hide behind the
others and Dice means what it says.
"""

from __future__ import annotations

import keras
from keras import ops

EPSILON = 1e-7


def _spatial_axes(x) -> list[int]:
    return list(range(1, len(x.shape)))


def _tensors(y_true, y_pred):
    """Both as backend tensors, y_true in y_pred's dtype (numpy inputs break torch arithmetic)."""
    y_pred = ops.convert_to_tensor(y_pred)
    return ops.cast(ops.convert_to_tensor(y_true), y_pred.dtype), y_pred


@keras.saving.register_keras_serializable(package="cancerseg")
def binary_crossentropy(y_true, y_pred):
    y_true, y_pred = _tensors(y_true, y_pred)
    p = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
    bce = -(y_true * ops.log(p) + (1.0 - y_true) * ops.log(1.0 - p))
    return ops.mean(bce, axis=_spatial_axes(bce))


@keras.saving.register_keras_serializable(package="cancerseg")
def soft_dice_loss(y_true, y_pred, smooth: float = 1.0):
    """1 - soft Dice per sample, over all pixels and channels of that sample, smoothed."""
    y_true, y_pred = _tensors(y_true, y_pred)
    axes = _spatial_axes(y_pred)
    intersection = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    return 1.0 - (2.0 * intersection + smooth) / (total + smooth)


@keras.saving.register_keras_serializable(package="cancerseg")
def bce_dice_loss(y_true, y_pred):
    return binary_crossentropy(y_true, y_pred) + soft_dice_loss(y_true, y_pred)


def focal_loss(gamma: float = 2.0, alpha: float = 0.25):
    """Binary focal loss: -alpha_t (1 - p_t)^gamma log(p_t), averaged over a sample's pixels."""

    @keras.saving.register_keras_serializable(package="cancerseg", name=f"focal_loss_g{gamma}_a{alpha}")
    def focal(y_true, y_pred):
        y_true, y_pred = _tensors(y_true, y_pred)
        p = ops.clip(y_pred, EPSILON, 1.0 - EPSILON)
        p_t = y_true * p + (1.0 - y_true) * (1.0 - p)
        alpha_t = y_true * alpha + (1.0 - y_true) * (1.0 - alpha)
        loss = -alpha_t * ops.power(1.0 - p_t, gamma) * ops.log(p_t)
        return ops.mean(loss, axis=_spatial_axes(loss))

    return focal


@keras.saving.register_keras_serializable(package="cancerseg")
def categorical_crossentropy(y_true, y_pred):
    """y_true one-hot (..., C); mean over the pixels of each sample."""
    y_true, y_pred = _tensors(y_true, y_pred)
    ce = -ops.sum(y_true * ops.log(ops.clip(y_pred, EPSILON, 1.0)), axis=-1)
    return ops.mean(ce, axis=_spatial_axes(ce))


@keras.saving.register_keras_serializable(package="cancerseg")
def multiclass_dice_loss(y_true, y_pred, smooth: float = 1.0):
    """1 - mean over classes of the per-sample soft Dice of each class (one-hot y_true)."""
    y_true, y_pred = _tensors(y_true, y_pred)
    axes = list(range(1, len(y_pred.shape) - 1))  # pixels only: one Dice per sample and class
    intersection = ops.sum(y_true * y_pred, axis=axes)
    total = ops.sum(y_true, axis=axes) + ops.sum(y_pred, axis=axes)
    dice = (2.0 * intersection + smooth) / (total + smooth)
    return 1.0 - ops.mean(dice, axis=-1)


@keras.saving.register_keras_serializable(package="cancerseg")
def categorical_dice_loss(y_true, y_pred):
    return categorical_crossentropy(y_true, y_pred) + multiclass_dice_loss(y_true, y_pred)


LOSSES = {
    "bce": binary_crossentropy,
    "dice": soft_dice_loss,
    "bce_dice": bce_dice_loss,
    "focal": focal_loss(),
    "cce": categorical_crossentropy,
    "multiclass_dice": multiclass_dice_loss,
    "cce_dice": categorical_dice_loss,
}
