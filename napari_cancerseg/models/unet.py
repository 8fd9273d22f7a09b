"""The U-Net family in Keras 3 (keras.layers only: runs on TensorFlow, JAX and PyTorch)."""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

#: The prostate U-Net of the original project.
DEFAULT_FILTERS = (16, 32, 64, 128, 256)
DEFAULT_DROPOUT = (0.1, 0.1, 0.2, 0.2, 0.3)


def conv_block(x, filters: int, batch_norm: bool, dropout: float, name: str):
    """Two 3x3 convolutions (each with BN and ReLU), dropout between them."""
    for index in range(2):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=not batch_norm,
                          kernel_initializer="he_normal", name=f"{name}_conv{index + 1}")(x)
        if batch_norm:
            x = layers.BatchNormalization(name=f"{name}_bn{index + 1}")(x)
        x = layers.Activation("relu", name=f"{name}_relu{index + 1}")(x)
        if index == 0 and dropout:
            x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


def check_input(input_shape: Sequence[int], depth: int) -> None:
    height, width, channels = input_shape
    factor = 2**depth
    for size in (height, width):
        if size is not None and size % factor:
            raise ValueError(f"input size {height}x{width} must be divisible by 2**depth = {factor}")
    if channels not in (1, 3):
        raise ValueError(f"input must have 1 (grey) or 3 (RGB) channels, not {channels}")


def model_input(input_shape, input_dtype: str):
    """The input tensor, and what the first layer sees (uint8 pixels scaled to [0, 1] in the graph)."""
    inputs = keras.Input(tuple(input_shape), dtype=input_dtype, name="image")
    if input_dtype == "uint8":
        return inputs, layers.Rescaling(1.0 / 255.0, name="scale_uint8")(inputs)
    if input_dtype not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"input_dtype must be uint8 or a float type, not {input_dtype!r}")
    return inputs, inputs


def head(x, n_classes: int, activation: str):
    if activation not in ("sigmoid", "softmax"):
        raise ValueError(f"activation must be 'sigmoid' or 'softmax', not {activation!r}")
    if activation == "softmax" and n_classes < 2:
        raise ValueError("a softmax head needs at least 2 classes")
    # float32 output even under mixed precision: probabilities must sum/compare exactly
    return layers.Conv2D(n_classes, 1, activation=activation, dtype="float32", name="head")(x)


def decoder_up(x, filters: int, decoder: str, name: str):
    if decoder == "transpose":
        return layers.Conv2DTranspose(filters, 2, strides=2, padding="same", name=f"{name}_up")(x)
    if decoder == "upsample":
        x = layers.UpSampling2D(2, interpolation="bilinear", name=f"{name}_up")(x)
        return layers.Conv2D(filters, 2, padding="same", name=f"{name}_upconv")(x)
    raise ValueError(f"decoder must be 'transpose' or 'upsample', not {decoder!r}")


def build_unet(
    input_shape: Sequence[int | None] = (512, 512, 3),
    filters: Sequence[int] = DEFAULT_FILTERS,
    dropout: Sequence[float] = DEFAULT_DROPOUT,
    batch_norm: bool = True,
    decoder: str = "transpose",
    n_classes: int = 1,
    activation: str = "sigmoid",
    input_dtype: str = "float32",
    name: str = "unet",
) -> keras.Model:
    """A U-Net with ``len(filters) - 1`` poolings.

    Defaults equal the original prostate U-Net: 512 x 512 x 3, filters
    16-32-64-128-256, four poolings, two 3x3 convolutions with BN per level,
    dropout 0.1/0.1/0.2/0.2/0.3, transposed-convolution upsampling, 1x1 sigmoid.
    With ``input_dtype="uint8"`` the model takes raw 0-255 pixels and scales
    them itself, so tiles travel to the GPU as bytes and are converted there.
    """
    block = lambda x, f, rate, block_name: conv_block(x, f, batch_norm, rate, block_name)  # noqa: E731
    return encoder_decoder(block, input_shape, filters, dropout, decoder, n_classes, activation, input_dtype, name)


def encoder_decoder(block, input_shape, filters, dropout, decoder, n_classes, activation, input_dtype, name):
    """The U shape shared by the U-Net family: ``block(x, filters, dropout, name)`` at every level,
    max pooling down, ``decoder`` up, skip connections concatenated."""
    filters, dropout = tuple(filters), tuple(dropout)
    if len(dropout) != len(filters):
        raise ValueError(f"{len(filters)} levels of filters but {len(dropout)} dropout rates")
    depth = len(filters) - 1
    check_input(input_shape, depth)
    inputs, x = model_input(input_shape, input_dtype)
    skips = []
    for level in range(depth):
        x = block(x, filters[level], dropout[level], f"enc{level + 1}")
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"pool{level + 1}")(x)
    x = block(x, filters[depth], dropout[depth], "bottleneck")
    for level in reversed(range(depth)):
        x = decoder_up(x, filters[level], decoder, f"dec{level + 1}")
        x = layers.Concatenate(name=f"dec{level + 1}_concat")([x, skips[level]])
        x = block(x, filters[level], dropout[level], f"dec{level + 1}")
    return keras.Model(inputs, head(x, n_classes, activation), name=name)
