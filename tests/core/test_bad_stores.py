"""Bad and odd stores (issue 15): each family gives a clear error naming the store, or the right answer.

Every input is built from a real prediction of the real CMU slide (or real nucleus labels), then broken the
way a user, a full disk, a kill or an attacker would break it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from napari_cancerseg._writer import write_labels_zarr
from napari_cancerseg.errors import CancersegError, ReadError, WriteError
from napari_cancerseg.grading.report import grade_store
from napari_cancerseg.inference.engine import predict_slide
from napari_cancerseg.io import stores
from napari_cancerseg.io.stores import LabelStore

from ..conftest import data_path, stand_in_path
from .test_inference import CMU, PixelModel, bundle  # noqa: F401 - the tiny bundle fixture

NDPI = "wsi/test3-DAPI-2-387.ndpi"


@pytest.fixture(scope="module")
def complete(tmp_path_factory, bundle):  # noqa: F811
    """A finished prediction of the real CMU slide (glass skipped at tissue 0.5)."""
    out = str(tmp_path_factory.mktemp("complete") / "complete.zarr")
    predict_slide(data_path(CMU), bundle, out, model=PixelModel(), tissue=0.5)
    _call_dark_pixels_tumour(out)
    return out


def _call_dark_pixels_tumour(path: str) -> None:
    """The tiny bundle's class 1 is "nucleus": named "tumour" here so that grade has something to measure."""
    _edit_attrs(path, lambda a: a["cancerseg"].update(
        classes=[{"label": 0, "name": "background"}, {"label": 1, "name": "tumour"}]))


@pytest.fixture
def store(tmp_path, complete):
    """A copy of the finished prediction, to break."""
    copy = str(tmp_path / "copy.zarr")
    shutil.copytree(complete, copy)
    return copy


def _edit_attrs(path: str, edit) -> None:
    meta_path = os.path.join(path, ".zattrs")
    with open(meta_path) as fh:
        attrs = json.load(fh)
    edit(attrs)
    with open(meta_path, "w") as fh:
        json.dump(attrs, fh)  # allow_nan: a hand-edited or foreign store may hold NaN


def _all_readers(path: str) -> list:
    """Every way a store is opened: the napari reader (and evaluate), correction/grading, grading itself."""
    return [lambda: stores.read(path)[0][0][0].compute(), lambda: LabelStore(path), lambda: grade_store(path)]


def _refused(path: str, *words: str) -> None:
    for open_it in _all_readers(path):
        with pytest.raises(CancersegError) as info:
            open_it()
        message = str(info.value)
        assert path in message, message
        for word in words:
            assert word in message, message


# ---- traversal paths (issue 15, item 8) -----------------------------------------------------------

@pytest.mark.bad_input("clean error")
@pytest.mark.parametrize("level_path", ["../outside", "/etc", "labels/../../outside", "labels\\0", ""])
def test_level_paths_outside_the_store_are_refused(store, tmp_path, level_path):
    outside = tmp_path / "outside"
    shutil.copytree(os.path.join(store, "labels", "0"), outside)  # a readable array out there: never read
    _edit_attrs(store, lambda a: a["multiscales"][0]["datasets"][0].update(path=level_path))
    _refused(store, "level path")


@pytest.mark.bad_input("clean error")
def test_a_level_linked_out_of_the_store_is_refused(store, tmp_path):
    outside = tmp_path / "outside"
    shutil.copytree(os.path.join(store, "labels", "1"), outside)
    shutil.rmtree(os.path.join(store, "labels", "1"))
    os.symlink(outside, os.path.join(store, "labels", "1"))
    _refused(store, "outside the store")


# ---- NaN, Infinity, negative and zero numbers (issue 15, item 2) ----------------------------------

@pytest.mark.bad_input("clean error")
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -0.499, 0.0, "0.5"])
def test_bad_scales_are_refused(store, value):
    _edit_attrs(store, lambda a: a["multiscales"][0]["datasets"][0]["coordinateTransformations"][0].update(
        scale=[value, 0.499]))
    _refused(store, "scale")


@pytest.mark.bad_input("clean error")
@pytest.mark.parametrize(("key", "value"), [("mpp", float("nan")), ("mpp", -0.5), ("downsample", 0),
                                            ("downsample", float("inf")), ("tissue_threshold", 2)])
def test_bad_numbers_in_the_store_attributes_are_refused(store, key, value):
    _edit_attrs(store, lambda a: a["cancerseg"].update({key: value}))
    _refused(store, key)


@pytest.mark.bad_input("right answer")
def test_a_store_graded_against_itself_after_a_round_trip_of_its_attributes(store):
    """Reading and rewriting the attributes (the one reader, the one writer) changes nothing."""
    before = Path(store, ".zattrs").read_text()
    stores.write_attributes(store, stores.read_attributes(store))
    assert json.loads(Path(store, ".zattrs").read_text()) == json.loads(before)


# ---- oversize declarations (issue 15, item 3) -----------------------------------------------------

@pytest.mark.bad_input("clean error")
@pytest.mark.parametrize(("shape", "chunks"), [([10**7, 10**7], [96, 96]), ([5000, 5000], [5000, 5000 * 20])])
def test_oversize_declared_arrays_are_refused_quickly(store, shape, chunks):
    meta_path = os.path.join(store, "labels", "0", ".zarray")
    meta = json.loads(Path(meta_path).read_text())
    meta.update(shape=shape, chunks=chunks)
    Path(meta_path).write_text(json.dumps(meta))
    started = time.perf_counter()
    _refused(store, "labels/0")
    assert time.perf_counter() - started < 5  # refused from the declaration, nothing allocated or listed


# ---- missing chunks (issue 15, item 2) ------------------------------------------------------------

@pytest.mark.bad_input("clean error")
def test_a_store_with_missing_chunks_is_incomplete_for_grade_evaluate_and_the_viewer(tmp_path, bundle):  # noqa: F811
    from napari_cancerseg.evaluation import read_label_image

    out = str(tmp_path / "stopped.zarr")
    summary = predict_slide(data_path(CMU), bundle, out, model=PixelModel(), tissue=0.5, stop_after_chunks=20)
    assert summary.cancelled
    attributes = stores.read_attributes(out)
    expected = int(attributes.expected_chunks.sum())
    # the share skipped as glass, as recorded: the chunks below the tissue threshold
    assert attributes.glass_fraction == pytest.approx(1 - expected / attributes.expected_chunks.size)
    assert summary.chunks_skipped_glass == attributes.expected_chunks.size - expected
    assert summary.glass_fraction == pytest.approx(attributes.glass_fraction)  # the run says what the store says
    assert f"({summary.glass_fraction:.0%} of the slide not predicted)" in summary.line()
    missing, total = stores.missing_chunks(out)
    assert total == expected and missing == expected - int(stores.predicted_chunks(
        __import__("zarr").open_group(out)).sum()) > 0
    with pytest.raises(CancersegError, match=f"incomplete prediction: {missing} of {total} predicted chunks"):
        grade_store(out)
    (_, kwargs, _), = stores.read(out)
    assert kwargs["metadata"]["incomplete"] == {"missing_chunks": missing, "expected_chunks": total}
    assert f"incomplete: {missing} of {total} chunks missing" in kwargs["name"]
    with pytest.raises(CancersegError, match="incomplete"):
        read_label_image(out)
    predict_slide(data_path(CMU), bundle, out, model=PixelModel(), tissue=0.5)  # resumed: complete now
    assert stores.missing_chunks(out) is None
    _call_dark_pixels_tumour(out)
    assert grade_store(out).unit == "um2"


@pytest.mark.bad_input("clean error")
def test_a_deleted_chunk_of_a_finished_store_is_missing_not_background(store):
    written = np.argwhere(stores.ChunkFiles(__import__("zarr").open_array(f"{store}/probabilities")).written()[0])
    row, col = written[len(written) // 2]
    os.unlink(os.path.join(store, "probabilities", "0", str(row), str(col)))
    assert stores.missing_chunks(store) == (1, len(written))
    with pytest.raises(CancersegError, match="1 of"):
        grade_store(store)


@pytest.mark.bad_input("clean error")
def test_label_values_past_the_class_table_are_refused_by_grade(tmp_path):
    labels = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(
        stand_in_path("nuclei/image01_labels.png")), np.uint16)  # real nucleus instance labels, values up to 100s
    assert labels.max() > 255
    path = str(tmp_path / "instances.zarr")
    stores.write_labels(path, stores.label_pyramid(labels), (0.5, 0.5), ("um", "um"),
                        properties={"classes": [{"label": 0, "name": "background"}, {"label": 1, "name": "tumour"}]})
    with pytest.raises(CancersegError, match=rf"{path}: label values 2, 3, .* not in the store's class table"):
        grade_store(path)


# ---- existing paths as outputs (issue 15, item 1) -------------------------------------------------

def _users_folder(tmp_path) -> Path:
    folder = tmp_path / "d"
    (folder / "sub").mkdir(parents=True)
    (folder / "report.pdf").write_text("x")
    return folder


@pytest.mark.bad_input("clean error")
@pytest.mark.parametrize("writer", ["predict", "write_labels", "napari", "patches"])
def test_an_existing_folder_that_is_not_ours_is_never_written(tmp_path, bundle, writer):  # noqa: F811
    from napari_cancerseg.training.patches import extract_patches

    folder = _users_folder(tmp_path)
    labels = np.zeros((64, 64), np.uint8)
    run = {
        "predict": lambda **kw: predict_slide(data_path(CMU), bundle, str(folder), model=PixelModel(), **kw),
        "write_labels": lambda **kw: stores.write_labels(str(folder), [labels], (1, 1), ("um", "um"), **kw),
        "napari": lambda **kw: write_labels_zarr(str(folder), labels, {}),
        "patches": lambda **kw: extract_patches(data_path(CMU), str(folder), 64,
                                                annotations=data_path("annotations/asap1.xml"), **kw),
    }[writer]
    for kwargs in ({}, {"overwrite": True}) if writer != "napari" else ({},):
        with pytest.raises(WriteError, match="not a napari-cancerseg"):
            run(**kwargs)
        assert (folder / "report.pdf").read_text() == "x" and (folder / "sub").is_dir()
        assert sorted(p.name for p in folder.iterdir()) == ["report.pdf", "sub"]
        assert os.listdir(tmp_path) == ["d"]  # refused before anything was made beside it either (no lock, no build)


@pytest.mark.bad_input("right answer")
def test_our_own_store_is_replaced_only_with_overwrite(tmp_path):
    path = str(tmp_path / "labels.zarr")
    first, second = np.zeros((64, 64), np.uint8), np.full((64, 64), 3, np.uint8)
    stores.write_labels(path, [first], (1, 1), ("um", "um"))
    with pytest.raises(WriteError, match="overwrite"):
        stores.write_labels(path, [second], (1, 1), ("um", "um"))
    np.testing.assert_array_equal(stores.read(path)[0][0].compute(), first)
    stores.write_labels(path, [second], (1, 1), ("um", "um"), overwrite=True)
    np.testing.assert_array_equal(stores.read(path)[0][0].compute(), second)
    assert not [p for p in os.listdir(tmp_path) if "creating" in p or "replaced" in p]  # nothing left behind


@pytest.mark.bad_input("right answer")
def test_predict_overwrite_replaces_a_store_of_another_prediction(store, bundle):  # noqa: F811
    with pytest.raises(CancersegError, match="holds another prediction"):
        predict_slide(data_path(CMU), bundle, store, model=PixelModel(), tissue=0.5, tile=160)
    summary = predict_slide(data_path(CMU), bundle, store, model=PixelModel(), tissue=0.5, tile=160, overwrite=True)
    assert not summary.cancelled and summary.chunks_resumed == 0
    assert stores.read_attributes(store).grid["tile"] == 160 and stores.read_attributes(store).complete


# ---- the creation gap and two runs (issue 15, item 4) ---------------------------------------------

KILL_IN_THE_GAP = """
import os, sys
sys.path.insert(0, {tests!r})
from napari_cancerseg.io.stores import prediction
from napari_cancerseg.inference.engine import predict_slide
from tests.core.test_inference import PixelModel

def killed(*args, **kwargs):  # the moment between the store's folder and its attributes
    os._exit(9)

prediction.set_label_metadata = killed
predict_slide({slide!r}, {bundle!r}, {out!r}, model=PixelModel(), tissue=0.5)
"""


@pytest.mark.bad_input("right answer")
def test_a_kill_between_folder_and_attributes_leaves_a_resumable_path(tmp_path, bundle):  # noqa: F811
    out = str(tmp_path / "gap.zarr")
    script = KILL_IN_THE_GAP.format(tests=str(Path(__file__).parents[2]), slide=data_path(CMU), bundle=bundle,
                                    out=out)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 9, result.stderr[-2000:]
    assert not os.path.exists(out)  # the half-made store is under a temporary name, never at --out
    assert [p for p in os.listdir(tmp_path) if p.startswith(".gap.zarr.creating-")]
    summary = predict_slide(data_path(CMU), bundle, out, model=PixelModel(), tissue=0.5)
    assert not summary.cancelled and stores.read_attributes(out).complete
    assert not [p for p in os.listdir(tmp_path) if "creating" in p]  # the dead run's build was removed


@pytest.mark.bad_input("right answer")
def test_an_earlier_versions_creation_leftover_is_remade_not_refused(tmp_path, bundle):  # noqa: F811
    import zarr

    out = str(tmp_path / "leftover.zarr")
    root = zarr.open_group(out, mode="w", zarr_format=2)  # what an earlier version left when killed in the gap
    stores.create_array(root, "labels/0", (2967, 2220), (96, 96), np.uint8)
    summary = predict_slide(data_path(CMU), bundle, out, model=PixelModel(), tissue=0.5)
    assert not summary.cancelled and stores.read_attributes(out).complete


@pytest.mark.bad_input("clean error")
def test_a_second_run_on_a_store_being_written_is_refused(store, bundle):  # noqa: F811
    with stores.StoreLock(store), pytest.raises(
            CancersegError, match=f"{store}: another run is writing this store \\(process {os.getpid()}"):
        predict_slide(data_path(CMU), bundle, store, model=PixelModel(), tissue=0.5)
    assert predict_slide(data_path(CMU), bundle, store, model=PixelModel(), tissue=0.5).tiles == 0  # lock let go


# ---- disk full (issue 15, item 5) -----------------------------------------------------------------

@pytest.mark.bad_input("clean error")
def test_a_full_disk_names_the_store_and_resume_cleans_up_partials(tmp_path, bundle, monkeypatch):  # noqa: F811
    from napari_cancerseg.io.stores import chunks

    out = str(tmp_path / "full.zarr")
    replace, calls = os.replace, [0]

    def full_after_some(src, dst):
        calls[0] += 1
        if calls[0] > 30:
            raise OSError(errno.ENOSPC, "No space left on device")
        return replace(src, dst)

    monkeypatch.setattr(chunks.os, "replace", full_after_some)
    with pytest.raises(WriteError, match=f"{out}: cannot write chunk .* the disk is full"):
        predict_slide(data_path(CMU), bundle, out, model=PixelModel(), tissue=0.5)
    monkeypatch.setattr(chunks.os, "replace", replace)
    assert not list(Path(out).rglob("*.partial"))  # the failed write left no half chunk
    stray = Path(out) / "probabilities" / "0" / "0" / "0.123-456.partial"  # as a killed run would leave
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"half")
    summary = predict_slide(data_path(CMU), bundle, out, model=PixelModel(), tissue=0.5)
    assert not summary.cancelled and summary.chunks_resumed > 0
    assert not list(Path(out).rglob("*.partial")) and stores.missing_chunks(out) is None


def test_a_failed_run_returns_only_once_its_running_writes_have_ended(tmp_path, bundle, monkeypatch):  # noqa: F811
    """After a write fails, predict_slide must not return (and let go of the store's lock) while other tasks
    still write into the store: dask's own pool kept them running after the error."""
    import itertools
    import threading
    import time

    from napari_cancerseg.io.stores import chunks

    replace, counter, lock, late = os.replace, itertools.count(), threading.Lock(), []

    def fails_then_slow(src, dst):
        with lock:
            n = next(counter)
        if n == 20:
            raise OSError(errno.ENOSPC, "No space left on device")
        time.sleep(0.05)  # slow writes: several segment tasks are writing when the disk fills
        if n > 20:
            late.append(time.monotonic())
        return replace(src, dst)

    monkeypatch.setattr(chunks.os, "replace", fails_then_slow)
    with pytest.raises(WriteError, match="the disk is full"):
        predict_slide(data_path(CMU), bundle, str(tmp_path / "s.zarr"), model=PixelModel(), tissue=0.5)
    returned = time.monotonic()
    time.sleep(1.0)
    assert late and max(late) <= returned  # every write finished before the error reached the caller


# ---- corrupt chunks (issue 15, item 6) ------------------------------------------------------------

@pytest.mark.bad_input("clean error")
@pytest.mark.parametrize("damage", [b"\x02\x01\x21\x01garbage", b""])
def test_a_corrupt_chunk_is_named(store, damage):
    written = np.argwhere(stores.ChunkFiles(__import__("zarr").open_array(f"{store}/labels/0")).written())
    row, col = written[0]
    Path(store, "labels", "0", str(row), str(col)).write_bytes(damage)
    for open_it in (lambda: stores.read(store)[0][0][0].compute(), lambda: grade_store(store)):
        with pytest.raises(ReadError) as info:
            open_it()
        message = str(info.value)
        assert message.startswith(store) and "labels/0" in message and "corrupt" in message
        assert "blosc" not in message.split("(")[0]


# ---- the slide a store names (issue 15, item 8) ---------------------------------------------------

@pytest.mark.bad_input("clean error")
@pytest.mark.parametrize("slide_path", ["../../../../etc/passwd", "/etc/passwd", NDPI, "missing.svs"])
def test_the_slide_a_store_names_must_be_the_slide_it_was_made_from(store, slide_path):
    if slide_path == NDPI:
        slide_path = data_path(NDPI)  # a real slide, but another one
    elif slide_path == "missing.svs":
        slide_path = os.path.join(os.path.dirname(store), "missing.svs")
    _edit_attrs(store, lambda a: a["cancerseg"].update(slide_path=slide_path))
    with pytest.raises(CancersegError) as info:
        LabelStore(store).verified_slide()
    assert str(info.value).startswith(store)
    assert "root:" not in str(info.value)  # never the file's contents


@pytest.mark.bad_input("right answer")
def test_the_right_slide_is_used(store):
    assert LabelStore(store).verified_slide() == os.path.abspath(data_path(CMU))


@pytest.mark.bad_input("clean error")
def test_a_copy_of_the_slide_under_the_same_name_with_other_pixels_is_refused(store, tmp_path):
    """A copy of the very slide is the slide; a file whose quickhash differs from the recorded one is not."""
    impostor = tmp_path / os.path.basename(data_path(CMU))  # the same name as the slide the store was made from
    shutil.copy(data_path(CMU), impostor)
    _edit_attrs(store, lambda a: a["cancerseg"].update(slide_path=str(impostor)))
    assert LabelStore(store).verified_slide() == str(impostor)  # the very same file, copied: it is the slide
    _edit_attrs(store, lambda a: a["cancerseg"]["slide"].update(quickhash="0" * 64))
    with pytest.raises(CancersegError, match="not the one this store was made from"):
        LabelStore(store).verified_slide()


@pytest.mark.bad_input("clean error")
def test_a_full_disk_while_overwriting_a_label_store_keeps_the_old_one(tmp_path, monkeypatch):
    """The new store is built beside the old one: a full disk mid-write leaves the old store whole."""
    from zarr.storage import _local

    path = str(tmp_path / "labels.zarr")
    old = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(stand_in_path("nuclei/image01_labels.png")))
    stores.write_labels(path, stores.label_pyramid(old), (0.5, 0.5), ("um", "um"))

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_local, "_put", full)
    with pytest.raises(WriteError, match=f"{path}: cannot write the store: the disk is full"):
        stores.write_labels(path, stores.label_pyramid(old[::-1]), (0.5, 0.5), ("um", "um"), overwrite=True)
    monkeypatch.undo()
    np.testing.assert_array_equal(stores.read(path)[0][0][0].compute(), old)
    assert os.listdir(tmp_path) == ["labels.zarr"]  # the half-built replacement was removed
