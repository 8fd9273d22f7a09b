"""Correcting a store region by region, autosaved drafts, patch datasets, uncertainty ranking, fine-tuning."""

from __future__ import annotations

import json

import numpy as np
import pytest
import zarr
from shapely.geometry import box as rectangle

from napari_cancerseg.annotations import write as write_annotations
from napari_cancerseg.annotations.model import Annotation, AnnotationSet
from napari_cancerseg.annotations.raster import labelled_shapes, rasterise_region
from napari_cancerseg.correction.active import uncertain_regions
from napari_cancerseg.errors import CancersegError
from napari_cancerseg.inference.engine import predict_slide
from napari_cancerseg.io.stores import LabelStore, predicted_chunks
from napari_cancerseg.io.stores.drafts import Draft, pending_drafts
from napari_cancerseg.io.wsi import SlideHandle
from napari_cancerseg.training.patches import balance, extract_patches

from ..conftest import data_path
from .test_inference import CMU, PixelModel, bundle  # noqa: F401 - the tiny bundle fixture


@pytest.fixture
def prediction(tmp_path, bundle):  # noqa: F811
    out = str(tmp_path / "prediction.zarr")
    predict_slide(data_path(CMU), bundle, out, model=PixelModel(), tissue=0.3)
    return out


def test_accepting_a_region_writes_level0_and_rebuilds_only_that_part_of_the_pyramid(prediction):
    store = LabelStore(prediction)
    assert len(store.levels) >= 3
    before = [np.asarray(level[:]) for level in store.levels]
    region = store.region((600, 800, 500, 300), level=1)  # level-0 box -> level-1 window
    assert region.rows == (400, 550) and region.cols == (300, 550)
    labels = store.read_region(region)
    np.testing.assert_array_equal(labels, before[1][400:550, 300:550])
    unchanged = store.accept_region(region, labels)
    assert unchanged.pixels_changed == 0
    for level, old in zip(store.levels, before):
        np.testing.assert_array_equal(level[:], old)  # accepting what was there changes nothing

    edit = labels.copy()
    edit[10:60, 20:90] = 1
    edit[100:140, 0:50] = 0
    correction = store.accept_region(region, edit)
    assert correction.pixels_changed == int((edit != labels).sum()) > 0 and correction.level == 1
    np.testing.assert_array_equal(store.read_region(region), edit)  # read back exactly
    level0 = np.asarray(store.levels[0][:])
    changed = np.repeat(np.repeat(edit != labels, 2, 0), 2, 1)  # level-0 pixels under edited level-1 pixels
    np.testing.assert_array_equal(level0[800:1100, 600:1100][changed], np.repeat(np.repeat(edit, 2, 0), 2, 1)[changed])
    np.testing.assert_array_equal(level0[800:1100, 600:1100][~changed], before[0][800:1100, 600:1100][~changed])
    outside = np.ones(level0.shape, bool)
    outside[800:1100, 600:1100] = False
    np.testing.assert_array_equal(level0[outside], before[0][outside])  # nothing else moved
    assert (level0 != before[0]).sum() == changed.sum() - (before[0][800:1100, 600:1100][changed]
                                                          == np.repeat(np.repeat(edit, 2, 0), 2, 1)[changed]).sum()
    for k in range(1, len(store.levels)):  # every level is still level 0 subsampled
        np.testing.assert_array_equal(store.levels[k][:], level0[::2 ** k, ::2 ** k])
    probabilities = np.asarray(zarr.open_array(f"{prediction}/probabilities")[:, 800:1100, 600:1100])
    np.testing.assert_array_equal(probabilities[1], np.where(level0[800:1100, 600:1100] == 1, 255, 0))

    second = store.accept_region(store.region((0, 0, 256, 256), level=0), np.ones((256, 256), np.uint8))
    recorded = LabelStore(prediction).corrections  # reopened: the record is on disk
    assert [c["box"] for c in recorded] == [[600, 800, 500, 300], [600, 800, 500, 300], [0, 0, 256, 256]]
    assert recorded[-1]["pixels_changed"] == second.pixels_changed and recorded[-1]["slide"].endswith(".svs")
    with pytest.raises(CancersegError, match="outside the slide"):
        store.region((5000, 5000, 10, 10), 0)


def test_drafts_survive_and_are_replaced_atomically(prediction):
    store = LabelStore(prediction)
    region = store.region((100, 100, 300, 200), 0)
    draft = Draft.new(prediction, region)
    first = store.read_region(region)
    draft.save(first)
    edited = first.copy()
    edited[:50] = 1
    draft.save(edited)
    (found,) = pending_drafts(prediction)  # what a new session finds
    assert found.region == region
    np.testing.assert_array_equal(found.load(), edited)
    # a save killed half-way leaves a temporary file behind, never a broken draft
    (found.path.parent / f"{found.ident}.tmp-999.npz").write_bytes(b"half a file")
    (only,) = pending_drafts(prediction)
    np.testing.assert_array_equal(only.load(), edited)
    only.discard()
    assert pending_drafts(prediction) == []


def _cmu_annotations(path):
    annotations = AnnotationSet([
        Annotation(rectangle(300, 500, 900, 1100), "Gleason 4"),
        Annotation(rectangle(1300, 1800, 1700, 2300), "benign"),
    ])
    write_annotations(annotations, path)
    return str(path)


def test_patches_equal_openslide_reads_and_rasterised_annotations(tmp_path):
    slide = data_path(CMU)
    geojson = _cmu_annotations(tmp_path / "cmu.geojson")
    out = str(tmp_path / "patches.zarr")
    summary = extract_patches(slide, out, size=128, mpp=0.5, annotations=geojson)
    group = zarr.open_group(out, mode="r")
    images, masks, coords = group["images"], group["masks"], np.asarray(group["coords"][:])
    assert images.shape == (summary.patches, 128, 128, 3) and masks.shape == (summary.patches, 128, 128)
    assert coords.shape == (summary.patches, 4) and (coords[:, 2:] == 128).all()
    assert group.attrs["level"] == 0 and group.attrs["mpp"] == pytest.approx(0.499, abs=1e-3)
    import openslide

    reader = openslide.OpenSlide(slide)
    shapes = labelled_shapes(AnnotationSet([Annotation(rectangle(300, 500, 900, 1100), "Gleason 4"),
                                            Annotation(rectangle(1300, 1800, 1700, 2300), "benign")]))
    for i in range(summary.patches):
        x, y, w, h = (int(v) for v in coords[i])
        expected = np.asarray(reader.read_region((x, y), 0, (w, h)).convert("RGB"))
        np.testing.assert_array_equal(images[i], expected)
        np.testing.assert_array_equal(masks[i], rasterise_region(shapes, x, y, w, h))
    # balance: tumour patches all kept, the other categories capped at their number
    assert summary.categories["tumour"] == summary.candidates["tumour"] > 0
    assert all(n <= summary.categories["tumour"] for n in summary.categories.values())
    assert summary.categories.get("background", 0) > 0 and summary.categories.get("benign", 0) > 0  # negatives kept
    assert summary.patches_per_class["Gleason pattern 4"] == summary.categories["tumour"]


def test_balance_keeps_every_tumour_and_caps_the_rest():
    categories = ["background"] * 50 + ["tumour"] * 7 + ["benign"] * 3
    kept = balance(categories, seed=1)
    counts = {c: sum(categories[i] == c for i in kept) for c in set(categories)}
    assert counts == {"background": 7, "tumour": 7, "benign": 3}
    assert balance(categories, seed=1) == kept and balance(categories, seed=2) != kept


def test_patches_from_a_corrected_store_take_the_corrected_labels(tmp_path, prediction):
    store = LabelStore(prediction)
    region = store.region((400, 400, 512, 512), 0)
    store.accept_region(region, np.full(region.shape, 1, np.uint8))
    out = str(tmp_path / "corrected.zarr")
    summary = extract_patches(data_path(CMU), out, size=128, store=prediction)
    group = zarr.open_group(out, mode="r")
    level0 = np.asarray(store.levels[0][:])
    for mask, (x, y, w, h) in zip(group["masks"], np.asarray(group["coords"][:])):
        np.testing.assert_array_equal(mask, level0[y:y + h, x:x + w])
    assert summary.patches_per_class["nucleus"] >= 16  # the 512 px region holds 16 patches of label 1
    assert group.attrs["classes"][1]["name"] == "nucleus"


def test_uncertain_regions_rank_chunks_by_entropy(prediction):
    probabilities = zarr.open_array(f"{prediction}/probabilities", mode="r+")
    done = predicted_chunks(zarr.open_group(prediction, mode="r"))
    (r1, c1), (r2, c2) = np.argwhere(done)[:2]
    probabilities[0] = 255  # certain everywhere...
    probabilities[1] = 0
    probabilities[:, r1 * 96:(r1 + 1) * 96, c1 * 96:(c1 + 1) * 96] = 128  # p = 0.5: as unsure as it gets
    probabilities[0, r2 * 96:(r2 + 1) * 96, c2 * 96:(c2 + 1) * 96] = 64
    probabilities[1, r2 * 96:(r2 + 1) * 96, c2 * 96:(c2 + 1) * 96] = 191
    first, second = uncertain_regions(prediction, k=2)
    half = 128 / 255
    assert first.box == (c1 * 96, r1 * 96, 96, 96)
    assert first.entropy == pytest.approx(float(-2 * half * np.log(half) / np.log(2)), abs=1e-5)
    p = np.array([64, 191]) / 255
    assert second.box == (c2 * 96, r2 * 96, 96, 96)
    assert second.entropy == pytest.approx(float(-(p * np.log(p)).sum() / np.log(2)), abs=1e-5)
    LabelStore(prediction).accept_region(LabelStore(prediction).region(first.box, 0), np.zeros((96, 96), np.uint8))
    assert uncertain_regions(prediction, k=1)[0].box == second.box  # a corrected chunk is settled


def test_fine_tuning_from_patches_saves_the_next_version_beside_the_bundle(tmp_path, capsys):
    pytest.importorskip("keras")
    import shutil

    from napari_cancerseg import NUCLEI_MODEL, resource_path
    from napari_cancerseg.cli import main
    from napari_cancerseg.models.bundle import bundle_info, load_bundle

    base = str(tmp_path / "nuclei.keras")
    shutil.copy(resource_path(NUCLEI_MODEL), base)
    patches = str(tmp_path / "p.zarr")
    extract_patches(data_path(CMU), patches, size=128, annotations=_cmu_annotations(tmp_path / "a.geojson"))
    assert main(["train", "--patches", patches, "--init", base, "--epochs", "1", "--steps", "2", "--batch", "2",
                 "--size", "128", "--progress-json", "--lr", "1e-2"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert lines[0]["event"] == "started"  # before TensorFlow loads: the dock shows "loading the model"
    steps = [m for m in lines if m.get("stage") == "step"]  # progress messages of the "step" stage
    assert [m["step"] for m in steps] == [1, 2] and all(np.isfinite(m["loss"]) for m in steps)
    done = lines[-1]
    assert done["event"] == "done" and done["bundle"].endswith("nuclei-v1.1.0.keras")
    new = bundle_info(done["bundle"])
    old = bundle_info(base)
    assert new.version == "1.1.0" and new.classes == old.classes and new.recipe == old.recipe
    assert new.card["fine_tuned_from"]["version"] == old.version
    tile = SlideHandle.shared(data_path(CMU)).read(0, 600, 600, 256, 256)[None]
    assert not np.array_equal(load_bundle(done["bundle"]).predict_batch(tile, as_uint8=True),
                              load_bundle(base).predict_batch(tile, as_uint8=True))


def test_a_correction_is_recorded_through_the_store_attributes_and_keeps_the_prediction_whole(prediction):
    from napari_cancerseg.io import stores

    before = stores.read_attributes(prediction)
    store = LabelStore(prediction)
    region = store.region((600, 800, 200, 200), level=0)
    edit = store.read_region(region).copy()
    edit[:50, :50] = 1
    correction = store.accept_region(region, edit)
    after = stores.read_attributes(prediction)
    assert [c["box"] for c in after.corrections] == [[600, 800, 200, 200]]
    assert after.corrections[0]["pixels_changed"] == correction.pixels_changed
    np.testing.assert_array_equal(after.expected_chunks, before.expected_chunks)  # identity and plan untouched
    assert after.complete and after.grid == before.grid and after.slide == before.slide
    assert stores.missing_chunks(prediction) is None  # corrected chunks are written chunks
    assert LabelStore(prediction).corrections == after.corrections  # a reopened store sees it
