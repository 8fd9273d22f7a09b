"""The bundled nucleus U-Net, re-measured on the images it never saw in training or early stopping."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("keras")

from napari_cancerseg import NUCLEI_MODEL, resource_path  # noqa: E402
from napari_cancerseg.models import load_bundle, metrics  # noqa: E402
from napari_cancerseg.models.bundle import bundle_info  # noqa: E402

from ..conftest import data_path  # noqa: E402

BUNDLE = Path(resource_path(NUCLEI_MODEL))


def _image_and_mask(name: str):
    from PIL import Image

    image = np.asarray(Image.open(data_path(f"nuclei/{name}.png")).convert("RGB"))
    mask = np.asarray(Image.open(data_path(f"nuclei/{name}_labels.png"))) > 0
    return image, mask


def test_card_names_its_held_out_images_and_size():
    info = bundle_info(BUNDLE)
    split = info.card["split"]
    held_out = split["test (held out, reported)"]
    assert len(held_out) >= 2
    assert not set(held_out) & set(split["train"]) and not set(held_out) & set(split["validation (early stopping)"])
    assert BUNDLE.stat().st_size < 10 * 1024**2
    assert info.class_names == {0: "background", 1: "nucleus"}


def test_bundled_model_dice_on_held_out_images():
    info = bundle_info(BUNDLE)
    bundle = load_bundle(BUNDLE)
    scores = []
    for name in info.card["split"]["test (held out, reported)"]:
        image, truth = _image_and_mask(name)
        probabilities = bundle.predict_tile(image)
        scores.append(metrics.dice(probabilities[..., 1] > 0.5, truth))
    assert min(scores) >= 0.75, scores
    # the card's numbers are what this model really scores (any backend: same weights)
    reported = [s["dice"] for s in info.card["metrics"]["test_per_image"]]
    np.testing.assert_allclose(scores, reported, atol=0.01)


@pytest.mark.parametrize("as_uint8", [True, False], ids=["uint8 path", "float path"])
def test_bundle_forward_in_slices_gives_the_whole_batch_probabilities(as_uint8):
    """A batch run as forward passes of a few tiles (PyTorch on the CPU does so to bound its activations' memory)
    gives what one forward of the whole batch gives, tile for tile; the short last slice is padded to the others'
    shape where the backend compiles per shape (TensorFlow, JAX), not on PyTorch."""
    import keras

    image, _ = _image_and_mask(bundle_info(BUNDLE).card["split"]["test (held out, reported)"][0])
    tiles = np.stack([image[y:y + 96, x:x + 96] for y, x in ((0, 0), (0, 96), (96, 0), (96, 96), (150, 40))])
    whole = load_bundle(BUNDLE)
    whole.forward_tiles = len(tiles)
    expected = whole.predict_batch(tiles, as_uint8=as_uint8)

    sliced = load_bundle(BUNDLE)
    sliced.forward_tiles = 2
    shapes = []
    model = sliced._uint8_model if as_uint8 else sliced.model
    forward = model.predict_on_batch
    model.predict_on_batch = lambda batch: shapes.append(batch.shape[0]) or forward(batch)
    got = sliced.predict_batch(tiles, as_uint8=as_uint8)

    eager = keras.backend.backend() == "torch"
    assert shapes == ([2, 2, 1] if eager else [2, 2, 2])
    assert got.shape == expected.shape == (5, 96, 96, 2)
    assert len({float(p[..., 1].mean()) for p in expected}) == 5  # distinct tiles: a slice out of order would show
    if as_uint8:
        assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1  # rounding of float noise at most
    else:
        np.testing.assert_allclose(got, expected, atol=1e-5)
