"""`cancerseg info`: what the readers see, printed for people and as JSON; the options of predict and train."""

from __future__ import annotations

import dataclasses
import io
import json
import os

import pytest

from napari_cancerseg.cli import build_parser, main, options_from_args
from napari_cancerseg.inference.options import PredictOptions
from napari_cancerseg.training.options import TrainOptions

from ..conftest import ROOT, data_path, stand_in_path
from .test_inference import bundle  # noqa: F401 - the tiny bundle fixture, shared


def test_info_json_for_a_slide(capsys):
    assert main(["info", data_path("wsi/test3-DAPI-2-387.ndpi"), "--json"]) == 0
    layer, = json.loads(capsys.readouterr().out)["layers"]
    assert layer["levels"] == 7 and layer["shapes"][0] == [4864, 3968, 3] and layer["dtype"] == "uint8"
    assert layer["scale"] == pytest.approx([0.2282, 0.2282], abs=1e-4) and layer["units"] == ["um", "um"]
    assert layer["metadata"]["vendor"] == "hamamatsu" and "properties" not in layer["metadata"]


def test_info_text_for_dicom_folder(capsys):
    assert main(["info", data_path("mri/QIN-PROSTATE-001")]) == 0
    out = capsys.readouterr().out  # the README: 256 x 256 x 20, 0.7031 mm pixels, 3 mm slices
    assert "0: 256 × 256 × 20 voxels, 0.7031 × 0.7031 × 3 mm/voxel" in out and "labels, DICOM SEG" in out


def test_info_text_says_width_by_height_and_rounded_microns(capsys):
    """The data README's facts of CMU-1-Small-Region.svs: 2220 x 2967 px (width x height), 1 level, 0.499 µm/px."""
    assert main(["info", data_path("wsi/CMU-1-Small-Region.svs")]) == 0
    out = capsys.readouterr().out
    assert "    levels: 1\n      0: 2220 × 2967 px, 3 channels, 0.499 µm/px\n" in out
    assert "scale: 0.499 µm, 0.499 µm" in out and "mpp: [0.499, 0.499]" in out
    assert "level_dimensions" not in out and "0.49899" not in out  # no (h, w) list under OpenSlide's (w, h) name


def test_info_levels_of_a_pyramid_are_halved_in_size_and_doubled_in_microns(capsys):
    assert main(["info", data_path("wsi/test3-DAPI-2-387.ndpi")]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    # the README: 3968 x 4864 px at level 0, 0.228 µm/px, 7 levels
    assert "0: 3968 × 4864 px, 3 channels, 0.2282 µm/px" in lines
    assert "6: 62 × 76 px, 3 channels, 14.6 µm/px" in lines  # 3968 / 64 = 62, 0.22818 * 64 = 14.60


def test_info_properties_on_request(capsys):
    main(["info", data_path("wsi/CMU-1-Small-Region.svs"), "--properties"])
    assert "aperio.AppMag = 20" in capsys.readouterr().out


def test_info_on_broken_file_exits_2(tmp_path, capsys):
    path = tmp_path / "broken.nii.gz"
    path.write_bytes(b"not a volume")
    assert main(["info", str(path)]) == 2
    assert str(path) in capsys.readouterr().err


def test_info_on_unknown_file_exits_2(tmp_path, capsys):
    path = tmp_path / "notes.txt"
    path.write_text("x")
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err  # names the file and says what this plugin reads instead
    assert str(path) in err and "not a kind of file this plugin reads" in err


def test_train_splits_by_patient_and_writes_a_bundle(tmp_path, capsys):
    pytest.importorskip("keras")
    from napari_cancerseg.models.bundle import bundle_info

    images = data_path("brain/lgg-slices/images")
    out = tmp_path / "lgg.keras"
    code = main(["train", "--images", images, "--masks", data_path("brain/lgg-slices/masks"),
                 "--case-pattern", r"(TCGA_CS_\d+)", "--mask-threshold", "128",
                 "--val-cases", "TCGA_CS_4942", "--test-cases", "TCGA_CS_4944,TCGA_CS_5396",
                 "--out", str(out), "--epochs", "1", "--steps", "2", "--batch", "2", "--size", "64",
                 "--filters", "8,16", "--class-names", "background,tumour"])
    assert code == 0
    info = bundle_info(out)
    split = info.card["split"]
    patient = lambda name: "_".join(name.split("_")[:3])  # noqa: E731
    train_patients = {patient(n) for n in split["train"]}
    assert train_patients.isdisjoint({"TCGA_CS_4942", "TCGA_CS_4944", "TCGA_CS_5396"})
    assert {patient(n) for n in split["test (held out, reported)"]} == {"TCGA_CS_4944", "TCGA_CS_5396"}
    assert len(info.card["metrics"]["test_per_image"]) == len(split["test (held out, reported)"])
    assert "--case-pattern" in info.card["reproduce"]
    assert (tmp_path / "lgg.training.csv").exists()


def test_train_on_patch_dataset_splits_by_slide(tmp_path):
    pytest.importorskip("keras")
    import numpy as np
    import zarr
    from PIL import Image

    from napari_cancerseg.models.bundle import bundle_info

    image = np.asarray(Image.open(stand_in_path("nuclei/image01.png")).convert("RGB"))
    mask = (np.asarray(Image.open(stand_in_path("nuclei/image01_labels.png"))) > 0).astype(np.uint8)
    group = zarr.open_group(str(tmp_path / "patches.zarr"), mode="w")
    crops = [(y, x) for y in (0, 128, 256) for x in (0, 128, 256)]
    group.create_array("images", data=np.stack([image[y:y + 64, x:x + 64] for y, x in crops]))
    group.create_array("masks", data=np.stack([mask[y:y + 64, x:x + 64] for y, x in crops]))
    group.create_array("slides", data=np.array(["s1"] * 3 + ["s2"] * 3 + ["s3"] * 3))
    out = tmp_path / "p.keras"
    assert main(["train", "--patches", str(tmp_path / "patches.zarr"), "--val-cases", "s2", "--test-cases", "s3",
                 "--out", str(out), "--epochs", "1", "--steps", "1", "--batch", "2", "--size", "64",
                 "--filters", "8,16"]) == 0
    split = bundle_info(out).card["split"]
    assert split["train"] == ["patches[0]", "patches[1]", "patches[2]"]
    assert split["test (held out, reported)"] == ["patches[6]", "patches[7]", "patches[8]"]


# ---- options generated from PredictOptions / TrainOptions -----------------------------------------------------

def _expected_default(field) -> str | None:
    """The default as the help must show it, worked out here from the dataclass (not by the code under test)."""
    from napari_cancerseg.inference.options import FLAG, setting_of

    default = field.default if field.default is not dataclasses.MISSING else None
    option = setting_of(field)
    if option.kind is FLAG or default == "" or field.default is dataclasses.MISSING:
        return None
    if default is None:
        return option.none
    if isinstance(default, tuple):
        return ",".join(map(str, default))
    return str(default)


@pytest.mark.parametrize("command, options, not_flags", [
    ("predict", PredictOptions, set()),
    ("train", TrainOptions, {"dropout", "reproduce", "notes", "extra_card"}),
])
def test_help_shows_every_setting_with_the_dataclass_default(monkeypatch, capsys, command, options, not_flags):
    from napari_cancerseg.inference.options import flag_of, setting_of

    monkeypatch.setenv("COLUMNS", "2000")
    with pytest.raises(SystemExit):
        build_parser().parse_args([command, "--help"])
    lines: dict[str, str] = {}  # flag -> its entry; a long flag's help starts on the next line
    for line in capsys.readouterr().out.split("options:")[1].splitlines():
        if line.startswith("  -"):
            flag = line.split()[0]
            lines[flag] = line.strip()
        elif line.strip():
            lines[flag] += " " + line.strip()
    fields = [f for f in dataclasses.fields(options) if setting_of(f).cli]
    assert {f.name for f in dataclasses.fields(options)} - {f.name for f in fields} == not_flags
    for field in fields:
        line = lines[flag_of(field)]  # every setting has its flag
        assert setting_of(field).help.split(" (")[0] in line
        expected = _expected_default(field)
        if expected is None:
            assert "(default:" not in line, line
        else:
            assert line.endswith(f"(default: {expected})"), line


def test_defaults_parsed_from_no_flags_are_the_dataclass_defaults():
    args = build_parser().parse_args(["predict", "s.svs", "--out", "o.zarr"])
    assert options_from_args(PredictOptions, args) == PredictOptions()
    args = build_parser().parse_args(["train", "--out", "b.keras"])
    assert options_from_args(TrainOptions, args) == TrainOptions(out="b.keras")


def test_the_existing_flag_names_reach_their_settings():
    args = build_parser().parse_args(["predict", "s.svs", "--out", "o.zarr", "--mpp", "0.5", "--tile", "256",
                                      "--overlap", "32", "--batch", "8", "--tissue", "0.3", "--readers", "2",
                                      "--reader-processes", "--scheduler", "tcp://h:1", "--overwrite"])
    assert options_from_args(PredictOptions, args) == PredictOptions(
        mpp=0.5, tile=256, overlap=32, batch=8, tissue=0.3, readers=2, reader_processes=True, scheduler="tcp://h:1",
        overwrite=True)
    args = build_parser().parse_args(["train", "--out", "b.keras", "--epochs", "1", "--steps", "2", "--lr", "0.01",
                                      "--batch", "2", "--size", "64", "--filters", "8,16", "--classes", "2",
                                      "--class-names", "bg,fg", "--no-augment", "--init", "a.keras", "--progress-json",
                                      "--channels", "1", "--loss", "cce"])
    assert options_from_args(TrainOptions, args) == TrainOptions(
        out="b.keras", epochs=1, steps_per_epoch=2, learning_rate=0.01, batch_size=2, size=64, filters=(8, 16),
        n_classes=2, class_names=("bg", "fg"), augment=False, init_bundle="a.keras", progress_json=True, channels=1,
        loss="cce")


@pytest.mark.parametrize("argv, complaint", [
    (["predict", "s.svs", "--out", "o.zarr", "--mpp", "0.5", "--level", "1"], "not allowed with argument"),
    (["predict", "s.svs", "--out", "o.zarr", "--overlap", "-2"], "argument --overlap: must be 0 or more, not -2"),
    (["predict", "s.svs", "--out", "o.zarr", "--level", "x"], "argument --level: not a whole number: 'x'"),
    (["predict", "s.svs", "--out", "o.zarr", "--mpp", "inf"], "argument --mpp: must be finite, not inf"),
    (["train", "--epochs", "0"], "argument --epochs: must be 1 or more, not 0"),
    (["train", "--filters", "16,x"], "argument --filters: not comma-separated whole numbers: '16,x'"),
    (["train", "--channels", "2"], "argument --channels: invalid choice: 2"),
])
def test_generated_flags_refuse_bad_values(capsys, argv, complaint):
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2 and complaint in capsys.readouterr().err


@pytest.mark.parametrize("command, options", [
    ("predict", PredictOptions(mpp=0.25, tile=256, overlap=0, batch=3, tissue=0.0, readers=7, reader_processes=True,
                               scheduler="tcp://h:8786", overwrite=True)),
    ("predict", PredictOptions(level=0)),
    ("train", TrainOptions(out="b.keras", name="n", version="2.1.0", architecture="sk_unet", filters=(8, 16),
                           n_classes=3, class_names=("bg", "a", "b"), size=64, batch_size=2, epochs=3,
                           steps_per_epoch=4, learning_rate=0.01, loss="cce", patience=2, seed=-5, mpp=0.5,
                           channels=1, augment=False, training_data="d", init_bundle="i.keras", progress_json=True)),
])
def test_options_to_argv_parse_back_equal(command, options):
    positional = ["s.svs", "--out", "o.zarr"] if command == "predict" else []
    for skip_defaults in (True, False):
        args = build_parser().parse_args([command, *positional, *options.to_argv(skip_defaults)])
        assert options_from_args(PredictOptions if command == "predict" else TrainOptions, args) == options


def test_train_init_reaches_the_bundle_it_names(tmp_path, capsys):
    """--init is TrainOptions.init_bundle: a missing bundle is refused by name, before any data is read."""
    missing = str(tmp_path / "nowhere.keras")
    assert main(["train", "--patches", str(tmp_path / "p.zarr"), "--init", missing]) == 2
    err = capsys.readouterr().err
    assert missing in err and "no such model bundle file" in err


def test_rasterise_then_grade_gives_the_polygons_area_and_grade(tmp_path, capsys):
    """cancerseg rasterise draws annotations into a label store that grade reads: a 4 polygon and a smaller 3
    polygon on CMU-1 (0.499 µm/px) are 4+3, ISUP 3, with their shapely areas (pixelation within 1%)."""
    import json

    from shapely.geometry import Polygon

    slide = data_path("wsi/CMU-1-Small-Region.svs")
    four = [[300, 400], [1500, 420], [1400, 1600], [350, 1500], [300, 400]]
    three = [[600, 2000], [1300, 2000], [1300, 2500], [600, 2500], [600, 2000]]
    features = [{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]},
                 "properties": {"classification": {"name": name}}}
                for ring, name in ((four, "Gleason pattern 4"), (three, "Gleason 3"))]
    annotations = tmp_path / "marked.geojson"
    annotations.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    out = tmp_path / "marked.zarr"
    assert main(["rasterise", slide, str(annotations), "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["grade", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    mpp2 = 0.499 ** 2
    assert report["areas_um2"]["4"] == pytest.approx(Polygon(four).area * mpp2, rel=0.01)
    assert report["areas_um2"]["3"] == pytest.approx(Polygon(three).area * mpp2, rel=0.01)
    assert (report["gleason_score"], report["isup_grade_group"]) == ("4+3", 3)
    assert main(["rasterise", slide, str(annotations), "--out", str(out)]) == 2  # ours, but no --overwrite
    assert "overwrite" in capsys.readouterr().err


# ---- predict's progress line and TensorFlow's native log lines ------------------------------------------------

class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _progress_run(stream) -> None:
    from napari_cancerseg.cli import ProgressLine
    from napari_cancerseg.inference.engine import Progress

    show = ProgressLine(stream)
    for done in (40, 80, 125):
        show(Progress(done, 125, done // 2, 62, done / 25))
    for chunks in range(62, 66):  # what the engine does: every task that ends after the last tile reports again
        show(Progress(125, 125, chunks, 66, 5.0 + chunks / 100))
    show.close()


def test_the_last_progress_line_is_printed_once_in_a_log():
    log = io.StringIO()
    _progress_run(log)
    assert log.getvalue().splitlines() == ["40/125 tiles, 25.0 tiles/s, 3 s left",
                                           "80/125 tiles, 25.0 tiles/s, 2 s left", "125/125 tiles, 25.0 tiles/s"]


def test_the_last_progress_line_is_printed_once_on_a_terminal():
    terminal = _Terminal()
    _progress_run(terminal)
    text = terminal.getvalue()
    assert text.count("\r") == 3 and text.count("125/125") == 1 and text.endswith("\n")
    last = text.split("\r")[-1]  # padded to cover the longer line it overwrites
    assert last.rstrip() == "125/125 tiles, 25.0 tiles/s" and len(last.rstrip("\n")) >= len(text.split("\r")[1])


NATIVE_NOISE = ("cuInit", "absl", "oneDNN", "cudart_stub", "cpu_feature_guard")


@pytest.fixture(scope="module")
def small_slide(tmp_path_factory) -> str:
    """A 512 x 384 px tiled TIFF cut from CMU-1 (OpenSlide reads it as a generic tiled TIFF): a quick slide."""
    import numpy as np
    import tifffile

    from napari_cancerseg.io.wsi import SlideHandle

    region = SlideHandle.shared(data_path("wsi/CMU-1-Small-Region.svs")).read(0, 800, 1000, 512, 384)
    path = tmp_path_factory.mktemp("slide") / "small.tif"
    tifffile.imwrite(path, np.ascontiguousarray(region[..., :3]), tile=(128, 128), photometric="rgb")
    return str(path)


def test_cli_predict_prints_no_tensorflow_log_lines_and_its_last_progress_line_once(tmp_path, bundle, small_slide):  # noqa: F811
    """Run as a user runs it (a fresh interpreter, TF_CPP_MIN_LOG_LEVEL not set): the TensorFlow C++ lines
    (cuInit on a machine without a GPU, absl, oneDNN) never reach stderr; the final tiles line is there once."""
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "GRPC_VERBOSITY")}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    out = tmp_path / "small.zarr"
    run = subprocess.run([sys.executable, "-m", "napari_cancerseg.cli", "predict", small_slide, "--model", bundle,
                          "--out", str(out), "--tissue", "0"], env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    noise = [line for line in run.stderr.splitlines() if any(word in line for word in NATIVE_NOISE)]
    assert noise == [], run.stderr
    # 512 x 384 px, tile 128 with overlap 32 (the bundle's recipe): a grid of 6 x 4 chunks of 96 px
    final = [line for line in run.stderr.splitlines() if line.startswith("24/24 tiles")]
    assert len(final) == 1, run.stderr
    assert run.stdout.startswith("done: 24 tiles") and (out / ".zattrs").exists()


# ---- --help of every command ------------------------------------------------------------------------------

def _commands():
    """(name, parser) of cancerseg and each of its subcommands, walked from build_parser()."""
    import argparse

    parser = build_parser()
    found = [("cancerseg", parser)]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            found += list(action.choices.items())
    return found


def _shown(default) -> str:
    return ",".join(map(str, default)) if isinstance(default, tuple) else str(default)


RST_MARKUP = r"``|:(func|class|meth|attr|mod|ref|data|obj|py:\w+):|`[^`]+`_?"


def test_every_option_of_every_command_has_help_with_its_default_and_no_markup():
    import argparse
    import re

    commands = _commands()
    assert {name for name, _ in commands} >= {"info", "demo", "predict", "patches", "rasterise", "overlay", "grade",
                                              "export-onnx", "segment", "classify", "evaluate", "train"}
    problems = []
    for name, parser in commands:
        for text in (parser.description or "", parser.format_help()):
            if re.search(RST_MARKUP, text):
                problems.append(f"{name}: reStructuredText markup: {re.search(RST_MARKUP, text)[0]!r}")
        for action in parser._actions:
            if isinstance(action, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction)):
                continue
            label = f"{name} {'/'.join(action.option_strings) or action.dest}"
            if not (action.help or "").strip():
                problems.append(f"{label}: no help")
                continue
            default = action.default
            if isinstance(action, argparse._StoreFalseAction):
                if "on by default" not in action.help:
                    problems.append(f"{label}: does not say that it turns off what is on by default")
            elif default not in (None, False, "", argparse.SUPPRESS) and "(default: " not in action.help:
                problems.append(f"{label}: default {default!r} not shown")
            elif action.option_strings and default not in (None, False, "", argparse.SUPPRESS) \
                    and not isinstance(default, bool) and _shown(default) not in action.help:
                # generated settings may say what None means (the model's); a value must be the value
                problems.append(f"{label}: shows another default than {_shown(default)!r}: {action.help!r}")
    assert problems == []


def test_help_of_a_command_begins_with_what_it_does(monkeypatch, capsys):
    import re

    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["overlay", "--help"])
    out = capsys.readouterr().out
    assert "Colour a segmentation's tumour by Gleason pattern (patch classifier)." in out
    assert re.search(r"--batch BATCH\s+tiles per classifier batch \(default: 16\)", out)
