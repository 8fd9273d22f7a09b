"""Evaluation metrics against references: Dice of real masks, dilation, brute-force hd95, file formats, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from napari_cancerseg.errors import CancersegError
from napari_cancerseg.evaluation import (
    LabelImage,
    evaluate_pair,
    evaluate_paths,
    hd95,
    read_label_image,
    score,
    surface,
)

from ..conftest import data_path, stand_in_path

PROSTATE = "mri/prostate_seg_one_label.nii.gz"


def brute_force_hd95(a, b, spacing):
    """Every surface point against every surface point: the definition, with no distance transform."""
    pa = np.argwhere(surface(a)) * np.asarray(spacing)
    pb = np.argwhere(surface(b)) * np.asarray(spacing)
    distances = np.sqrt(((pa[:, None, :] - pb[None, :, :]) ** 2).sum(-1))
    return max(np.percentile(distances.min(axis=1), 95), np.percentile(distances.min(axis=0), 95))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_hd95_equals_brute_force_on_small_masks(seed):
    rng = np.random.default_rng(seed)
    a = ndimage.binary_opening(rng.random((9, 24, 20)) > 0.45)
    b = ndimage.binary_dilation(a, iterations=2) & (rng.random(a.shape) > 0.2)
    spacing = (4.0, 0.6, 0.7)  # anisotropic, like the prostate MRI
    assert hd95(a, b, spacing) == pytest.approx(brute_force_hd95(a, b, spacing), rel=1e-9)


def test_hd95_of_a_shifted_square_is_the_shift():
    a = np.zeros((50, 50), bool)
    a[10:30, 10:30] = True
    b = np.roll(a, 3, axis=1)
    assert hd95(a, b, (0.5, 2.0)) == pytest.approx(6.0)  # 3 px along x at 2 mm
    assert hd95(a, a, (1, 1)) == 0.0 and hd95(a, np.zeros_like(a), (1, 1)) is None
    assert hd95(np.zeros_like(a), np.zeros_like(a), (1, 1)) == 0.0


def test_real_prostate_mask_against_itself_and_its_dilation():
    truth = read_label_image(data_path(PROSTATE))
    assert truth.labels.shape == (15, 81, 105) and truth.unit == "mm"  # canonical (z, y, x)
    assert sorted(truth.spacing) == pytest.approx([0.6, 0.6, 4.0], abs=1e-3)
    (same,) = evaluate_pair(truth, truth)
    assert same.dice == 1.0 and same.iou == 1.0 and same.hd95 == 0.0 and same.precision == same.recall == 1.0
    mask = truth.labels == 1
    dilated = ndimage.binary_dilation(mask, iterations=1).astype(np.uint8)
    tp = (mask & (dilated == 1)).sum()
    reference_dice = 2 * tp / (mask.sum() + dilated.sum())  # numpy reference
    result = score(dilated, truth.labels, 1, truth.spacing, "prostate", "mm")
    assert result.dice == pytest.approx(reference_dice) and result.recall == 1.0
    assert result.precision == pytest.approx(mask.sum() / dilated.sum())
    assert result.iou == pytest.approx(mask.sum() / dilated.sum())
    assert 0 < result.hd95 <= 4.0 + 1e-4  # one voxel out, at most a slice (4 mm) away


def test_two_labels_empty_masks_and_grid_mismatch():
    two = read_label_image(stand_in_path("mri/prostate_seg_two_labels.nii.gz"))
    empty = read_label_image(stand_in_path("mri/prostate_seg_empty.nii.gz"))
    scores = evaluate_pair(empty, two)
    assert [s.label for s in scores] == sorted(set(np.unique(two.labels)) - {0}) and len(scores) == 2
    assert all(s.dice == 0.0 and s.recall == 0.0 and s.precision is None and s.hd95 is None for s in scores)
    cropped = LabelImage("x", two.labels[:5], two.spacing, "mm", "cropped.nii.gz")
    with pytest.raises(CancersegError, match="cropped.nii.gz.*not on the same grid"):
        evaluate_pair(two, cropped)


def test_cli_evaluate_folders_of_pngs_and_json(tmp_path, capsys):
    from PIL import Image

    from napari_cancerseg.cli import main

    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    for name in ("TCGA_CS_4941_19960909_11", "TCGA_CS_4942_19970222_12"):
        source = data_path(f"brain/lgg-slices/masks/{name}.jpg")
        mask = (np.asarray(Image.open(source).convert("L")) >= 128).astype(np.uint8)
        Image.fromarray(mask).save(gt / f"{name}.png")
        Image.fromarray(ndimage.binary_erosion(mask, iterations=2).astype(np.uint8)).save(pred / f"{name}_mask.png")
    assert main(["evaluate", str(pred), str(gt), "--json"]) == 0
    cases = json.loads(capsys.readouterr().out)["cases"]
    assert [c["case"] for c in cases] == ["TCGA_CS_4941_19960909_11", "TCGA_CS_4942_19970222_12"]
    assert set(cases[0]) == {"case", "label", "dice", "iou", "precision", "recall", "hd95", "unit"}
    for c in cases:  # eroded twice: nothing extra, some missed, surfaces 2 to 2.83 px apart
        assert c["precision"] == 1.0 and c["recall"] < 1.0 and 2.0 <= c["hd95"] <= 2 * np.sqrt(2) + 1e-9
        truth = np.asarray(Image.open(gt / f"{c['case']}.png")) == 1
        predicted = np.asarray(Image.open(pred / f"{c['case']}_mask.png")) == 1
        assert c["hd95"] == pytest.approx(brute_force_hd95(predicted, truth, (1.0, 1.0)))
    assert evaluate_paths(str(pred), str(gt))[0].dice == cases[0]["dice"]
