"""TIAToolbox's SemanticSegmentor against this engine: the same network, slide, tile, overlap and batch, on PyTorch.

The peer a user would pick instead is TIAToolbox (2.1.3).  Both run here on
PyTorch: with ``KERAS_BACKEND=torch`` a Keras 3 model is a ``torch.nn.Module``,
so the bundle's network is wrapped in TIAToolbox's ``ModelABC`` and both
systems run the identical weights.  Models:

* ``instant``: constant probabilities, so only each pipeline is timed (reading,
  batching, blending, writing);
* ``nuclei``: the bundled, trained nucleus U-Net (resources/nuclei_unet.keras), so that the two label maps are
  real segmentations and their Dice says whether both ran the same setup (a random-weight network's
  probabilities sit near 0.5 and its argmax flips with the blending's rounding).

Each run is a fresh process, alternating A/B/A/B; the parent samples the peak
RSS of the run's whole process tree (TIAToolbox's loader workers included).
Tiles/s is each system's own count of 512 px tiles it predicted (this engine
skips glass).  The Dice between the two label maps (>= 0.99, or the setup
differs) is measured where both predicted: this engine's tissue chunks, since
it skips glass chunks (background there, without a forward pass) while
TIAToolbox predicts every tile; "Dice (all px)" is over the whole slide.  The
setups differ in two more ways that no option aligns: TIAToolbox's tiles start
at the slide's corner while this engine's start half the overlap before it
(each chunk is the centre of its own tile), so a pixel sees other context in
each, and TIAToolbox averages overlapping tiles where this engine blends with
ramp weights and keeps uint8 probabilities.  ``--explain`` says where the
disagreeing pixels lie.

``--forward-tiles 16 0`` runs this engine twice per pair (16 tiles per forward
pass, the whole batch, against 0: Bundle's own rule), for an A/B of
``Bundle.forward_tiles``.  The peak RSS is the process tree's; "model proc"
is the run's own process's peak (getrusage), where the forward passes run.

TIAToolbox pins its own torch and libraries, so it gets its own venv (the
project's code comes from this checkout through PYTHONPATH):

    python3 -m venv /work/tia-venv
    /work/tia-venv/bin/pip install --no-deps tiatoolbox==2.1.3      # its pins ask for torch < 2.13
    /work/tia-venv/bin/pip install torch==2.14.1 torchvision==0.29.1 keras dask zarr imagecodecs \\
        opencv-python-headless openslide-python openslide-bin tifffile joblib scikit-image scipy shapely tqdm \\
        pandas defusedxml pydicom wsidicom requests pyyaml click glymur platformdirs psutil nibabel matplotlib \\
        numba timm huggingface_hub SimpleITK transformers umap-learn
    KERAS_BACKEND=torch PYTHONPATH=. /work/tia-venv/bin/python benchmarks/vs_tiatoolbox.py [--sizes 8192] \\
        [--models instant nuclei] [--repeats 2]
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

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.dirname(__file__))

from open_latency import CACHE, build_pyramid  # noqa: E402

TILE, OVERLAP, BATCH = 512, 64, 16
N_CLASSES = 2


def bundle_path(model: str) -> str:
    """The bundle whose recipe both systems follow (the instant model too: it still needs one)."""
    from tiled_inference import small_bundle

    from napari_cancerseg import NUCLEI_MODEL, resource_path

    return str(resource_path(NUCLEI_MODEL)) if model == "nuclei" else small_bundle(CACHE / "benchmark_unet.keras")


def keras_network(model: str):
    """The network both systems run: None for the instant model, else the bundle's Keras model."""
    if model == "instant":
        return None
    from napari_cancerseg.models.bundle import load_bundle

    return load_bundle(bundle_path(model))


def run_ours(slide: str, model: str, labels_out: str, forward_tiles: int = 0) -> dict:
    from pipeline_stages import InstantModel

    from napari_cancerseg.inference.engine import predict_slide
    from napari_cancerseg.inference.options import PredictOptions
    from napari_cancerseg.io.opening import layer_reader

    bundle = keras_network(model)
    if bundle is not None and forward_tiles:
        bundle.forward_tiles = forward_tiles
    path = bundle_path(model)
    out = tempfile.mkdtemp(suffix=".zarr")
    shutil.rmtree(out)
    options = PredictOptions(level=0, tile=TILE, overlap=OVERLAP, batch=BATCH, readers=os.cpu_count() or 2)
    start = time.perf_counter()
    summary = predict_slide(slide, path, out, options, model=bundle if bundle is not None else InstantModel(N_CLASSES))
    seconds = time.perf_counter() - start
    (levels, _, _), = layer_reader(out)()
    np.save(labels_out, np.asarray(levels[0]))
    import zarr

    from napari_cancerseg.io.stores import read_attributes

    expected = read_attributes(out).expected_chunks  # the chunks predicted (not glass)
    stride = TILE - OVERLAP
    predicted = np.repeat(np.repeat(expected, stride, 0), stride, 1)[:levels[0].shape[0], :levels[0].shape[1]]
    np.save(labels_out + ".predicted.npy", predicted)
    np.save(labels_out + ".foreground.npy", np.asarray(zarr.open_array(os.path.join(out, "probabilities"),
                                                                      mode="r")[N_CLASSES - 1]))
    shutil.rmtree(out, ignore_errors=True)
    return {"tiles": summary.tiles, "seconds": seconds}


def run_tiatoolbox(slide: str, model: str, labels_out: str) -> dict:
    import torch
    import zarr
    from tiatoolbox.models.engine.io_config import IOSegmentorConfig
    from tiatoolbox.models.engine.semantic_segmentor import SemanticSegmentor
    from tiatoolbox.models.models_abc import ModelABC

    bundle = keras_network(model)
    tiles_seen = [0]

    class KerasModel(ModelABC):
        """The bundle's Keras network (a torch module on the torch backend), or constant probabilities."""

        def __init__(self, network):
            super().__init__()
            self.network = network

        def forward(self, batch):
            return self.network(batch)

        @staticmethod
        def postproc(image):
            """Labels from probabilities, as TIAToolbox's own segmentation models give (its "predictions" are
            this function's output cast to the smallest integer type: probabilities themselves become 0)."""
            return np.argmax(image, axis=-1)

        @staticmethod
        def infer_batch(model, batch_data, *, device: str = "cpu"):
            tiles_seen[0] += len(batch_data)
            inner = getattr(model, "module", model)
            if inner.network is None:
                out = np.empty((*batch_data.shape[:3], N_CLASSES), np.float32)
                out[...] = 1.0 / N_CLASSES
                return out
            with torch.inference_mode():
                probabilities = inner(torch.as_tensor(np.asarray(batch_data), dtype=torch.uint8))
            probabilities = probabilities.detach().cpu().numpy()
            if probabilities.shape[-1] == 1:  # a sigmoid head (the nuclei U-Net): background and foreground,
                probabilities = np.concatenate([1.0 - probabilities, probabilities], axis=-1)  # as Bundle does
            return probabilities

    network = KerasModel(bundle.model if bundle is not None else None)
    stride = TILE - OVERLAP
    config = IOSegmentorConfig(
        input_resolutions=[{"units": "baseline", "resolution": 1.0}],
        output_resolutions=[{"units": "baseline", "resolution": 1.0}],
        patch_input_shape=(TILE, TILE), patch_output_shape=(TILE, TILE), stride_shape=(stride, stride),
        save_resolution={"units": "baseline", "resolution": 1.0},
    )
    segmentor = SemanticSegmentor(model=network, batch_size=BATCH, num_workers=os.cpu_count() or 2, verbose=False)
    save_dir = Path(tempfile.mkdtemp()) / "tia"
    start = time.perf_counter()
    output = segmentor.run([slide], patch_mode=False, ioconfig=config, save_dir=save_dir, output_type="zarr",
                           overwrite=True)
    seconds = time.perf_counter() - start
    result = next(iter(output.values())) if isinstance(output, dict) else output  # {slide path: output}
    result = result[0] if isinstance(result, list) else result
    group = zarr.open(str(result), mode="r")
    names = list(group.keys()) if hasattr(group, "keys") else []
    name = next((n for n in ("predictions", "probabilities") if n in names), None)
    if name is None:
        raise SystemExit(f"TIAToolbox's output {result} has {names}, not predictions/probabilities")
    array = np.asarray(group[name])

    labels = array if array.ndim == 2 else array.argmax(-1)
    np.save(labels_out, labels.astype(np.uint8))
    shutil.rmtree(save_dir.parent, ignore_errors=True)
    return {"tiles": tiles_seen[0], "seconds": seconds}


def tree_rss_mb(pid: int) -> float:
    import psutil

    try:
        parent = psutil.Process(pid)
        members = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def in_subprocess(system: str, slide: str, model: str, labels_out: str) -> dict:
    """One run in a fresh process, its peak process-tree RSS sampled every 50 ms."""
    command = [sys.executable, __file__, "--one", system, slide, model, labels_out]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0.0
    while child.poll() is None:
        peak = max(peak, tree_rss_mb(child.pid))
        time.sleep(0.05)
    stdout, stderr = child.communicate()
    if child.returncode != 0:
        return {"error": (stderr.strip().splitlines() or [f"exit {child.returncode}"])[-1][:200]}
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss_mb"] = peak
    return result


def mean_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Mean Dice over the classes either label map has."""
    scores = []
    for label in np.union1d(np.unique(a), np.unique(b)):
        x, y = a == label, b == label
        denominator = x.sum() + y.sum()
        if denominator:
            scores.append(2.0 * (x & y).sum() / denominator)
    return float(np.mean(scores)) if scores else float("nan")


def explain(ours: np.ndarray, theirs: np.ndarray, predicted: np.ndarray, foreground: np.ndarray) -> str:
    """Where the two label maps disagree: glass chunks, tile overlaps, probabilities near 0.5."""
    differ = ours != theirs
    n = max(1, int(differ.sum()))
    stride, margin = TILE - OVERLAP, OVERLAP // 2
    ys, xs = np.nonzero(differ)
    ours_band, theirs_band = _overlap_bands(ys, xs, stride, margin)
    p = foreground[ys, xs].astype(np.float32) / 255
    lines = [f"disagreeing pixels: {differ.sum()} of {differ.size} ({differ.mean():.2%}); "
             f"in glass chunks (ours: background, not predicted) {(~predicted[ys, xs]).sum() / n:.1%} "
             f"(glass is {(~predicted).mean():.1%} of the slide)",
             f"in tissue chunks: {predicted[ys, xs].sum() / n:.1%}; in this engine's blended frames "
             f"{ours_band.mean():.1%}, in TIAToolbox's overlaps {theirs_band.mean():.1%}, in either "
             f"{(ours_band | theirs_band).mean():.1%} (either covers "
             f"{_band_share(ours.shape, stride, margin):.1%} of the slide)",
             f"our foreground probability there: within 0.1 of 0.5 {(np.abs(p - 0.5) <= 0.1).mean():.1%}, within "
             f"0.25 {(np.abs(p - 0.5) <= 0.25).mean():.1%}; median |p - 0.5| {np.median(np.abs(p - 0.5)):.2f}",
             f"foreground pixels: ours {(ours == 1).mean():.2%}, TIAToolbox {(theirs == 1).mean():.2%}; "
             f"ours 1 / theirs 0 {((ours == 1) & (theirs == 0)).sum() / n:.1%} of the disagreements"]
    return "\n".join(f"# {line}" for line in lines)


def _overlap_bands(ys: np.ndarray, xs: np.ndarray, stride: int, margin: int) -> tuple[np.ndarray, np.ndarray]:
    """Whether pixels (ys, xs) lie in this engine's blended frames and in TIAToolbox's overlaps.

    This engine's tile (r, c) starts at r * stride - margin: its overlaps are within margin of a chunk border;
    TIAToolbox's starts at r * stride: its overlaps are the first OVERLAP px of each stride (but the first).
    """
    def near_border(v: np.ndarray) -> np.ndarray:
        return (v % stride < margin) | (v % stride >= stride - margin)

    def in_overlap(v: np.ndarray) -> np.ndarray:
        return (v % stride < OVERLAP) & (v >= stride)

    return near_border(ys) | near_border(xs), in_overlap(ys) | in_overlap(xs)


def _band_share(shape: tuple[int, ...], stride: int, margin: int) -> float:
    ours, theirs = _overlap_bands(*np.ogrid[:shape[0], :shape[1]], stride, margin)
    return float((ours | theirs).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="*", default=[8192], help="generated slide sides (px)")
    parser.add_argument("--models", nargs="*", default=["instant", "nuclei"], help="instant and/or nuclei")
    parser.add_argument("--repeats", type=int, default=2, help="A/B pairs per slide and model")
    parser.add_argument("--forward-tiles", type=int, nargs="*", default=[0],
                        help="this engine's tiles per forward pass, one run of each per pair (0: Bundle's rule)")
    parser.add_argument("--explain", action="store_true", help="where the label maps disagree (U-Net rows)")
    parser.add_argument("--one", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if os.environ.get("KERAS_BACKEND") != "torch":
        raise SystemExit("run with KERAS_BACKEND=torch: both systems must run the same torch network")
    if args.one:
        system, slide, model, labels_out = args.one
        if system.startswith("ours"):
            result = run_ours(slide, model, labels_out, int(system.partition(":")[2] or 0))
        else:
            result = run_tiatoolbox(slide, model, labels_out)
        import resource

        result["self_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps(result))
        return

    import tiatoolbox

    print(f"# TIAToolbox {tiatoolbox.__version__}, tile {TILE}, overlap {OVERLAP}, batch {BATCH}, "
          f"{os.cpu_count()} cores, KERAS_BACKEND=torch; runs alternate A/B/A/B")
    print("| slide | model | system | tiles | seconds | tiles/s | ours / TIAToolbox | peak RSS (MB) | model proc (MB) "
          "| Dice (both predicted) | Dice (all px) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    variants = [f"ours:{n}" if n else "ours" for n in args.forward_tiles]
    work = Path(tempfile.mkdtemp(prefix="vs_tia_"))
    try:
        for size in args.sizes:
            slide = str(build_pyramid(size, CACHE / f"mosaic_{size}.tif"))
            for model in args.models:
                runs: dict[str, list[dict]] = {system: [] for system in (*variants, "tiatoolbox")}
                for repeat in range(args.repeats):
                    for system in runs:
                        labels = str(work / f"{system.replace(':', '_')}_{repeat}.npy")
                        result = in_subprocess(system, slide, model, labels)
                        result["labels"] = labels
                        runs[system].append(result)
                errors = [r["error"] for rs in runs.values() for r in rs if "error" in r]
                if errors:
                    print(f"| {size} | {model} | error | {errors[0]} | | | | | | | |", flush=True)
                    continue
                first = runs[variants[-1]][0]["labels"]
                ours, theirs = np.load(first), np.load(runs["tiatoolbox"][0]["labels"])
                h, w = min(ours.shape[0], theirs.shape[0]), min(ours.shape[1], theirs.shape[1])
                ours, theirs = ours[:h, :w], theirs[:h, :w]
                predicted = np.load(first + ".predicted.npy")[:h, :w]
                # constant probabilities give label 0 everywhere on both sides: nothing to compare
                dice_all = mean_dice(ours, theirs) if model != "instant" else 1.0
                dice = mean_dice(ours[predicted], theirs[predicted]) if model != "instant" else 1.0
                rates = {s: [r["tiles"] / r["seconds"] for r in rs] for s, rs in runs.items()}
                for system, results in runs.items():
                    best = results[int(np.argmax(rates[system]))]
                    spread = "-".join(f"{r:.1f}" for r in sorted(rates[system]))
                    ratio = np.median(rates[system if system != "tiatoolbox" else variants[-1]]) / np.median(
                        rates["tiatoolbox"])
                    name = f"ours (forward {system[5:]})" if system.startswith("ours:") else system
                    print(f"| {size} | {model} | {name} | {best['tiles']} | {best['seconds']:.1f} | {spread} | "
                          f"{ratio:.2f} | {max(r['peak_rss_mb'] for r in results):.0f} | "
                          f"{max(r['self_rss_mb'] for r in results):.0f} | {dice:.3f} | {dice_all:.3f} |", flush=True)
                if args.explain and model != "instant":
                    print(explain(ours, theirs, predicted, np.load(first + ".foreground.npy")[:h, :w]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
