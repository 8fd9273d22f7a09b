"""The selective-kernel U-Net of the breast (mammogram) seed, in plain keras.layers.

Each block runs two branches on the same input: A, a 3x3 convolution with
dilation 2, and B, a plain 3x3 convolution (each with BN and ReLU).  Their sum
is global-average-pooled, squeezed to half the channels by a dense layer and
expanded back with a sigmoid: the attention a.  The block outputs
a*A + (1-a)*B, written as B + a*(A - B) so that only standard, safely
serialisable layers are used (no Lambda).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from .unet import DEFAULT_DROPOUT, DEFAULT_FILTERS, encoder_decoder


def _branch(x, filters: int, dilation: int, name: str):
    x = layers.Conv2D(filters, 3, padding="same", dilation_rate=dilation, use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_conv")(x)
    x = layers.BatchNormalization(name=f"{name}_bn")(x)
    return layers.Activation("relu", name=f"{name}_relu")(x)


def sk_block(x, filters: int, dropout: float, name: str):
    branch_a = _branch(x, filters, 2, f"{name}_a")
    branch_b = _branch(x, filters, 1, f"{name}_b")
    summed = layers.Add(name=f"{name}_sum")([branch_a, branch_b])
    squeezed = layers.GlobalAveragePooling2D(name=f"{name}_gap")(summed)
    squeezed = layers.Dense(max(1, filters // 2), activation="relu", name=f"{name}_squeeze")(squeezed)
    attention = layers.Dense(filters, activation="sigmoid", name=f"{name}_attention")(squeezed)
    attention = layers.Reshape((1, 1, filters), name=f"{name}_attention_map")(attention)
    difference = layers.Subtract(name=f"{name}_a_minus_b")([branch_a, branch_b])
    weighted = layers.Multiply(name=f"{name}_weighted")([attention, difference])
    out = layers.Add(name=f"{name}_select")([branch_b, weighted])
    if dropout:
        out = layers.Dropout(dropout, name=f"{name}_dropout")(out)
    return out


def build_sk_unet(
    input_shape: Sequence[int | None] = (512, 512, 1),
    filters: Sequence[int] = DEFAULT_FILTERS,
    dropout: Sequence[float] = DEFAULT_DROPOUT,
    decoder: str = "transpose",
    n_classes: int = 1,
    activation: str = "sigmoid",
    input_dtype: str = "float32",
    name: str = "sk_unet",
) -> keras.Model:
    return encoder_decoder(sk_block, input_shape, filters, dropout, decoder, n_classes, activation, input_dtype, name)
