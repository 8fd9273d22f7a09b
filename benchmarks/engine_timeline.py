"""Where a local engine run waits: how long its tasks took, and the gaps between the model's batches.

One run of ``predict_slide`` with its task functions wrapped in timers:

* P: predict tasks (a slot, reading, waiting for the model, the model);
* R: reading a batch into a slot;  M: the model on a batch;
* S: segment tasks (blending and writing);  B: blending;  W: writing.

A model that never waits (gaps near 0) is the bound; long gaps mean the
model starves for tiles or for blending to catch up.  ``--model instant``
uses constant probabilities, to see the engine without the network.

    python benchmarks/engine_timeline.py SLIDE [--model BUNDLE|instant] [--tile 512 --overlap 64]
        [--batch 64] [--readers 16] [--reader-processes] [--threads N] [--switch-interval S]
        [--segment-chunks K]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from open_latency import CACHE  # noqa: E402
from pipeline_stages import InstantModel  # noqa: E402
from tiled_inference import add_predict_options, predict_options, small_bundle  # noqa: E402

EVENTS: list[tuple[str, float, float]] = []


def timed(kind: str, function):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        result = function(*args, **kwargs)
        EVENTS.append((kind, start, time.perf_counter()))
        return result
    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("slide")
    parser.add_argument("--model", help="bundle, or 'instant' (default: the small benchmark U-Net)")
    add_predict_options(parser)  # --tile, --overlap, --batch, --readers, --reader-processes, ...
    parser.add_argument("--threads", type=int, help="scheduler threads (default: the engine's choice)")
    parser.add_argument("--switch-interval", type=float, help="sys.setswitchinterval, seconds")
    parser.add_argument("--segment-chunks", type=int, help="chunks blended per segment task (default: the engine's)")
    args = parser.parse_args()
    run = predict_options(args)
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval)

    from napari_cancerseg.inference import engine, graph, readers
    from napari_cancerseg.models.bundle import bundle_info, load_bundle

    bundle = small_bundle(CACHE / "benchmark_unet.keras") if args.model in (None, "instant") else args.model
    if args.model == "instant":
        model = InstantModel(max(2, len(bundle_info(bundle).classes)))
    else:
        model = load_bundle(bundle)
        size = run.tile or model.recipe.tile_size
        model.predict_batch(np.zeros((run.batch, size, size, model.recipe.channels), np.uint8), as_uint8=True)
    model.predict_batch = timed("M", model.predict_batch)
    graph.predict_task = timed("P", graph.predict_task)
    graph.segment_task = timed("S", graph.segment_task)
    graph.blend_segment = timed("B", graph.blend_segment)
    graph.write_chunks = timed("W", graph.write_chunks)
    readers.TileReaders.batch = _timed_batch(readers.TileReaders.batch)
    if args.segment_chunks:
        segments = graph.segments
        graph.segments = lambda chunks: segments(chunks, longest=args.segment_chunks)
    if args.threads:
        run_local = engine.run_local
        engine.run_local = lambda g, on_task, threads=4, band_rows=64: run_local(g, on_task, args.threads, band_rows)

    out = tempfile.mkdtemp(suffix=".zarr")
    shutil.rmtree(out)
    start = time.perf_counter()
    summary = engine.predict_slide(args.slide, bundle, out, run, model=model)
    shutil.rmtree(out, ignore_errors=True)
    print(summary.line())
    first, last = min(e[1] for e in EVENTS), max(e[2] for e in EVENTS)
    print(f"setup {first - start:.2f} s, graph {last - first:.2f} s ({summary.tiles / (last - first):.1f} tiles/s), "
          f"after {start + summary.seconds - last:.2f} s")
    print("| task | n | first (s) | last (s) | busy (s) | mean (ms) |")
    print("|---|---|---|---|---|---|")
    for kind in "PRMSBW":
        spans = [e for e in EVENTS if e[0] == kind]
        if spans:
            durations = [e[2] - e[1] for e in spans]
            print(f"| {kind} | {len(spans)} | {min(e[1] for e in spans) - first:.2f} | "
                  f"{max(e[2] for e in spans) - first:.2f} | {sum(durations):.2f} | {1e3 * np.mean(durations):.1f} |")
    model_spans = sorted(e for e in EVENTS if e[0] == "M")
    gaps = [b[1] - a[2] for a, b in zip(model_spans, model_spans[1:])]
    if gaps:
        print(f"model idle between batches: {sum(gaps):.2f} s in all, longest {max(gaps):.3f} s")


def _timed_batch(batch):
    """TileReaders.batch is a context manager: time the read (entering it), not the caller's use of the slot."""
    from contextlib import contextmanager

    @contextmanager
    def wrapper(self, *args, **kwargs):
        start = time.perf_counter()
        with batch(self, *args, **kwargs) as tiles:
            EVENTS.append(("R", start, time.perf_counter()))
            yield tiles
    return wrapper


if __name__ == "__main__":
    main()
