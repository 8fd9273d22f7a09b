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

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from open_latency import CACHE, build_pyramid, peak_rss_mb  # noqa: E402
from tiled_inference import in_subprocess, run_engine, run_forward, small_bundle  # noqa: E402


class InstantModel:
    """Constant probabilities at once: what the engine costs around the model."""

    def __init__(self, n_classes: int):
        self.n_classes = n_classes

    def predict_batch(self, tiles: np.ndarray, as_uint8: bool = False) -> np.ndarray:
        out = np.empty((*tiles.shape[:3], self.n_classes), np.uint8)
        out[...] = 255 // self.n_classes
        return out


def run_decode(slide: str, bundle: str, batch: int, readers: int, processes: bool, tile: int | None,
               overlap: int | None) -> dict:
    """The engine's readers alone, batch after batch over the tissue tiles (row-major, as the engine reads)."""
    from napari_cancerseg.inference.readers import TileReaders, column_owners
    from napari_cancerseg.inference.tiling import TileGrid
    from napari_cancerseg.io.wsi import SlideHandle
    from napari_cancerseg.models.bundle import bundle_info

    recipe = bundle_info(bundle).recipe
    width, height = SlideHandle.shared(slide).slide.dimensions
    grid = TileGrid(height, width, tile or recipe.tile_size, recipe.overlap if overlap is None else overlap)
    tiles = [(r, c) for r in range(grid.rows) for c in range(grid.cols) if c * grid.stride < 0.65 * width]
    owners = column_owners(tiles, readers)
    pool = TileReaders(slide, 0, grid.tile, batch, readers, processes)
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


def run_pipeline(slide: str, bundle: str, batch: int, readers: int, processes: bool, tile: int | None,
                 overlap: int | None) -> dict:
    from napari_cancerseg.models.bundle import bundle_info

    model = InstantModel(max(2, len(bundle_info(bundle).classes)))
    return run_engine(slide, bundle, batch, readers, processes, tile, overlap, model=model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=16384)
    parser.add_argument("--model")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--readers", type=int, default=max(2, os.cpu_count() or 2))
    parser.add_argument("--reader-processes", action="store_true")
    parser.add_argument("--tile", type=int, help="tile size (default: the model's)")
    parser.add_argument("--overlap", type=int, help="tile overlap (default: the model's)")
    parser.add_argument("--stages", nargs="*", default=["decode", "forward", "pipeline", "engine"])
    parser.add_argument("--one", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, *rest = args.one
        common = (args.readers, args.reader_processes)
        runs = {"decode": lambda: run_decode(rest[0], rest[1], args.batch, *common, args.tile, args.overlap),
                "forward": lambda: run_forward(rest[1], args.batch, args.tile),
                "pipeline": lambda: run_pipeline(rest[0], rest[1], args.batch, *common, args.tile, args.overlap),
                "engine": lambda: run_engine(rest[0], rest[1], args.batch, *common, args.tile, args.overlap)}
        print(json.dumps(runs[kind]()))
        return

    bundle = args.model or small_bundle(CACHE / "benchmark_unet.keras")
    slide = str(build_pyramid(args.size, CACHE / f"mosaic_{args.size}.tif"))
    options = ["--batch", str(args.batch), "--readers", str(args.readers)] + (
        ["--reader-processes"] if args.reader_processes else []) + [
        f"--{name}={value}" for name, value in (("tile", args.tile), ("overlap", args.overlap)) if value is not None]
    print(f"# {args.size} x {args.size} slide, model {Path(bundle).name}, tile {args.tile or 'of the model'}, "
          f"batch {args.batch}, {args.readers} reader "
          f"{'processes' if args.reader_processes else 'threads'}, {os.cpu_count()} cores")
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
