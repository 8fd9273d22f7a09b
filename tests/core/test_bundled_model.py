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
