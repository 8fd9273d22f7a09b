"""EfficientNetB0 patch/image classifier (Gleason patterns, organ, tumour, breast pathology)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import keras
from keras import layers


def build_classifier(
    n_classes: int = 4,
    input_shape: Sequence[int] = (224, 224, 3),
    weights: str | os.PathLike | None = None,
    dense_units: int = 256,
    dropout: float = 0.3,
    name: str = "efficientnetb0_classifier",
) -> keras.Model:
    """EfficientNetB0 backbone + global average pooling + dense + dropout + softmax.

    ``weights`` is None (random init, the default) or the path of a local
    ImageNet weights file (``efficientnetb0_notop.h5``).  Nothing is ever
    downloaded: 'imagenet' is refused with a message saying what to pass.
    EfficientNet rescales inputs itself: feed RGB values in 0-255.
    """
    if weights is not None:
        weights = os.fspath(weights)
        if weights == "imagenet":
            raise ValueError("weights='imagenet' would download from the internet; "
                             "pass the path of a local efficientnetb0_notop.h5 file instead")
        if not os.path.isfile(weights):
            raise FileNotFoundError(f"{weights}: no such ImageNet weights file")
    backbone = keras.applications.EfficientNetB0(include_top=False, weights=weights, input_shape=tuple(input_shape))
    inputs = keras.Input(tuple(input_shape), name="image")
    x = backbone(inputs)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    x = layers.Dense(dense_units, activation="relu", name="dense")(x)
    x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=name)
