"""PredictOptions and TrainOptions: checks that name every bad setting, JSON for the model process, the docks' argv."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import pytest

from napari_cancerseg.cli import build_parser, options_from_args
from napari_cancerseg.errors import CancersegError
from napari_cancerseg.inference import worker
from napari_cancerseg.inference.options import PredictOptions, cli_command
from napari_cancerseg.models.bundle import Recipe
from napari_cancerseg.training.options import TrainOptions
from napari_cancerseg.training.trainer import TrainConfig

from ..conftest import ROOT

#: every setting away from its default
PREDICT = PredictOptions(mpp=0.25, tile=256, overlap=0, batch=3, tissue=0.0, readers=7, reader_processes=True,
                         scheduler="tcp://h:8786", overwrite=True)
TRAIN = TrainOptions(out="b.keras", name="n", version="2.1.0", architecture="sk_unet", filters=(8, 16),
                     dropout=(0.0, 0.5), n_classes=3, class_names=("bg", "a", "b"), size=64, batch_size=2, epochs=3,
                     steps_per_epoch=4, learning_rate=0.01, loss="cce", patience=2, seed=5, mpp=0.5, channels=1,
                     augment=False, training_data="d", reproduce="r", notes="x", init_bundle="i.keras",
                     progress_json=True, extra_card={"k": [1, 2]})


def test_the_test_options_change_every_setting():
    for options, cls in ((PREDICT, PredictOptions), (TRAIN, TrainOptions)):
        defaults = cls(out="") if cls is TrainOptions else cls()  # out: TrainOptions' one setting without default
        same = [f.name for f in dataclasses.fields(cls) if getattr(options, f.name) == getattr(defaults, f.name)]
        assert same == (["level"] if cls is PredictOptions else []), same  # PREDICT has mpp: the two exclude each other


def test_options_import_without_tensorflow_keras_qt_or_napari():
    code = ("import sys, napari_cancerseg.inference.options, napari_cancerseg.training.options; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorflow', 'keras', 'napari', 'qtpy', "
            "'PyQt5', 'magicgui', 'zarr', 'dask'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "[]"


def test_json_round_trip_keeps_every_setting():
    assert PredictOptions.from_json(PREDICT.to_json()) == PREDICT
    assert PredictOptions.from_json(PredictOptions().to_json()) == PredictOptions()
    back = TrainOptions.from_json(TRAIN.to_json())
    assert back == TRAIN and isinstance(back.filters, tuple) and isinstance(back.class_names, tuple)
    assert json.loads(PREDICT.to_json())["mpp"] == 0.25


def test_validate_names_every_bad_setting_at_once():
    bad = PredictOptions(level=-1, tile=0, overlap=-2, batch=0, tissue=2.0, readers=-2, reader_processes="yes",
                         scheduler=5)
    with pytest.raises(CancersegError) as err:
        bad.validate()
    message = str(err.value)
    for expected in ("level must be 0 or more, not -1", "tile must be 1 or more, not 0",
                     "overlap must be 0 or more, not -2", "batch must be 1 or more, not 0",
                     "tissue must be a fraction from 0 to 1, not 2.0", "readers must be 1 or more, not -2",
                     "reader_processes must be true or false, not 'yes'", "scheduler must be text, not 5"):
        assert expected in message
    assert "mpp" not in message and "overwrite" not in message  # only the bad ones are named
    for mpp, problem in ((-1.0, "mpp must be positive, not -1.0"), (float("inf"), "mpp must be finite, not inf"),
                         ("0.5", "mpp must be positive, not '0.5'")):
        with pytest.raises(CancersegError, match=problem):
            PredictOptions(mpp=mpp).validate()
    with pytest.raises(CancersegError, match="give level or mpp, not both"):
        PredictOptions(level=1, mpp=0.5).validate()
    with pytest.raises(CancersegError) as err:
        TrainOptions(out="o", epochs=0, learning_rate=0.0, loss="l2", channels=2, filters=(16, 0)).validate()
    message = str(err.value)
    for expected in ("epochs must be 1 or more, not 0", "learning_rate must be positive, not 0.0",
                     "loss must be one of bce, dice", "not 'l2'", "channels must be one of 1, 3, not 2",
                     "filters must"):
        assert expected in message
    assert PREDICT.validate() is PREDICT and TRAIN.validate() is TRAIN


def test_from_json_refuses_unknown_missing_and_bad_settings():
    with pytest.raises(CancersegError, match="PredictOptions: unknown settings batchsize"):
        PredictOptions.from_json('{"batchsize": 4}')
    with pytest.raises(CancersegError, match="PredictOptions: not JSON"):
        PredictOptions.from_json("{batch: 4")
    with pytest.raises(CancersegError, match="batch must be 1 or more, not 0"):
        PredictOptions.from_json('{"batch": 0}')
    with pytest.raises(CancersegError, match="TrainOptions: missing settings out"):
        TrainOptions.from_json('{"epochs": 2}')
    assert PredictOptions.from_json('{"tissue": 0.5}') == PredictOptions(tissue=0.5)


def test_resolved_fills_only_what_says_the_models():
    recipe = Recipe(tile_size=256, overlap=32, mpp=0.5)
    assert PredictOptions().resolved(recipe) == PredictOptions(tile=256, overlap=32, mpp=0.5)
    # 0 is an overlap of its own, not "the model's"; a chosen level is read as it is, whatever µm/px it has
    assert PredictOptions(tile=128, overlap=0).resolved(recipe) == PredictOptions(tile=128, overlap=0, mpp=0.5)
    assert PredictOptions(level=2).resolved(recipe) == PredictOptions(level=2, tile=256, overlap=32)
    assert PredictOptions(mpp=1.0, batch=4).resolved(recipe).mpp == 1.0


def test_worker_argv_parses_back_to_equal_options():
    argv = worker.command("slide.svs", "model.keras", "out.zarr", PREDICT)
    assert argv[:3] == [sys.executable, "-m", "napari_cancerseg.inference.worker"]
    args = worker.build_parser().parse_args(argv[3:])
    assert (args.slide, args.model, args.out) == ("slide.svs", "model.keras", "out.zarr")
    assert PredictOptions.from_json(args.options) == PREDICT
    default = worker.build_parser().parse_args(worker.command("s", "m", "o")[3:])
    assert PredictOptions.from_json(default.options) == PredictOptions()


def test_the_docks_models_mpp_reaches_the_worker_as_none():
    """The Predict dock's spin box says 0 for "the model's µm/px": the worker gets None, not 0."""
    options = PredictOptions.from_form(mpp=0.0, tissue=0.0)
    args = worker.build_parser().parse_args(worker.command("s", "m", "o", options)[3:])
    received = PredictOptions.from_json(args.options)
    assert received.mpp is None and received.tissue == 0.0  # a tissue threshold of 0 is a threshold: kept
    assert received.resolved(Recipe(mpp=0.5)).mpp == 0.5
    assert PredictOptions.from_form(mpp=0.25, tissue=0.3) == PredictOptions(mpp=0.25, tissue=0.3)
    # where 0 is a value of its own (level 0, no overlap) it stays 0
    assert PredictOptions.from_form(level=0, overlap=0, tile=0) == PredictOptions(level=0, overlap=0)
    with pytest.raises(CancersegError, match="tissue must be a fraction"):
        PredictOptions.from_form(tissue=1.5)


def test_train_config_is_train_options_with_its_defaults():
    assert TrainConfig is TrainOptions
    assert TrainOptions("o").class_names == ("background", "foreground")
    assert TrainOptions("o", n_classes=3).class_names == ("class_0", "class_1", "class_2")
    assert TrainOptions("o", class_names=("a", "b")).class_names == ("a", "b")


def test_training_docks_argv_parses_back_to_its_options():
    """What the training dock starts: ``cancerseg train --patches DATASET`` plus its options' flags."""
    options = TrainOptions(out="next.keras", version="1.1.0", init_bundle="base.keras", size=128, epochs=5,
                           steps_per_epoch=20, batch_size=4, learning_rate=1e-4, progress_json=True,
                           training_data="corrected regions of s.svs (s.zarr)")
    argv = cli_command("train", options=options, patches="s.patches.zarr")
    assert argv[:4] == [sys.executable, "-m", "napari_cancerseg.cli", "train"]
    args = build_parser().parse_args(argv[3:])
    assert args.patches == ["s.patches.zarr"]
    assert options_from_args(TrainOptions, args) == options
    assert "--name" not in argv and "--loss" not in argv  # defaults are left to the CLI
    with pytest.raises(CancersegError, match="notes is not a command-line setting"):
        TrainOptions(out="o", notes="x").to_argv()


def test_cli_command_builds_what_the_parser_reads():
    argv = cli_command("classify", "img.png", model="c.keras", json=True, route=["brain=b.keras", "breast=m.keras"])
    assert argv[3:] == ["classify", "img.png", "--model", "c.keras", "--json", "--route", "brain=b.keras",
                        "breast=m.keras"]
    args = build_parser().parse_args(argv[3:])
    assert (args.input, args.model, args.json, args.route) == ("img.png", "c.keras", True,
                                                               ["brain=b.keras", "breast=m.keras"])
    assert "--route" not in cli_command("classify", "img.png", model="c.keras", json=True, route=[])
    overlay = build_parser().parse_args(cli_command("overlay", "s.svs", segmentation="p.zarr", model="g.keras",
                                                    out="p.patterns.zarr", json=True)[3:])
    assert (overlay.slide, overlay.segmentation, overlay.out, overlay.json) == ("s.svs", "p.zarr",
                                                                                "p.patterns.zarr", True)
