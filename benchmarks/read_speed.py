"""Read speed: the viewer's and the engine's slide reads against OpenSlide's ``read_region``, per format.

For every slide (the real SVS and NDPI of ../shared/data, and generated JPEG
pyramidal TIFFs of real tissue, see open_latency.py), the same windows of
level 0 are read, in one run, by each reader: random 512 px windows (the
engine's tiles), random 1920 x 1080 screens, and a pan (a screen moved right by
a tenth of its width at each step).  The readers:

* ``read_region``: openslide-python's public call (composited on the slide's
  background as ``composite_on_background`` does), the baseline;
* ``engine``: ``SlideHandle.read`` as the tiled engine calls it (raw tiles where
  the level allows), into a reused buffer;
* ``viewer``: napari's way, ``np.asarray`` of the window of the layer's level
  (an ``io.slide_levels.SlideLevel``: native tiles decoded on a thread pool,
  through its decoded-block cache, started cold for each mode).

The engine's windows with 1 and 2 threads (each thread reads its share);
pixels are checked equal to ``read_region``'s for every window (untimed).  Target
(issue 16): viewer reads >= 3x ``read_region`` on the 2-core CPU.

    python benchmarks/read_speed.py [--windows 200] [--sizes 8192]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from open_latency import CACHE, DATA, build_pyramid  # noqa: E402

WINDOW = 512  # the engine's tile
ROUNDS = 5  # readers alternate over this many parts of the windows
SCREEN = (1080, 1920)  # what napari asks of a level when a full-HD canvas shows it at 1:1


def origins(width: int, height: int, size: tuple[int, int], count: int, pan: bool, seed: int = 0):
    """Random window origins, or a pan: a screen moved right by a tenth of its width each step (rows wrap)."""
    h, w = size
    if not pan:
        rng = np.random.default_rng(seed)
        return [(int(rng.integers(0, max(1, width - w))), int(rng.integers(0, max(1, height - h))))
                for _ in range(count)]
    step, out, x, y = w // 10, [], 0, 0
    for _ in range(count):
        out.append((x, y))
        x += step
        if x + w > width:
            x, y = 0, (y + h) % max(1, height - h)
    return out


def timed(read, where, threads: int) -> float:
    """Windows per second reading at ``where`` with ``threads`` threads (each its share).

    Each window's pixels are dropped as soon as they are read, as napari drops a slice when the next one comes:
    kept, 300 screens would be 1.8 GB of fresh pages, and first-touch page faults, not reading, would be timed.
    """
    def work(part: int) -> None:
        for index in range(part, len(where), threads):
            read(*where[index])

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(work, range(threads)))
    return len(where) / (time.perf_counter() - start)


def worst_difference(read, reference, where) -> int:
    """The largest difference between ``read``'s and ``reference``'s pixels over the windows (untimed)."""
    return max(int(np.abs(read(*w).astype(np.int16) - reference(*w)).max()) for w in where)


def measure_mode(path: str, size: tuple[int, int], threads: int, pan: bool, count: int) -> dict[str, float]:
    """Windows per second of read_region, the engine's reads and the viewer's, on the same windows."""
    import openslide

    from napari_cancerseg.io import wsi

    slide = openslide.OpenSlide(path)
    handle = wsi.SlideHandle.shared(path)
    width, height = slide.dimensions
    h, w = min(size[0], height), min(size[1], width)
    where = origins(width, height, (h, w), count, pan)
    from napari_cancerseg.io import slide_levels

    level = wsi.read(path)[0][0][0]  # the layer's level 0, as napari gets it
    slide_levels.clear_cache()  # nothing cached from the last mode: the viewer's blocks, the engine's tiles
    if handle.raw is not None:
        handle.raw.clear_cache()
    buffers: dict[int, np.ndarray] = {}

    def read_region(x: int, y: int) -> np.ndarray:
        return wsi.composite_on_background(np.asarray(slide.read_region((x, y), 0, (w, h))), handle.background)

    def engine(x: int, y: int) -> np.ndarray:  # a reused buffer per thread, as the engine's reader slots
        out = buffers.setdefault(threading.get_ident(), np.empty((h, w, 3), np.uint8))
        return handle.read(0, x, y, w, h, out=out).copy()

    def viewer(x: int, y: int) -> np.ndarray:
        return np.asarray(level[y:y + h, x:x + w])

    readers = {"read_region": read_region, "engine": engine, "viewer": viewer}
    seconds = dict.fromkeys(readers, 0.0)
    # rounds of A/B/C, each reader a fifth of the windows in turn, so a load that comes and goes on a shared
    # machine weighs on every reader alike (the viewer's cache carries over rounds, as over a session); after
    # each timed share, the same windows are read again and compared with read_region's, untimed (a re-read adds
    # nothing new to a cache: the next share starts as it would have)
    for part in range(ROUNDS):
        share = where[part::ROUNDS]
        for name, read in readers.items():
            seconds[name] += len(share) / timed(read, share, threads)
            if name != "read_region":
                worst = worst_difference(read, read_region, share)
                if worst:
                    raise AssertionError(f"{path}: {name} differs from read_region by up to {worst}")
    return {name: len(where) / spent for name, spent in seconds.items()}


MODES = [("512 px windows", (WINDOW, WINDOW), 1, False), ("512 px windows", (WINDOW, WINDOW), 2, False),
         ("screens", SCREEN, 1, False), ("pan", SCREEN, 1, True)]


def measure(path: str, count: int) -> list[dict]:
    from napari_cancerseg.io import wsi

    handle = wsi.SlideHandle.shared(path)
    raw = sorted(handle.raw.levels) if handle.raw else []
    return [{"slide": Path(path).name, "raw": raw, "mode": f"{mode}, {threads} thr",
             **measure_mode(path, size, threads, pan, count)} for mode, size, threads, pan in MODES]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=200)
    parser.add_argument("--sizes", type=int, nargs="*", default=[8192])
    args = parser.parse_args()
    slides = [str(DATA / "wsi/CMU-1-Small-Region.svs"), str(DATA / "wsi/test3-DAPI-2-387.ndpi")]
    slides += [str(build_pyramid(size, CACHE / f"pyramid_{size}.tif")) for size in args.sizes]
    print(f"level 0, {args.windows} windows per reader and mode; pixels equal to read_region's in every row")
    print(f"{'slide':24s} {'raw levels':11s} {'mode':24s} {'read_region':>11s} {'engine':>7s} {'viewer':>7s} "
          f"{'engine/rr':>9s} {'viewer/rr':>9s}")
    for path in slides:
        for row in measure(path, args.windows):
            base = row["read_region"]
            print(f"{row['slide'][:24]:24s} {str(row['raw'])[:11]:11s} {row['mode']:24s} {base:11.1f} "
                  f"{row['engine']:7.1f} {row['viewer']:7.1f} {row['engine'] / base:9.2f} "
                  f"{row['viewer'] / base:9.2f}", flush=True)
    print("(windows/s; rr: openslide-python read_region; engine: SlideHandle.read; viewer: np.asarray of the "
          "layer's level, io.slide_levels, its block cache cold at the start of each mode)")


if __name__ == "__main__":
    main()
