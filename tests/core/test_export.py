"""ONNX export: onnxruntime gives what Keras gives on a real H&E tile, and the file says what the model is."""

from __future__ import annotations

import os

import numpy as np
import pytest
from PIL import Image

from napari_cancerseg import NUCLEI_MODEL, resource_path
from napari_cancerseg.errors import CancersegError

from ..conftest import stand_in_path

pytest.importorskip("onnxruntime")
pytest.importorskip("tf2onnx")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from napari_cancerseg.models.export import export_onnx

    tile = np.asarray(Image.open(stand_in_path("nuclei/image01.png")).convert("RGB"))[:256, :256]
    out = str(tmp_path_factory.mktemp("onnx") / "nuclei.onnx")
    return export_onnx(resource_path(NUCLEI_MODEL), out, check_tile=tile), tile


def test_onnxruntime_equals_keras_on_a_real_tile(exported):
    import onnxruntime

    from napari_cancerseg.models.bundle import load_bundle

    result, tile = exported
    assert result.max_difference <= 1e-4
    other = np.asarray(Image.open(stand_in_path("nuclei/image02.png")).convert("RGB"))[64:320, 32:288]  # not checked
    session = onnxruntime.InferenceSession(result.path, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: other[None]})[0]
    keras_output = np.asarray(load_bundle(resource_path(NUCLEI_MODEL)).model(other[None]))
    assert got.shape == keras_output.shape == (1, 256, 256, 1)
    assert np.abs(got - keras_output).max() <= 1e-4
    assert 0.01 < (got > 0.5).mean() < 0.9  # real nuclei in the tile: the comparison means something


def test_the_onnx_file_carries_the_bundles_recipe_and_classes(exported):
    from napari_cancerseg.models.bundle import bundle_info
    from napari_cancerseg.models.export import onnx_metadata

    metadata = onnx_metadata(exported[0].path)
    info = bundle_info(resource_path(NUCLEI_MODEL))
    assert (metadata["name"], metadata["version"]) == (info.name, info.version)
    assert metadata["recipe"]["tile_size"] == info.recipe.tile_size and metadata["classes"] == info.classes


def test_an_existing_file_is_not_overwritten(exported, tmp_path):
    from napari_cancerseg.models.export import export_onnx

    target = tmp_path / "mine.onnx"
    target.write_bytes(b"someone's model")
    with pytest.raises(CancersegError, match="already exists"):
        export_onnx(resource_path(NUCLEI_MODEL), str(target))
    assert target.read_bytes() == b"someone's model" and os.listdir(tmp_path) == ["mine.onnx"]
