"""OME-Zarr label stores: round trips, nearest-neighbour pyramids, NGFF metadata."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import zarr

from napari_cancerseg._writer import write_labels_zarr
from napari_cancerseg.io import stores


def _labels():
    rng = np.random.default_rng(4)
    labels = np.zeros((1300, 1100), np.uint8)
    for value in range(1, 6):
        y, x = rng.integers(0, 1000, 2)
        labels[y:y + 300, x:x + 200] = value
    return labels


def test_round_trip_with_scale_and_colours(tmp_path):
    labels = _labels()
    path = str(tmp_path / "pred.zarr")
    stores.write_labels(path, stores.label_pyramid(labels), scale=(0.5, 0.25), units=("um", "um"),
                        name="prediction", colors={2: (255, 255, 0, 255)}, properties={"slide": "x.svs"})
    assert stores.claims(path)
    (levels, kwargs, layer_type), = stores.read(path)
    assert layer_type == "labels" and kwargs["multiscale"]
    assert [lvl.shape for lvl in levels] == [(1300, 1100), (650, 550), (325, 275)]
    np.testing.assert_array_equal(levels[0].compute(), labels)
    # stride subsampling: level k is exactly level 0 at every 2**k-th pixel, values never mixed
    np.testing.assert_array_equal(levels[2].compute(), labels[::4, ::4])
    assert kwargs["scale"] == (0.5, 0.25) and kwargs["units"] == ("um", "um")
    assert kwargs["metadata"]["attributes"]["cancerseg"] == {"slide": "x.svs"}
    np.testing.assert_allclose(kwargs["colormap"][2], [1, 1, 0, 1])
    meta = json.load(open(f"{path}/.zattrs"))
    datasets = meta["multiscales"][0]["datasets"]
    assert [d["coordinateTransformations"][0]["scale"] for d in datasets] == [[0.5, 0.25], [1.0, 0.5], [2.0, 1.0]]
    assert meta["multiscales"][0]["axes"] == [{"name": "y", "type": "space", "unit": "micrometer"},
                                              {"name": "x", "type": "space", "unit": "micrometer"}]


def test_napari_writer_for_a_volume(tmp_path):
    volume = np.zeros((5, 40, 30), np.uint16)
    volume[2, 10:20, 5:25] = 300
    path = str(tmp_path / "vol.zarr")
    write_labels_zarr(path, volume, {"name": "seg", "scale": (3.0, 0.7, 0.7), "translate": (1, 2, 3),
                                     "units": ("mm", "mm", "mm")})
    (data, kwargs, _), = stores.read(path)
    np.testing.assert_array_equal(np.asarray(data), volume)
    assert kwargs["translate"] == (1, 2, 3) and kwargs["units"] == ("mm", "mm", "mm")


def test_float_labels_refused(tmp_path):
    with pytest.raises(ValueError, match="integers"):
        stores.write_labels(str(tmp_path / "bad.zarr"), [np.zeros((4, 4), np.float32)], (1, 1), ("um", "um"))


def test_chunk_files_writes_what_zarr_writes(tmp_path):
    """Whole chunks written straight to files read back as written, and the files equal zarr's own."""
    rng = np.random.default_rng(3)
    data = (rng.random((2, 100, 130)) * 4).astype(np.uint8)  # compressible, edge chunks on both axes
    arrays = {}
    for name in ("by_zarr", "direct"):
        root = zarr.open_group(str(tmp_path / f"{name}.zarr"), mode="w", zarr_format=2)
        arrays[name] = stores.create_array(root, "probabilities", data.shape, (1, 64, 64), np.uint8)
    arrays["by_zarr"][:] = data
    writer = stores.ChunkFiles(arrays["direct"])
    for index in np.ndindex(2, 2, 3):
        writer.write(index, data[writer.box(index)])
    np.testing.assert_array_equal(arrays["direct"][:], data)
    for index in np.ndindex(2, 2, 3):
        key = "/".join(map(str, index))
        assert (tmp_path / "direct.zarr/probabilities" / key).read_bytes() == \
            (tmp_path / "by_zarr.zarr/probabilities" / key).read_bytes()
    assert not list(tmp_path.glob("direct.zarr/**/*.partial"))
    with pytest.raises(ValueError, match=r"covers \(1, 36, 2\)"):
        writer.write((0, 1, 2), np.zeros((1, 64, 64), np.uint8))


@pytest.mark.parametrize("separator", ["/", "."])
def test_chunk_files_written_lists_the_chunks_zarr_wrote(tmp_path, separator):
    """The chunk grid's written chunks, found from the files: what resuming a prediction relies on."""
    root = zarr.open_group(str(tmp_path / "s.zarr"), mode="w", zarr_format=2)
    array = root.create_array("p", shape=(3, 200, 130), chunks=(3, 64, 64), dtype=np.uint8, fill_value=0,
                              chunk_key_encoding={"name": "v2", "separator": separator})
    array[:, 70:100, 0:10] = 7  # chunk row 1, column 0
    array[:, 199, 129] = 9  # the clipped corner chunk (3, 2)
    files = stores.ChunkFiles(array)
    expected = np.zeros((1, 4, 3), bool)
    expected[0, 1, 0] = expected[0, 3, 2] = True
    np.testing.assert_array_equal(files.written(), expected)
    files.write((0, 0, 1), np.ones((3, 64, 64), np.uint8))
    partial = Path(files.path((0, 2, 2)) + ".1-2.partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_bytes(b"")  # a chunk still being written is not written
    expected[0, 0, 1] = True
    np.testing.assert_array_equal(files.written(), expected)


def test_chunk_files_read_and_write_rows(tmp_path):
    """Row bands read across chunk boundaries equal zarr's reads; never-written chunks read as the fill value."""
    root = zarr.open_group(str(tmp_path / "rows.zarr"), mode="w", zarr_format=2)
    array = stores.create_array(root, "labels", (300, 250), (64, 96), np.uint8)
    labels = _labels()[:300, :250]
    files = stores.ChunkFiles(array)
    files.write_rows(0, labels[:128])
    files.write_rows(256, labels[256:])  # the clipped last chunk row; rows 128..255 never written
    expected = labels.copy()
    expected[128:256] = 0
    np.testing.assert_array_equal(array[:], expected)
    for start, stop in [(0, 300), (37, 201), (250, 400)]:
        np.testing.assert_array_equal(files.read_rows(start, stop), expected[start:stop])
    with pytest.raises(ValueError, match="not whole chunk rows"):
        files.write_rows(10, labels[10:74])


def test_attributes_are_typed_and_validated_on_open(tmp_path):
    """The one reader gives typed fields; the one writer writes them back unchanged; the mark says the store is ours."""
    path = str(tmp_path / "typed.zarr")
    stores.write_labels(path, stores.label_pyramid(_labels()), scale=(0.5, 0.25), units=("um", "um"),
                        properties={"downsample": 4.0, "mpp": 0.25, "slide_path": "/slides/x.svs",
                                    "classes": [{"label": 0, "name": "background"}, {"label": 2, "name": "tumour"}],
                                    "segmentation": "kept as found"})
    attributes = stores.read_attributes(path)
    assert [lvl.shape for lvl in attributes.levels] == [(1300, 1100), (650, 550), (325, 275)]
    assert attributes.levels[0].chunks == (512, 512) and attributes.scale == (0.5, 0.25)
    assert attributes.units == ("um", "um") and attributes.downsample == 4.0 and attributes.mpp == 0.25
    assert attributes.kind == "labels" and attributes.slide_path == "/slides/x.svs"
    assert attributes.extra == {"segmentation": "kept as found"} and not attributes.is_prediction
    assert stores.is_ours(path)
    before = json.loads(Path(path, ".zattrs").read_text())
    stores.write_attributes(path, attributes)
    assert json.loads(Path(path, ".zattrs").read_text()) == before


@pytest.mark.bad_input("right answer")
def test_stores_of_earlier_versions_still_open_with_defaults(tmp_path):
    """A store as earlier versions wrote it (no mark, no expected chunks) opens, grades and is known as ours."""
    path = str(tmp_path / "old.zarr")
    labels = _labels()
    stores.write_labels(path, [labels], scale=(0.5, 0.5), units=("um", "um"), properties={"downsample": 1.0})
    attrs = json.loads(Path(path, ".zattrs").read_text())
    del attrs["napari-cancerseg"]
    attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"] = [
        {"type": "scale", "scale": [0.5, 0.5]}]  # no translation: NGFF allows it, the default is 0
    Path(path, ".zattrs").write_text(json.dumps(attrs))
    attributes = stores.read_attributes(path)
    assert attributes.kind is None and attributes.expected_chunks is None and attributes.translate == (0.0, 0.0)
    assert stores.missing_chunks(path) is None and stores.is_ours(path)
    np.testing.assert_array_equal(stores.read(path)[0][0].compute(), labels)


def test_lazy_levels_get_fresh_names_and_read_what_zarr_reads(tmp_path):
    path = str(tmp_path / "fresh.zarr")
    labels = _labels()
    stores.write_labels(path, stores.label_pyramid(labels), scale=(1, 1), units=("um", "um"))
    first, second = stores.lazy_levels(path, 1), stores.lazy_levels(path, 2)
    assert {a.name for a in first}.isdisjoint(a.name for a in second)  # napari's cache serves nothing stale
    np.testing.assert_array_equal(first[0].compute(), labels)
    np.testing.assert_array_equal(second[2].compute(), labels[::4, ::4])


def test_strided_levels_are_level0_at_every_kth_pixel_and_reread_unwritten_chunks(tmp_path):
    """The live pyramid (chunks.StridedLevel): numpy's strided view of level 0 for any window, and a chunk the
    engine has not written yet is read again at the next refresh, while written ones come from the cache."""
    from napari_cancerseg.io.stores.chunks import ChunkFiles, StridedLevel

    labels = _labels()
    array = zarr.create_array(str(tmp_path / "live.zarr"), shape=labels.shape, chunks=(256, 256), dtype="uint8",
                              zarr_format=2, fill_value=0, compressors=None, filters=None)
    files = ChunkFiles(array)
    files.write((0, 0), labels[:256, :256])  # one chunk written so far
    cache: dict = {}
    rng = np.random.default_rng(0)
    for stride in (1, 2, 4, 8):
        level = StridedLevel(files, stride, cache)
        expected = np.zeros_like(labels)
        expected[:256, :256] = labels[:256, :256]
        expected = expected[::stride, ::stride]
        assert level.shape == expected.shape
        np.testing.assert_array_equal(np.asarray(level), expected)
        for _ in range(30):
            y0, x0 = (int(v) for v in rng.integers(0, expected.shape, 2))
            y1, x1 = int(rng.integers(y0, expected.shape[0] + 2)), int(rng.integers(x0, expected.shape[1] + 2))
            sy, sx = (int(v) for v in rng.integers(1, 4, 2))
            np.testing.assert_array_equal(level[y0:y1:sy, x0:x1:sx], expected[y0:y1:sy, x0:x1:sx])
        np.testing.assert_array_equal(level[3], expected[3])
    assert set(cache) == {(0, 0)}  # only the written chunk is kept
    files.write((4, 3), labels[1024:1280, 768:1024])  # the engine writes another chunk
    np.testing.assert_array_equal(StridedLevel(files, 1, cache)[1024:1280, 768:1024], labels[1024:1280, 768:1024])


def test_strided_levels_keep_leading_axes_whole(tmp_path):
    """Probabilities are (classes, height, width): the class axis is indexed, never strided."""
    from napari_cancerseg.io.stores.chunks import ChunkFiles, StridedLevel

    labels = _labels()
    planes = np.stack([labels, 255 - labels])
    array = zarr.create_array(str(tmp_path / "p.zarr"), shape=planes.shape, chunks=(2, 256, 256), dtype="uint8",
                              zarr_format=2, fill_value=0, compressors=None, filters=None)
    files = ChunkFiles(array)
    for row in range(-(-labels.shape[0] // 256)):
        for col in range(-(-labels.shape[1] // 256)):
            files.write((0, row, col), planes[:, row * 256:(row + 1) * 256, col * 256:(col + 1) * 256])
    for stride in (1, 4):
        level = StridedLevel(files, stride)
        assert level.shape == (2, *planes[0, ::stride, ::stride].shape)
        np.testing.assert_array_equal(level[1, 10:200, 30:], planes[1, ::stride, ::stride][10:200, 30:])
        np.testing.assert_array_equal(np.asarray(level), planes[:, ::stride, ::stride])
