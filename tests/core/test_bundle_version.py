"""A trained bundle records the version its file name says (issue 17: "v1.1.0" said "version 1.0.0" inside)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from shapely.geometry import box as rectangle

from napari_cancerseg.annotations import write as write_annotations
from napari_cancerseg.annotations.model import Annotation, AnnotationSet
from napari_cancerseg.models.bundle import next_minor_version, saved_version

from ..conftest import data_path

CMU = "wsi/CMU-1-Small-Region.svs"


@pytest.mark.parametrize("out, requested, base, expected", [
    ("/m/nuclei-v1.1.0.keras", "1.0.0", "1.0.0", "1.1.0"),  # the name says it: the bug's case
    ("/m/nuclei-v1.1.0.keras", "1.0.0", None, "1.1.0"),
    ("/m/nuclei-v3.keras", "1.0.0", "1.0.0", "3"),
    ("/m/tuned.keras", "1.0.0", "1.4.2", "1.5.0"),  # fine-tuned, no version asked: the base's next minor
    ("/m/tuned.keras", "2.0.0", "1.4.2", "2.0.0"),  # asked for
    ("/m/fresh.keras", "1.0.0", None, "1.0.0"),  # a new model keeps the default
])
def test_the_saved_version_follows_the_file_name(out, requested, base, expected):
    assert saved_version(out, requested, "1.0.0", base) == expected


def test_next_minor_version():
    assert [next_minor_version(v) for v in ("1.0.0", "1.2.5", "0", None, "x.y")] == \
        ["1.1.0", "1.3.0", "0.1.0", "1.1.0", "0.1.0"]


def test_fine_tuning_into_a_named_file_records_that_version(tmp_path):
    pytest.importorskip("keras")
    from napari_cancerseg.cli import main
    from napari_cancerseg.models.bundle import CARD_MEMBER, bundle_info
    from napari_cancerseg.training.patches import extract_patches

    base = str(tmp_path / "tiny.keras")
    script = textwrap.dedent(f"""
        from napari_cancerseg.models.bundle import Recipe, save_bundle
        from napari_cancerseg.models.unet import build_unet
        save_bundle(build_unet(input_shape=(None, None, 3), filters=(4, 8), dropout=(0, 0), n_classes=2,
                               activation="softmax"), {base!r}, name="tiny", version="2.2.0",
                    architecture={{"builder": "unet"}}, recipe=Recipe(tile_size=64, overlap=0, mpp=0.5, divisor=2),
                    classes=[{{"label": 0, "name": "background"}}, {{"label": 1, "name": "tumour"}}])
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=300, capture_output=True,
                   env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
    annotations = str(tmp_path / "a.geojson")
    write_annotations(AnnotationSet([Annotation(rectangle(300, 500, 900, 1100), "tumour"),
                                     Annotation(rectangle(1300, 1800, 1700, 2300), "benign")]), annotations)
    patches = str(tmp_path / "p.zarr")
    extract_patches(data_path(CMU), patches, size=64, annotations=annotations)
    named = str(tmp_path / "tiny-v2.3.0.keras")
    assert main(["train", "--patches", patches, "--init", base, "--out", named, "--epochs", "1", "--steps", "1",
                 "--batch", "2", "--size", "64"]) == 0
    info = bundle_info(named)
    assert info.version == "2.3.0" and info.card["fine_tuned_from"]["version"] == "2.2.0"
    import zipfile

    with zipfile.ZipFile(named) as archive:  # the card inside says the same version
        assert archive.read(CARD_MEMBER).decode().startswith("# Model card: tiny 2.3.0")
