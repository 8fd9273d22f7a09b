"""Tiled inference on big slides built from real tissue: the original way, this engine, the pure forward rate.

For each generated slide (JPEG-tiled pyramidal TIFFs of real H&E crops, about
30% glass, as in open_latency.py), each measured in a fresh process:

* original: read the whole level into memory, cut non-overlapping tiles and
  predict them one at a time, then paste (what the original projects did);
* engine: ``predict_slide`` (its dask graph: reader threads or processes, batches, overlap blending, glass
  skipped, chunks streamed to zarr);
* forward: the same model's pure forward rate on in-memory batches of random tiles.

Columns: tiles/s (tiles of the model's size that the engine predicts: glass is
skipped, overlap adds tiles), the engine/forward ratio and peak RSS.

    python benchmarks/tiled_inference.py [--sizes 8192 16384 32768] [--model BUNDLE] [--original-max 16384]

Without --model a small U-Net bundle (filters 8-16-32-64, random weights) is
made, so that on a 2-core CPU the benchmark measures the pipeline, not only
the network; give the bundled model (or any) to measure that instead.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from napari_cancerseg.inference.options import PredictOptions

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from open_latency import CACHE, build_pyramid, peak_rss_mb  # noqa: E402


def small_bundle(path: Path) -> str:
    from napari_cancerseg.models.bundle import Recipe, save_bundle
    from napari_cancerseg.models.unet import build_unet

    if not path.exists():
        model = build_unet(input_shape=(None, None, 3), filters=(8, 16, 32, 64), dropout=(0, 0, 0, 0),
                           input_dtype="uint8")
        save_bundle(model, path, name="benchmark-unet", version="0", architecture={"builder": "unet"},
                    recipe=Recipe(tile_size=256, overlap=32, mpp=0.5, divisor=8),
                    classes=[{"label": 0, "name": "background"}, {"label": 1, "name": "foreground"}])
    return str(path)


def add_predict_options(parser: argparse.ArgumentParser) -> None:
    """The engine's settings as ``cancerseg predict`` declares them (one flag per PredictOptions field), with the
    benchmarks' defaults: level 0 (a benchmark slide is read at full resolution) and a reader per core."""
    from napari_cancerseg.cli import add_options
    from napari_cancerseg.inference.options import PredictOptions

    add_options(parser, PredictOptions)
    parser.set_defaults(level=0, readers=max(2, os.cpu_count() or 2))


def predict_options(args: argparse.Namespace) -> PredictOptions:
    from napari_cancerseg.cli import options_from_args
    from napari_cancerseg.inference.options import PredictOptions

    return options_from_args(PredictOptions, args)


def option_flags(options: PredictOptions) -> list[str]:
    """Every setting as a flag, defaults included: a child's parser has the benchmarks' defaults, not the CLI's."""
    return options.to_argv(skip_defaults=False)


def run_engine(slide: str, bundle: str, options: PredictOptions, model=None) -> dict:
    """``predict_slide`` timed; ``model``: a stand-in for the bundle's model (pipeline_stages.py)."""
    from napari_cancerseg.inference.engine import predict_slide
    from napari_cancerseg.models.bundle import load_bundle

    if model is None:
        model = load_bundle(bundle)  # loaded and compiled for the run's batch shape before timing, as for forward
        size = options.tile or model.recipe.tile_size
        model.predict_batch(np.zeros((options.batch, size, size, model.recipe.channels), np.uint8), as_uint8=True)
    out = tempfile.mkdtemp(suffix=".zarr")
    shutil.rmtree(out)
    summary = predict_slide(slide, bundle, out, options, model=model)
    shutil.rmtree(out, ignore_errors=True)
    return {"tiles": summary.tiles, "seconds": summary.seconds, "peak_rss_mb": peak_rss_mb()}


def run_original(slide: str, bundle: str) -> dict:
    """Whole level in memory, non-overlapping tiles, one at a time, pasted into a full-size mask."""
    import openslide

    from napari_cancerseg.models.bundle import load_bundle

    model = load_bundle(bundle)
    size = model.recipe.tile_size
    start = time.perf_counter()
    source = openslide.OpenSlide(slide)
    image = np.asarray(source.read_region((0, 0), 0, source.dimensions).convert("RGB"))
    mask = np.zeros(image.shape[:2], np.uint8)
    tiles = 0
    for y in range(0, image.shape[0] - size + 1, size):
        for x in range(0, image.shape[1] - size + 1, size):
            probabilities = model.predict_tile(image[y:y + size, x:x + size])
            mask[y:y + size, x:x + size] = probabilities.argmax(-1)
            tiles += 1
    return {"tiles": tiles, "seconds": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}


def run_forward(bundle: str, batch: int, tile: int | None = None, batches: int = 8, repeats: int = 5) -> dict:
    """The median of ``repeats`` timings of ``batches`` forward passes: one timing of 128 tiles varied 20%."""
    from napari_cancerseg.models.bundle import load_bundle

    model = load_bundle(bundle)
    size = tile or model.recipe.tile_size
    tiles = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3), dtype=np.uint8)
    model.predict_batch(tiles, as_uint8=True)  # warm up; the engine's own call (uint8 probabilities out)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(batches):
            model.predict_batch(tiles, as_uint8=True)
        seconds.append(time.perf_counter() - start)
    return {"tiles": batch * batches, "seconds": float(np.median(seconds)), "peak_rss_mb": peak_rss_mb()}


def in_subprocess(options: list[str], *args: str, script: str = __file__) -> dict:
    """``script --one ARGS`` in a fresh process: its last stdout line, as JSON."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, script, *options, "--one", *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        return {"error": (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[8192, 16384, 32768])
    parser.add_argument("--model", help="model bundle (default: a small benchmark U-Net)")
    add_predict_options(parser)  # --batch, --readers, --reader-processes, --tile, --overlap, ...
    parser.add_argument("--original-max", type=int, default=16384, help="largest slide for the whole-level baseline")
    parser.add_argument("--one", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    run = predict_options(args)
    if args.one:
        kind, *rest = args.one
        if kind == "engine":
            result = run_engine(rest[0], rest[1], run)
        elif kind == "original":
            result = run_original(rest[0], rest[1])
        else:
            result = run_forward(rest[0], run.batch, run.tile)
        print(json.dumps(result))
        return

    bundle = args.model or small_bundle(CACHE / "benchmark_unet.keras")
    options = option_flags(run)
    forward = in_subprocess(options, "forward", bundle)
    forward_rate = forward["tiles"] / forward["seconds"]
    print(f"# model {Path(bundle).name}, batch {run.batch}, "
          f"{run.readers} reader {'processes' if run.reader_processes else 'threads'}, {os.cpu_count()} cores; "
          f"pure forward: {forward_rate:.1f} tiles/s, peak RSS {forward['peak_rss_mb']:.0f} MB")
    print("| slide | method | tiles | seconds | tiles/s | engine / forward | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:
        slide = str(build_pyramid(size, CACHE / f"mosaic_{size}.tif"))
        methods = ["engine"] + (["original"] if size <= args.original_max else [])
        for method in methods:
            result = in_subprocess(options, method, slide, bundle)
            if "error" in result:
                print(f"| {size} x {size} | {method} | error: {result['error']} | | | | |")
                continue
            rate = result["tiles"] / result["seconds"]
            ratio = f"{rate / forward_rate:.2f}" if method == "engine" else ""
            print(f"| {size} x {size} | {method} | {result['tiles']} | {result['seconds']:.1f} | {rate:.1f} | "
                  f"{ratio} | {result['peak_rss_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
