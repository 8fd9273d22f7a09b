"""Where the tiled engine's time goes: each stage's rate alone, against the whole engine, in one run.

On one generated slide (see open_latency.build_pyramid), each measured in a fresh process:

* decode: reading the slide's tissue tiles through the engine's readers
  (threads or processes), batch after batch, one batch at a time, nothing else;
* forward: the model's pure forward rate on in-memory batches (uint8 out, as the engine asks);
* pipeline: the whole engine with an instant model (constant probabilities), so
  reading, batching, blending and writing alone;
* engine: the whole engine with the model.

Ratios are against the forward rate.  The engine can at best reach the
slowest of decode, forward and pipeline.

    python benchmarks/pipeline_stages.py --model BUNDLE [--size 16384] [--readers 16] [--batch 64] [--reader-processes]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from open_latency import CACHE, build_pyramid, peak_rss_mb  # noqa: E402
from tiled_inference import (  # noqa: E402
    add_predict_options,
    in_subprocess,
    option_flags,
    predict_options,
    run_engine,
    run_forward,
    small_bundle,
)

if TYPE_CHECKING:
    from napari_cancerseg.inference.options import PredictOptions


class InstantModel:
    """Constant probabilities at once: what the engine costs around the model."""

    def __init__(self, n_classes: int):
        self.n_classes = n_classes

    def predict_batch(self, tiles: np.ndarray, as_uint8: bool = False) -> np.ndarray:
        out = np.empty((*tiles.shape[:3], self.n_classes), np.uint8)
        out[...] = 255 // self.n_classes
        return out


def run_decode(slide: str, bundle: str, options: PredictOptions) -> dict:
    """The engine's readers alone, batch after batch over the tissue tiles (row-major, as the engine reads)."""
    from napari_cancerseg.inference.readers import TileReaders, column_owners
    from napari_cancerseg.inference.tiling import TileGrid
    from napari_cancerseg.io.wsi import SlideHandle
    from napari_cancerseg.models.bundle import bundle_info

    run = options.resolved(bundle_info(bundle).recipe)
    batch, readers = run.batch, run.readers
    width, height = SlideHandle.shared(slide).slide.dimensions
    grid = TileGrid(height, width, run.tile, run.overlap)
    tiles = [(r, c) for r in range(grid.rows) for c in range(grid.cols) if c * grid.stride < 0.65 * width]
    owners = column_owners(tiles, readers)
    pool = TileReaders(slide, 0, grid.tile, batch, readers, run.reader_processes)
    with pool.batch([(0, 0)] * readers, list(range(readers))):  # started and warm
        pass
    start = time.perf_counter()
    for i in range(0, len(tiles), batch):
        members = tiles[i:i + batch]
        with pool.batch([grid.tile_origin(*t) for t in members], [owners[t] for t in members]):
            pass
    seconds = time.perf_counter() - start
    pool.close()
    return {"tiles": len(tiles), "seconds": seconds, "peak_rss_mb": peak_rss_mb()}


def run_pipeline(slide: str, bundle: str, options: PredictOptions) -> dict:
    from napari_cancerseg.models.bundle import bundle_info

    model = InstantModel(max(2, len(bundle_info(bundle).classes)))
    return run_engine(slide, bundle, options, model=model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--model")
    add_predict_options(parser)  # --batch, --readers, --reader-processes, --tile, --overlap, ...
    parser.add_argument("--stages", nargs="*", default=["decode", "forward", "pipeline", "engine"])
    parser.add_argument("--one", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    run = predict_options(args)
    if args.one:
        kind, *rest = args.one
        runs = {"decode": lambda: run_decode(rest[0], rest[1], run),
                "forward": lambda: run_forward(rest[1], run.batch, run.tile),
                "pipeline": lambda: run_pipeline(rest[0], rest[1], run),
                "engine": lambda: run_engine(rest[0], rest[1], run)}
        print(json.dumps(runs[kind]()))
        return

    bundle = args.model or small_bundle(CACHE / "benchmark_unet.keras")
    slide = str(build_pyramid(args.size, CACHE / f"mosaic_{args.size}.tif"))
    options = option_flags(run)
    print(f"# {args.size} x {args.size} slide, model {Path(bundle).name}, tile {run.tile or 'of the model'}, "
          f"batch {run.batch}, {run.readers} reader "
          f"{'processes' if run.reader_processes else 'threads'}, {os.cpu_count()} cores")
    print("| stage | tiles | seconds | tiles/s | / forward | peak RSS (MB) |")
    print("|---|---|---|---|---|---|")
    forward_rate = None
    for stage in args.stages:
        result = in_subprocess(options, stage, slide, bundle, script=__file__)
        if "error" in result:
            print(f"| {stage} | error: {result['error']} | | | | |", flush=True)
            continue
        rate = result["tiles"] / result["seconds"]
        forward_rate = rate if stage == "forward" else forward_rate
        ratio = f"{rate / forward_rate:.2f}" if forward_rate else ""
        print(f"| {stage} | {result['tiles']} | {result['seconds']:.2f} | {rate:.1f} | {ratio} | "
              f"{result['peak_rss_mb']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
