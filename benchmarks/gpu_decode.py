"""GPU JPEG decode (nvImageCodec) of a slide's raw tiles against the CPU path (imagecodecs), in one run.

The raw-tile reader (io/rawtiles.py) decodes a TIFF level's JPEG tiles with
libjpeg-turbo.  On a GPU workstation nvImageCodec (``pip install
'napari-cancerseg[gpu]'``, package nvidia-nvimgcodec-cu12) can decode whole
batches of them on the device.  For the tissue tiles of one generated slide
(open_latency.build_pyramid) this prints, per batch size: CPU tiles/s (1 thread
and a thread per core, the GIL released in the codec), GPU tiles/s, the ratio,
and the largest pixel difference between the two (issue 16 asks for <= 1 grey
level, or the difference documented).

TIFF JPEG tiles are abbreviated streams whose tables sit in the page's
JPEGTables tag: a complete JPEG is the tables without their EOI followed by the
tile without its SOI.

    python benchmarks/gpu_decode.py [--size 16384] [--tiles 2048] [--batches 64 256]

Without nvImageCodec or a GPU it says so and measures the CPU path only.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from open_latency import CACHE, build_pyramid  # noqa: E402


def tile_streams(path: str, count: int) -> tuple[list[bytes], list[bytes]]:
    """(raw tile bytes as stored, the same as complete JPEG files) of up to ``count`` level-0 tiles, row-major."""
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        if page.compression != 7:
            raise SystemExit(f"{path}: level 0 is not JPEG (compression {page.compression})")
        tables = page.jpegtables or b""
        raw = []
        with open(path, "rb") as fh:
            for offset, size in zip(page.dataoffsets, page.databytecounts):
                if size == 0:
                    continue
                fh.seek(offset)
                raw.append(fh.read(size))
                if len(raw) == count:
                    break
    whole = [tables[:-2] + data[2:] if tables else data for data in raw]
    return raw, whole


def cpu_decode(streams: list[bytes], threads: int) -> tuple[float, list[np.ndarray]]:
    import imagecodecs

    start = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        pixels = list(pool.map(imagecodecs.jpeg8_decode, streams))
    return len(streams) / (time.perf_counter() - start), pixels


def gpu_decoder():
    """nvImageCodec's decoder and a function decoding a batch to host arrays, or None with why not."""
    try:
        from nvidia import nvimgcodec  # type: ignore[import-not-found]
    except ImportError as err:
        return None, f"nvImageCodec not installed ({err}); pip install 'napari-cancerseg[gpu]'"
    try:
        decoder = nvimgcodec.Decoder()
    except Exception as err:  # noqa: BLE001 - no GPU, no driver: report and measure the CPU only
        return None, f"nvImageCodec cannot start a decoder: {err}"
    params = nvimgcodec.DecodeParams(color_spec=nvimgcodec.ColorSpec.RGB)

    def decode(streams: list[bytes], to_host: bool) -> list:
        images = decoder.decode(streams, params=params)
        return [np.asarray(image.cpu()) for image in images] if to_host else images

    return decode, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=16384, help="side of the generated slide (px)")
    parser.add_argument("--tiles", type=int, default=2048, help="tiles to decode")
    parser.add_argument("--batches", type=int, nargs="*", default=[64, 256], help="GPU batch sizes")
    args = parser.parse_args()
    slide = str(build_pyramid(args.size, CACHE / f"mosaic_{args.size}.tif"))
    raw, whole = tile_streams(slide, args.tiles)
    cores = os.cpu_count() or 1
    cpu1, reference = cpu_decode(whole, 1)
    cpun, _ = cpu_decode(whole, cores)
    print(f"# {len(whole)} JPEG tiles of {reference[0].shape[1]} px from {os.path.basename(slide)}, {cores} cores")
    print("| path | batch | tiles/s | / CPU 1 thread | / CPU all cores | max pixel difference |")
    print("|---|---|---|---|---|---|")
    print(f"| CPU imagecodecs, 1 thread | 1 | {cpu1:.0f} | 1.00 | {cpu1 / cpun:.2f} | 0 |")
    print(f"| CPU imagecodecs, {cores} threads | 1 | {cpun:.0f} | {cpun / cpu1:.2f} | 1.00 | 0 |")
    decode, why = gpu_decoder()
    if decode is None:
        print(f"# GPU: {why}")
        return
    decode(whole[:max(args.batches)], to_host=False)  # warm up: CUDA context, decoder state
    for batch in args.batches:
        start = time.perf_counter()
        for i in range(0, len(whole), batch):
            decode(whole[i:i + batch], to_host=False)
        rate = len(whole) / (time.perf_counter() - start)
        host = [p for i in range(0, len(whole), batch) for p in decode(whole[i:i + batch], to_host=True)]
        worst = max(int(np.abs(a.astype(np.int16) - b).max()) for a, b in zip(host, reference, strict=True))
        print(f"| GPU nvImageCodec (device arrays) | {batch} | {rate:.0f} | {rate / cpu1:.2f} | {rate / cpun:.2f} | "
              f"{worst} |", flush=True)


if __name__ == "__main__":
    main()
