"""Open latency and memory: this plugin's lazy readers against reading a whole level.

For every real file in ../shared/data and for generated pyramids (8k, 16k, 32k
px square, mosaics of real H&E crops from CMU-1-Small-Region with about a third
left as white glass, JPEG-tiled pyramidal TIFFs that OpenSlide reads as generic
TIFF), each measurement runs in a fresh process and reports:

* open: time for the plugin's reader to return its layers (no pixels read);
* lowest: time to fetch the lowest-resolution level (what napari shows first);
* peak RSS of that process;
* baseline, measured in the same run: what the original projects did, reading
  level 0 whole into memory (OpenSlide ``read_region`` over the full level for
  slides, ``get_fdata``/``pixel_array`` for volumes and DICOM).

Targets (issue 2): open under 0.5 s, and peak memory flat whatever the slide size.

    python benchmarks/open_latency.py [--sizes 8192 16384 32768] [--no-baseline-above 40000]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CANCERSEG_TEST_DATA", ROOT.parent / "shared" / "data"))
CACHE = ROOT / "benchmarks" / "_data"
REAL_FILES = [
    "wsi/CMU-1-Small-Region.svs",
    "wsi/test3-DAPI-2-387.ndpi",
    "mri/prostate_t2.nii.gz",
    "mri/QIN-PROSTATE-001/ADC",
    "mammo/cbis-ddsm-P00173-benign-1-130.dcm",
]


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM: reset at exec, unlike ru_maxrss which keeps the parent's)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------- generated slides


def build_pyramid(size: int, path: Path, tile: int = 256, seed: int = 0, glass: float = 0.3,
                  pale: tuple[float, ...] = (), glass_rgb: tuple[int, int, int] = (255, 255, 255),
                  keep_level0: bool = False) -> Path:
    """A size x size JPEG pyramidal TIFF from real tissue, built band by band (bounded memory).

    The right ``glass`` share of the slide stays glass (``glass_rgb``).  ``pale``: stain strengths to draw
    each tissue cell's from (1 = as scanned, 0.3 = 30% of its optical density: pale tissue); none = all 1.
    ``keep_level0``: keep level 0 as ``<path>.level0.npy`` (a memmap) for ground truth.
    """
    import openslide
    import tifffile

    if path.exists() and (not keep_level0 or Path(str(path) + ".level0.npy").exists()):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    source = openslide.OpenSlide(str(DATA / "wsi/CMU-1-Small-Region.svs"))
    tissue = np.asarray(source.read_region((0, 0), 0, source.dimensions).convert("RGB"))
    rng = np.random.default_rng(seed)
    cell = 512
    glass_from = int(size * (1 - glass)) // cell * cell  # the right part stays glass
    background = np.asarray(glass_rgb, np.float32)
    scratch = np.lib.format.open_memmap(str(path) + ".level0.npy", mode="w+", dtype=np.uint8, shape=(size, size, 3))
    for y in range(0, size, cell):
        band = np.empty((cell, size, 3), np.uint8)
        band[:] = glass_rgb
        for x in range(0, glass_from, cell):
            sy, sx = rng.integers(0, tissue.shape[0] - cell), rng.integers(0, tissue.shape[1] - cell)
            crop = tissue[sy:sy + cell, sx:sx + cell]
            if pale:  # scale optical density towards the glass: the same tissue, more lightly stained
                strength = float(rng.choice(pale))
                density = np.log10((background + 1) / (crop.astype(np.float32) + 1)) * strength
                crop = np.clip((background + 1) / 10 ** density - 1, 0, 255).round().astype(np.uint8)
            band[:, x:x + cell] = crop
        scratch[y:y + cell] = band
    levels = [scratch]
    while max(levels[-1].shape[:2]) > 1024:
        prev = levels[-1]
        h, w = prev.shape[0] // 2, prev.shape[1] // 2
        nxt = np.lib.format.open_memmap(str(path) + f".level{len(levels)}.npy", mode="w+", dtype=np.uint8,
                                        shape=(h, w, 3))
        for y in range(0, h, 1024):
            block = prev[2 * y:2 * min(h, y + 1024)].astype(np.float32)
            nxt[y:y + 1024] = block.reshape(block.shape[0] // 2, 2, w, 2, 3).mean(axis=(1, 3)).round().astype(np.uint8)
        levels.append(nxt)

    def tiles(level):
        for y in range(0, level.shape[0], tile):
            for x in range(0, level.shape[1], tile):
                block = np.full((tile, tile, 3), 255, np.uint8)
                part = level[y:y + tile, x:x + tile]
                block[: part.shape[0], : part.shape[1]] = part
                yield block

    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for index, level in enumerate(levels):
            tif.write(tiles(level), shape=level.shape, dtype=np.uint8, tile=(tile, tile), compression="jpeg",
                      photometric="rgb", subfiletype=1 if index else 0,
                      resolution=(1e4 / 0.5 / 2**index, 1e4 / 0.5 / 2**index), resolutionunit="CENTIMETER")
    for index in range(1 if keep_level0 else 0, len(levels)):
        os.remove(str(path) + f".level{index}.npy")
    return path


# ---------------------------------------------------------- one measurement each


def measure_plugin(path: str) -> dict:
    """Run in a fresh process: open through the plugin's reader, then fetch the lowest level."""
    from napari_cancerseg.io.opening import layer_reader

    start = time.perf_counter()
    layers = layer_reader(path)()
    opened = time.perf_counter() - start
    data = layers[0][0]
    lowest = data[-1] if isinstance(data, list) else data
    start = time.perf_counter()
    np.asarray(lowest)
    fetched = time.perf_counter() - start
    shape = (data[0] if isinstance(data, list) else data).shape
    return {"open_s": opened, "lowest_s": fetched, "peak_rss_mb": peak_rss_mb(),
            "levels": len(data) if isinstance(data, list) else 1, "shape": list(shape)}


def measure_baseline(path: str) -> dict:
    """Run in a fresh process: the original projects' way, level 0 whole into memory."""
    import nibabel as nib
    import openslide
    import pydicom

    start = time.perf_counter()
    if path.endswith((".nii", ".nii.gz")):
        nib.load(path).get_fdata()
    elif os.path.isdir(path) or path.endswith(".dcm"):
        files = sorted(Path(path).glob("*.dcm")) if os.path.isdir(path) else [path]
        np.stack([pydicom.dcmread(f).pixel_array for f in files])
    else:
        slide = openslide.OpenSlide(path)
        np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
    return {"full_read_s": time.perf_counter() - start, "peak_rss_mb": peak_rss_mb()}


def in_subprocess(kind: str, path: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--one", kind, path], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[8192, 16384, 32768])
    parser.add_argument("--no-baseline-above", type=int, default=40000,
                        help="skip the whole-level baseline for slides larger than this (px per side)")
    parser.add_argument("--one", nargs=2, metavar=("KIND", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        kind, path = args.one
        print(json.dumps(measure_plugin(path) if kind == "plugin" else measure_baseline(path)))
        return

    cases = [(rel, str(DATA / rel)) for rel in REAL_FILES if (DATA / rel).exists()]
    for size in args.sizes:
        start = time.perf_counter()
        path = build_pyramid(size, CACHE / f"mosaic_{size}.tif")
        print(f"# generated {path.name} ({path.stat().st_size / 1e6:.0f} MB) in {time.perf_counter() - start:.0f} s",
              file=sys.stderr)
        cases.append((f"generated {size} x {size}", str(path)))

    header = ("| input | level 0 | levels | open (s) | lowest level (s) | peak RSS (MB) | "
              "whole level 0 read (s) | its peak RSS (MB) | open / whole read | RSS / whole-read RSS |")
    rows = [header, "|" + "---|" * 10]
    for name, path in cases:
        ours = in_subprocess("plugin", path)
        if "error" in ours:
            rows.append(f"| {name} | error: {ours['error']} |")
            continue
        too_big = max(ours["shape"][:2]) > args.no_baseline_above and "generated" in name
        base = {"error": "skipped"} if too_big else in_subprocess("baseline", path)
        shape = " x ".join(map(str, ours["shape"]))
        if "error" in base:
            base_cols = f"{base['error']} | | | |"
        else:
            base_cols = (f"{base['full_read_s']:.3f} | {base['peak_rss_mb']:.0f} | "
                         f"{ours['open_s'] / base['full_read_s']:.4f} | "
                         f"{ours['peak_rss_mb'] / base['peak_rss_mb']:.3f} |")
        rows.append(f"| {name} | {shape} | {ours['levels']} | {ours['open_s']:.3f} | {ours['lowest_s']:.3f} | "
                    f"{ours['peak_rss_mb']:.0f} | {base_cols}")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
