"""Tissue masks: how much stained tissue the engine would never predict, and how much glass it predicts.

For each slide, the engine's chunk grid (the bundled model's 256 px tiles,
32 px overlap, so 224 px chunks at level 0) is laid over level 0, and each
chunk's *stained* fraction is measured at full resolution: pixels whose
optical density relative to the glass exceeds 0.05 in some channel (11%
darker than glass). A chunk is predicted when the tissue mask (computed as the
engine computes it, from a level of at most 1024 px) covers at least 10% of it
(``--tissue 0.1``). Reported, for the mask before issue 19 (Otsu within the
slide) and the glass-anchored one, measured in the same run:

* stained in skipped: the share of all stained pixels that lie in skipped chunks (target <= 1%);
* >=30% skipped: the share of chunks at least 30% stained that are skipped (target: 0);
* glass predicted: the share of glass chunks (under 1% stained) that are predicted (the cost).

Slides: CMU-1-Small-Region (real), and mosaics of its tissue (open_latency.build_pyramid):
white glass as in issue 19's 8k and 16k mosaics, and mosaics whose cells are stained at 100%, 60% and
35% of their optical density (pale tissue) on CMU's own glass colour, with 30%, 60% and no glass.

    python benchmarks/tissue_mask.py [--sizes 8192 16384]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from open_latency import CACHE, DATA, build_pyramid  # noqa: E402

STAINED_DENSITY = 0.05
CMU_GLASS = (246, 243, 243)


def otsu_mask(rgb: np.ndarray) -> np.ndarray:
    """The tissue mask before issue 19: Otsu on saturation-weighted darkness, small objects and holes removed."""
    from skimage import filters, morphology

    rgb = np.asarray(rgb)[..., :3]
    brightest = rgb.max(axis=-1).astype(np.float32)
    spread = brightest - rgb.min(axis=-1)
    saturation = np.divide(spread, brightest, out=np.zeros_like(spread), where=brightest > 0)
    score = saturation * 0.5 + (1.0 - brightest / 255.0) * 0.5
    if np.ptp(score) < 1e-3:
        return np.full(score.shape, bool(saturation.mean() > 0.1))
    mask = score > filters.threshold_otsu(score)
    min_size = max(16, int(0.0005 * mask.size))
    mask = morphology.remove_small_objects(mask, max_size=min_size)
    return morphology.remove_small_holes(mask, max_size=min_size)


def stained_per_chunk(level0: np.ndarray, glass: np.ndarray, stride: int) -> tuple[np.ndarray, int]:
    """(rows, cols) stained fraction of each chunk at full resolution, and the stained pixel count."""
    height, width = level0.shape[:2]
    rows, cols = -(-height // stride), -(-width // stride)
    fractions, total = np.zeros((rows, cols)), 0
    for row in range(rows):  # one band of chunks at a time: memory stays one band whatever the slide
        band = np.asarray(level0[row * stride:(row + 1) * stride]).astype(np.float32)
        stained = np.log10((glass + 1) / (band + 1)).max(axis=-1) > STAINED_DENSITY
        total += int(stained.sum())
        for col in range(cols):
            fractions[row, col] = stained[:, col * stride:(col + 1) * stride].mean()
    return fractions, total


def evaluate(path: str, level0: np.ndarray, glass_rgb) -> list[dict]:
    from napari_cancerseg.inference.tiling import TileGrid, tissue_fractions
    from napari_cancerseg.io.wsi import SlideHandle
    from napari_cancerseg.preprocess import tissue

    handle = SlideHandle.shared(path)
    sizes = handle.slide.level_dimensions
    level = next((i for i, size in enumerate(sizes) if max(size) <= 1024), len(sizes) - 1)
    low = handle.read(level, 0, 0, *sizes[level])  # what both masks see, as the engine reads it
    anchored, downsample = tissue.slide_tissue_mask(path, max_side=1024)  # the engine's call
    grid = TileGrid(sizes[0][1], sizes[0][0], 256, 32)
    stained, total = stained_per_chunk(level0, np.asarray(glass_rgb, np.float32), grid.stride)
    rows = []
    for name, mask in [("Otsu (before)", otsu_mask(low)), ("glass-anchored", anchored)]:
        predicted = tissue_fractions(grid, mask, downsample, 1.0) >= 0.1
        stained_pixels_skipped = (stained * grid.stride ** 2)[~predicted].sum()  # edge chunks: small overcount
        heavy, glass = stained >= 0.3, stained < 0.01
        rows.append({"slide": Path(path).name, "mask": name, "chunks": int(predicted.size),
                     "stained": float(stained.mean()), "coverage": float(mask.mean()),
                     "predicted": float(predicted.mean()),
                     "stained_skipped": float(min(1.0, stained_pixels_skipped / max(total, 1))),
                     "heavy_skipped": float((heavy & ~predicted).sum() / max(heavy.sum(), 1)),
                     "glass_predicted": float((glass & predicted).sum() / max(glass.sum(), 1))})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[8192, 16384])
    args = parser.parse_args()
    import openslide

    from napari_cancerseg.preprocess.tissue import glass_colour

    cmu = str(DATA / "wsi/CMU-1-Small-Region.svs")
    source = openslide.OpenSlide(cmu)
    cmu_pixels = np.asarray(source.read_region((0, 0), 0, source.dimensions).convert("RGB"))
    slides = [(cmu, cmu_pixels, glass_colour(cmu_pixels))]
    pale = (1.0, 0.6, 0.35)
    for size in args.sizes:
        for label, glass, strengths, rgb in [("white", 0.3, (), (255, 255, 255)), ("pale", 0.3, pale, CMU_GLASS),
                                             ("pale-glassy", 0.6, pale, CMU_GLASS), ("pale-noglass", 0.0, pale,
                                                                                       CMU_GLASS)]:
            path = build_pyramid(size, CACHE / f"tissue_{label}_{size}.tif", glass=glass, pale=strengths,
                                 glass_rgb=rgb, keep_level0=True)
            slides.append((str(path), np.load(str(path) + ".level0.npy", mmap_mode="r"), rgb))
    print(f"{'slide':30s} {'mask':15s} {'chunks':>6s} {'stained':>7s} {'mask':>5s} {'pred':>5s} "
          f"{'stained in skipped':>18s} {'>=30% skipped':>13s} {'glass predicted':>15s}")
    for path, level0, glass in slides:
        for row in evaluate(path, level0, glass):
            print(f"{row['slide'][:30]:30s} {row['mask']:15s} {row['chunks']:6d} {row['stained']:7.3f} "
                  f"{row['coverage']:5.2f} {row['predicted']:5.2f} {row['stained_skipped']:18.2%} "
                  f"{row['heavy_skipped']:13.2%} {row['glass_predicted']:15.2%}", flush=True)
    print("(stained: mean stained fraction of chunks; mask: tissue mask coverage of its level; "
          "pred: share of chunks predicted)")


if __name__ == "__main__":
    main()
