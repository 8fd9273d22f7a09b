"""MRI and mammograms dock (classify, route, segment in a model process) and the evaluation dock."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from napari_cancerseg.evaluation import evaluate_paths

from ..conftest import data_path, stand_in_path

PLUGIN = "napari-cancerseg"
PROSTATE = "mri/prostate_t2.nii.gz"


def _bundles(tmp_path):
    """An untrained 1-channel U-Net and an untrained brain/breast classifier, made in a child process."""
    unet, organ = str(tmp_path / "mri_unet.keras"), str(tmp_path / "organ.keras")
    script = textwrap.dedent(f"""
        from napari_cancerseg.models.bundle import Recipe, save_bundle
        from napari_cancerseg.models.classifier import build_classifier
        from napari_cancerseg.models.unet import build_unet
        save_bundle(build_unet(input_shape=(None, None, 1), filters=(4, 8), dropout=(0, 0), n_classes=2,
                               activation="softmax", input_dtype="float32"), {unet!r}, name="mri", version="0",
                    architecture={{"builder": "unet"}}, recipe=Recipe(tile_size=64, overlap=0, mpp=None, channels=1,
                    input_dtype="float32", divisor=2), classes=[{{"label": 0, "name": "background"}},
                    {{"label": 1, "name": "prostate"}}])
        save_bundle(build_classifier(2, (64, 64, 3), dense_units=8), {organ!r}, name="organ", version="0",
                    architecture={{"builder": "efficientnetb0_classifier", "task": "organ"}},
                    recipe=Recipe(tile_size=64, overlap=0, mpp=None, divisor=1),
                    classes=[{{"label": 0, "name": "brain"}}, {{"label": 1, "name": "breast"}}])
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300, capture_output=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    return unet, organ


def test_classify_route_and_segment_a_volume_in_3d(make_napari_viewer, qtbot, tmp_path):
    unet, organ = _bundles(tmp_path)
    viewer = make_napari_viewer(show=True)  # a shown window: the 3D screenshot below is really rendered
    image = viewer.open(data_path(PROSTATE), plugin=PLUGIN)[0]
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "MRI and mammograms")
    assert widget.probabilities.native.isHidden()  # no empty table with a header before a classification
    widget.image.value, widget.classifier.value = image, organ
    widget.routes.value = f"brain={unet}, breast={unet}"
    widget.classify()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=300_000)
    probabilities = widget.result["probabilities"]
    assert set(probabilities) == {"brain", "breast"} and sum(probabilities.values()) == pytest.approx(1, abs=1e-4)
    assert widget.probabilities.shape == (2, 1) and not widget.probabilities.native.isHidden()
    assert str(widget.model.value) == unet  # routed

    # the legend shows the routed bundle's classes before the run
    assert [name for name, _ in widget.legend.entries] == ["prostate"]
    chosen = tmp_path / "chosen" / "prostate_seg.nii.gz"
    chosen.parent.mkdir()
    widget.out.value = str(chosen)
    widget.segment()
    assert widget.progress.value == 0 and widget.cancel_button.enabled  # running: Cancel offered
    qtbot.waitUntil(lambda: widget.worker is None, timeout=300_000)
    assert widget.result["kind"] == "volume", widget.status.value
    assert widget.result["out"] == str(chosen) and chosen.is_file()  # saved where chosen, nowhere else
    assert widget.progress.value == widget.progress.max and not widget.cancel_button.enabled
    labels = viewer.layers[widget.result["layers"][0]]
    assert labels.data.shape == image.data.shape == (15, 81, 105)
    assert np.allclose(labels.scale, image.scale) and np.allclose(labels.translate, image.translate)
    # volumes in mL per label, by class name: voxel count x voxel volume of the saved NIfTI, read here with nibabel
    import nibabel as nib

    from napari_cancerseg.widgets.images import ml_text

    saved = nib.load(widget.result["out"])
    voxels = np.asarray(saved.dataobj)
    voxel_mm3 = float(np.prod(saved.header.get_zooms()[:3]))
    assert voxel_mm3 == pytest.approx(0.6 * 0.6 * 4, rel=1e-4)  # the README's voxels
    assert "voxels per label" not in widget.status.value
    volumes = widget.result["volumes_ml"]
    for label, name in ((0, "background"), (1, "prostate")):
        millilitres = np.count_nonzero(voxels == label) * voxel_mm3 / 1000
        # a label the volume does not hold has no entry (the untrained U-Net may find no prostate at all)
        assert (str(label) in volumes) == (millilitres > 0), volumes
        assert volumes.get(str(label), 0.0) == pytest.approx(millilitres, rel=1e-6)
        if label and millilitres:
            assert f"{name} {ml_text(millilitres)}" in widget.status.value, widget.status.value
        elif label:
            assert "nothing found (background only)" in widget.status.value, widget.status.value
    # the result's classes: the bundle's names in the layer's features (named on hover) and in the legend, in the
    # layer's own colours
    assert list(labels.features["class"]) == ["background", "prostate"]
    assert [name for name, _ in widget.legend.entries] == ["prostate"]
    np.testing.assert_allclose(np.asarray(widget.legend.entries[0][1]) / 255, labels.get_color(1), atol=1 / 255)
    assert widget.legend_title.value == f"classes of {labels.name}"
    folder = os.environ.get("CANCERSEG_SCREENSHOTS")
    if folder:
        os.makedirs(folder, exist_ok=True)
        widget.native.widget().grab().save(os.path.join(folder, "image_dock_after_segment.png"))

    # a file that is not ours at the chosen path is never replaced: a clear refusal, nothing run
    foreign = tmp_path / "someone_elses.nii.gz"
    foreign.write_bytes(b"not a segmentation of ours")
    widget.out.value = str(foreign)
    widget.segment()
    assert widget.worker is None and foreign.read_bytes() == b"not a segmentation of ours"
    assert widget.status.value.startswith(f"not segmented: {foreign} already exists"), widget.status.value
    widget.out.value = str(tmp_path / "volume.zarr")  # a volume is saved as NIfTI: said before anything runs
    widget.segment()
    assert widget.worker is None and ".nii.gz" in widget.status.value and not (tmp_path / "volume.zarr").exists()

    viewer.dims.ndisplay = 3  # the 3D view renders the volume and its labels
    viewer.reset_view()
    shot = viewer.screenshot(canvas_only=True)
    assert shot.shape[-1] == 4 and shot[..., :3].max() > 0

    assert "tensorflow" not in sys.modules


def test_evaluation_dock_matches_the_core_and_exports(make_napari_viewer, qtbot, tmp_path):
    viewer = make_napari_viewer()
    one = viewer.open(stand_in_path("mri/prostate_seg_one_label.nii.gz"), plugin=PLUGIN)[0]
    two = viewer.open(stand_in_path("mri/prostate_seg_two_labels.nii.gz"), plugin=PLUGIN)[0]
    _, widget = viewer.window.add_plugin_dock_widget(PLUGIN, "Evaluate segmentation")
    assert widget.table.native.isHidden()  # no empty "data | columns" table before there are scores
    one.features = {"index": [0, 1], "class": ["background", "prostate"]}
    widget.prediction.value, widget.truth.value = one, two
    widget.evaluate()
    qtbot.waitUntil(lambda: widget.worker is None, timeout=60_000)
    reference = evaluate_paths(stand_in_path("mri/prostate_seg_one_label.nii.gz"),
                               stand_in_path("mri/prostate_seg_two_labels.nii.gz"))
    assert [(s.label, s.dice, s.hd95) for s in widget.scores] == [(s.label, s.dice, s.hd95) for s in reference]
    assert widget.scores[0].unit == "mm" and widget.table.shape[0] == len(reference)
    assert not widget.table.native.isHidden()
    # rows named by the prediction's classes (its features), where it has them
    assert list(widget.table.value["index"]) == ["1 prostate", "label 2"]
    widget.csv_path.value = str(tmp_path / "scores.csv")
    text = open(widget.export()).read()
    assert text.startswith("case,label,dice,iou,precision,recall,hd95,unit")
    assert len(text.splitlines()) == 1 + len(reference)


def test_2d_areas_are_in_mm2_only_when_the_spacing_is_known():
    from napari_cancerseg.grading.report import area_text
    from napari_cancerseg.widgets.images import amounts_text

    classes = {"0": "background", "1": "mass"}
    # 0.05 mm pixels (2,500 µm² each): 2,000 px = 5,000,000 µm² = 5 mm²; 2 px = 5,000 µm², under 0.01 mm²
    spaced = amounts_text({"classes": classes, "areas": {"0": 1e10, "1": 2_000 * 2500.0}, "area_unit": "um2"})
    assert spaced == "mass 5.00 mm²" == f"mass {area_text(2_000 * 2500.0)}"
    assert amounts_text({"classes": classes, "areas": {"1": 2 * 2500.0}, "area_unit": "um2"}) == "mass 5,000 µm²"
    unknown = amounts_text({"classes": classes, "areas": {"0": 10.0, "1": 1234.0}, "area_unit": "px2"})
    assert unknown.startswith("mass 1,234 px²") and "pixel spacing unknown" in unknown and "mm²" not in unknown
