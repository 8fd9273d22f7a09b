"""NIfTI volumes (.nii, .nii.gz) through nibabel, in the canonical (z, y, x) = (S, P, L) layout.

Uncompressed .nii files stay lazy: a dask array over nibabel's array proxy reads
only the slabs napari shows.  A gzip stream cannot seek, so every lazy chunk of
a .nii.gz would decompress the file from its start; those are read once at
open instead, which also reports a truncated file at once, naming it.
"""

from __future__ import annotations

import os
import re
import zlib
from pathlib import Path
from typing import Any

import dask.array as da
import nibabel as nib
import numpy as np

from ..errors import ReadError, WriteError
from . import LayerData
from .orientation import RAS_TO_LPS, Reorientation

EXTENSIONS = (".nii", ".nii.gz")
#: File names that mark a segmentation whatever its values.
LABEL_NAME = re.compile(r"(seg|mask|label)", re.IGNORECASE)
#: An integer volume with at most this many distinct values is a label image.
MAX_LABELS = 32
#: Above this many voxels the distinct values are not counted (names decide).
MAX_VOXELS_TO_INSPECT = 64 * 1024**2
#: Deflate cannot compress better than about 1032:1, so a .nii.gz of n bytes holds at most this many times n.
MAX_GZIP_RATIO = 1032
#: Refuse a volume whose voxels would take more than this fraction of the memory available now.
MAX_MEMORY_FRACTION = 0.5


def claims(path: str) -> bool:
    return path.lower().endswith(EXTENSIONS)


def load(path: str | os.PathLike) -> nib.Nifti1Image | nib.Nifti2Image:
    """nibabel's image, or a ReadError naming the file and what is wrong with it."""
    path = os.fspath(path)
    try:
        image = nib.load(path)
    except FileNotFoundError:
        raise ReadError(path, "no such file") from None
    except (nib.filebasedimages.ImageFileError, nib.spatialimages.HeaderDataError) as err:
        raise ReadError(path, f"not a valid NIfTI file: {err}") from None
    except (EOFError, OSError, zlib.error, ValueError) as err:
        raise ReadError(path, f"cannot read the NIfTI header (corrupt or not gzip/NIfTI): {err}") from None
    if not isinstance(image, (nib.Nifti1Image, nib.Nifti2Image)):
        raise ReadError(path, f"is a {type(image).__name__}, not a NIfTI image")
    if len(image.shape) < 3:
        raise ReadError(path, f"has {len(image.shape)} dimensions; a volume needs at least 3")
    if len(image.shape) > 4:
        raise ReadError(path, f"has {len(image.shape)} dimensions; only 3D and 4D volumes are supported")
    check_header(image, path)
    return image


def available_memory() -> int:
    """Bytes of memory this machine can give now (MemAvailable, which counts reclaimable cache)."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**63 - 1  # unknown: the other checks still hold


def _raw_header(image, path: str):
    """The header exactly as the file has it (nibabel's ``image.header`` is already repaired)."""
    opener = nib.openers.ImageOpener(path)
    try:
        with opener as fh:
            return type(image.header).from_fileobj(fh, check=False)
    except (OSError, EOFError, ValueError, zlib.error):
        return image.header


def check_header(image, path: str) -> list[str]:
    """Refuse a header whose geometry or size cannot be right, before any voxel is read.

    Returns notes on what was repaired (nibabel turns a zero pixdim into 1 mm: the user must know).
    """
    header = image.header
    notes = []
    # nibabel repairs pixdim in the header it hands back (0 becomes 1, with only a logged warning), and resets
    # vox_offset there: the file's own values come from its raw header and the array proxy
    pixdim = np.asarray(_raw_header(image, path)["pixdim"], dtype=float)[1:4]
    if not np.isfinite(pixdim).all():
        raise ReadError(path, f"the header's voxel size (pixdim) {pixdim.tolist()} is not finite")
    if (pixdim == 0).any():
        axes = ", ".join("ijk"[i] for i in np.flatnonzero(pixdim == 0))
        notes.append(f"{Path(path).name}: the header gives voxel size 0 along {axes}: "
                     "the size there is unknown and shown as 1 mm")
    try:
        affine = np.asarray(image.affine, dtype=float)
    except (ValueError, np.linalg.LinAlgError) as err:
        raise ReadError(path, f"the header's orientation (qform/sform) is unusable: {err}") from None
    if not np.isfinite(affine).all():
        raise ReadError(path, "the header's orientation (sform/qform) holds NaN or infinite values")
    if abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise ReadError(path, "the header's orientation matrix is singular (an axis of zero length or two "
                              "axes pointing the same way): the volume cannot be placed in space")
    offset = float(getattr(image.dataobj, "offset", header.get_data_offset()))
    size = os.path.getsize(path)
    compressed = path.lower().endswith(".nii.gz")
    capacity = size * MAX_GZIP_RATIO if compressed else size
    if not np.isfinite(offset) or offset < 0 or offset > capacity:
        where = f"the {capacity:.3g} bytes a {size}-byte gzip file can hold" if compressed else f"a {size}-byte file"
        raise ReadError(path, f"the header puts the voxel data at byte {offset:.0f} (vox_offset), past the end of "
                              f"{where}")
    voxels = int(np.prod([int(n) for n in image.shape], dtype=object))
    itemsize = image.get_data_dtype().itemsize
    declared = voxels * itemsize
    shape_text = " x ".join(str(int(n)) for n in image.shape)
    if offset + declared > capacity:
        if not compressed:
            raise ReadError(path, f"is truncated: the header describes {offset + declared:.0f} bytes "
                                  f"({shape_text} voxels) but the file has {size}")
        raise ReadError(path, f"the header declares {shape_text} voxels ({declared / 1e9:.3g} GB), more than a "
                              f"{size / 1e3:.0f} kB gzip file can hold: the header is corrupt")
    if not compressed:
        return notes  # read lazily: only the slabs shown are ever in memory
    slope, inter = header.get_slope_inter()
    in_memory = voxels * (8 if (slope not in (None, 1) or inter not in (None, 0)) else itemsize)
    available = available_memory()
    if in_memory > MAX_MEMORY_FRACTION * available:
        raise ReadError(path, f"the volume ({shape_text} voxels, {in_memory / 1e9:.3g} GB in memory) would not fit "
                              f"in the {available / 1e9:.3g} GB of memory available")
    return notes


def voxel_data(image, path: str):
    """The voxel array (i, j, k[, t]): lazy dask for .nii, numpy for .nii.gz."""
    proxy = image.dataobj
    if path.lower().endswith(".nii.gz"):
        try:
            return np.asanyarray(proxy)
        except (EOFError, OSError, zlib.error, ValueError) as err:
            raise ReadError(path, f"the voxel data is truncated or corrupt: {err}") from None
    expected = int(getattr(proxy, "offset", image.header.get_data_offset())) + int(
        np.prod(image.shape) * image.get_data_dtype().itemsize
    )
    actual = os.path.getsize(path)
    if actual < expected:
        raise ReadError(
            path, f"is truncated: the header describes {expected} bytes but the file has {actual}"
        )
    sample = np.asanyarray(proxy[(0,) * len(image.shape)])  # dtype after scl_slope/inter
    slab = max(1, (16 * 1024**2) // max(1, int(np.prod(image.shape[:2])) * sample.dtype.itemsize))
    chunks = image.shape[:2] + (min(slab, image.shape[2]),) + tuple(1 for _ in image.shape[3:])
    return da.from_array(proxy, chunks=chunks, asarray=True, meta=np.empty((0,) * len(image.shape), sample.dtype))


def is_label_image(path: str, data) -> bool:
    """Integer data named like a segmentation, or with few distinct values."""
    if not np.issubdtype(data.dtype, np.integer):
        return False
    if LABEL_NAME.search(Path(path).name):
        return True
    if data.size > MAX_VOXELS_TO_INSPECT:
        return False
    return len(np.unique(np.asarray(data))) <= MAX_LABELS


def open_volume(path: str | os.PathLike) -> tuple[Any, dict[str, Any], str]:
    """The canonical (t?, z, y, x) array, napari kwargs and 'image' or 'labels'."""
    path = os.fspath(path)
    image = load(path)
    notes = check_header(image, path)
    data_ijk = voxel_data(image, path)
    reorientation = Reorientation.from_affine(RAS_TO_LPS @ image.affine, image.shape)
    data = reorientation.to_canonical(data_ijk)
    layer_type = "labels" if is_label_image(path, data) else "image"
    extra = data.ndim - 3
    scale = (1.0,) * extra + reorientation.spacing_zyx
    translate = (0.0,) * extra + reorientation.origin_zyx
    metadata = {
        "format": "NIfTI",
        "path": path,
        "orientation": "(z, y, x) = (Superior, Posterior, Left); reoriented from "
        + "".join(nib.aff2axcodes(image.affine)),
        "original_axcodes": "".join(nib.aff2axcodes(image.affine)),
        "original_shape": tuple(int(s) for s in image.shape),
        "original_affine": image.affine.tolist(),
        "zooms": tuple(float(z) for z in image.header.get_zooms()),
        "scale_units": "millimetre",
        "notes": notes,
    }
    kwargs: dict[str, Any] = {
        "name": _stem(path),
        "scale": scale,
        "translate": translate,
        "units": ("mm",) * 3 if extra == 0 else (("pixel",) * extra + ("mm",) * 3),
        "metadata": metadata,
    }
    if layer_type == "labels":
        available = available_memory()
        if data.nbytes > MAX_MEMORY_FRACTION * available:  # an uncompressed .nii is lazy until here
            raise ReadError(path, f"the label volume ({' x '.join(map(str, image.shape))} voxels, "
                                  f"{data.nbytes / 1e9:.3g} GB) would not fit in the {available / 1e9:.3g} GB of "
                                  "memory available (napari paints labels in memory)")
        data = np.asarray(data)  # napari paints labels in memory; label volumes are small
    else:
        kwargs["contrast_limits"] = _robust_limits(data)
    return data, kwargs, layer_type


def read(path: str) -> list[LayerData]:
    return [open_volume(path)]


def write_labels(path: str | os.PathLike, labels: np.ndarray, metadata: dict[str, Any]) -> str:
    """Save a canonical (z, y, x) label volume as NIfTI in the geometry of its source file."""
    path = os.fspath(path)
    affine = np.asarray(metadata["original_affine"], dtype=float)
    shape = tuple(metadata["original_shape"])
    reorientation = Reorientation.from_affine(RAS_TO_LPS @ affine, shape)
    original = np.ascontiguousarray(reorientation.to_original(np.asarray(labels)))
    if original.shape[:3] != shape[:3]:
        raise WriteError(path, f"labels of shape {original.shape} do not fit the volume {shape}")
    dtype = np.uint8 if original.max(initial=0) < 256 and original.min(initial=0) >= 0 else np.int32
    image = nib.Nifti1Image(original.astype(dtype), affine)
    image.header.set_zooms(tuple(metadata["zooms"])[: original.ndim])
    image.set_sform(affine, code=1)
    image.set_qform(affine, code=1)
    nib.save(image, path)
    return path


def _stem(path: str) -> str:
    name = Path(path).name
    return re.sub(r"\.nii(\.gz)?$", "", name, flags=re.IGNORECASE)


def _robust_limits(data) -> list[float]:
    """0.5-99.5 percentile limits from a strided sample, so napari reads no whole volume."""
    step = max(1, round((data.size / 2_000_000) ** (1 / data.ndim)))
    sample = np.asarray(data[(slice(None, None, step),) * data.ndim], dtype=np.float64)
    sample = sample[np.isfinite(sample)]
    if sample.size == 0:
        return [0.0, 1.0]
    low, high = np.percentile(sample, [0.5, 99.5])
    if high <= low:
        low, high = float(sample.min()), float(sample.max()) + 1.0
    return [float(low), float(high)]
