"""DICOM through pydicom: mammograms, MRI series folders, multi-frame files and SEG objects.

* A single 2D image (a mammogram, modality MG) gets the display pipeline the
  standard defines: Modality LUT, then VOI LUT or window, MONOCHROME1 inverted
  so that dense tissue is bright.  Compressed transfer syntaxes (RLE, JPEG,
  JPEG 2000) are decoded by the installed pydicom plugins (pylibjpeg...).
* A folder is grouped by SeriesInstanceUID; each series' slices are sorted by
  ImagePositionPatient projected on the slice normal, and the z spacing comes
  from those positions, never from SliceThickness.  Volumes are put in the
  canonical (z, y, x) = (S, P, L) layout of ``orientation.py``.
* A DICOM SEG becomes a Labels layer on the geometry of its referenced series
  when that series is opened with it, else on the geometry of its own frames.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from ..classes import OTHER_COLOURS
from ..errors import ReadError
from . import LayerData
from .orientation import Reorientation

EXTENSIONS = (".dcm", ".dicom", ".ima")
SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
#: Slices whose spacing differs from the median by more than this fraction
#: mean a gap or a mixed series; the volume is still built but a note is kept.
SPACING_TOLERANCE = 0.05


def claims(path: str) -> bool:
    """.dcm-like files, and folders that hold at least one DICOM file."""
    if os.path.isdir(path):
        return any(_has_dicom_preamble(f) for f in _iter_files(path, limit=64))
    return path.lower().endswith(EXTENSIONS) or (
        os.path.isfile(path) and "." not in Path(path).name and _has_dicom_preamble(path)
    )


def _iter_files(folder: str, limit: int | None = None):
    count = 0
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.startswith("."):
                continue
            yield os.path.join(root, name)
            count += 1
            if limit is not None and count >= limit:
                return


def _has_dicom_preamble(path: str) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def read_header(path: str, pixels: bool = False) -> pydicom.Dataset:
    """A dataset, or a ReadError naming the file when it is not DICOM or is cut short."""
    import warnings

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            ds = pydicom.dcmread(path, stop_before_pixels=not pixels)
    except InvalidDicomError as err:
        raise ReadError(path, f"not a DICOM file: {err}") from None
    except (OSError, EOFError, ValueError, KeyError, TypeError) as err:
        raise ReadError(path, f"corrupt DICOM file: {type(err).__name__}: {err}") from None
    # pydicom reads a file cut short as if it ended there, with only a warning: the pixel data then
    # looks absent, and the user would be told the file has none instead of that it is truncated
    if any("End of file reached" in str(w.message) for w in caught):
        raise ReadError(path, f"is truncated: the file ({os.path.getsize(path)} bytes) ends in the middle of its "
                              "data (an interrupted copy or download?)")
    return ds


def _check_native_length(ds: pydicom.Dataset, path: str) -> None:
    """Uncompressed pixel data must be as long as Rows x Columns x samples x bytes x frames say.

    pydicom drops the excess of a longer one as "padding": a header with too few Rows would show part of the
    image as if it were all of it.
    """
    syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
    if syntax == pydicom.uid.RLELossless and "PixelData" in ds:
        _check_rle_length(ds, path)
        return
    if syntax is None or getattr(syntax, "is_compressed", True) or "PixelData" not in ds:
        return
    try:
        expected = (int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
                    * int(ds.get("NumberOfFrames", 1) or 1) * int(ds.BitsAllocated)) // 8
    except (AttributeError, TypeError, ValueError):
        return  # pydicom's own decoder says what is missing
    actual = len(ds.PixelData)
    if actual > expected + 1:  # one byte of padding makes an odd length even
        raise ReadError(path, f"holds {actual} bytes of pixel data but its header ({ds.Rows} rows x {ds.Columns} "
                              f"columns) describes {expected}: Rows or Columns is wrong")


def _check_rle_length(ds: pydicom.Dataset, path: str) -> None:
    """RLE's first segment decodes to exactly Rows x Columns bytes (plus one of padding): more means the
    header's Rows or Columns is too small, and the decoders would silently drop the rest (or panic)."""
    import struct

    try:
        from pydicom.encaps import generate_frames
        from rle.utils import decode_segment
    except ImportError:
        return
    try:
        frame = next(generate_frames(ds.PixelData, number_of_frames=int(ds.get("NumberOfFrames", 1) or 1)))
        count = struct.unpack("<I", frame[:4])[0]
        offsets = list(struct.unpack("<15I", frame[4:64]))[:count] + [len(frame)]
        decoded = len(decode_segment(bytes(frame[offsets[0]:offsets[1]])))  # ~50 ms for a 12-megapixel mammogram
        expected = int(ds.Rows) * int(ds.Columns)
    except Exception:  # noqa: BLE001 - a malformed frame: the real decoder then says what is wrong
        return
    if decoded > expected + 1:
        raise ReadError(path, f"its compressed pixel data holds {decoded} pixels per frame but its header "
                              f"({ds.Rows} rows x {ds.Columns} columns) describes {expected}: Rows or Columns is "
                              "wrong")


def pixel_array(ds: pydicom.Dataset, path: str) -> np.ndarray:
    """Decoded pixels, or a ReadError that says why they cannot be had."""
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise ReadError(path, "the DICOM has no pixel data (no PixelData element): nothing to display")
    _check_native_length(ds, path)
    try:
        return ds.pixel_array
    except (NotImplementedError, RuntimeError) as err:
        syntax = ds.file_meta.get("TransferSyntaxUID", "unknown")
        name = getattr(syntax, "name", syntax)
        raise ReadError(
            path,
            f"cannot decode pixel data in transfer syntax {name}: {err}. "
            "Install the decoders: pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg pylibjpeg-rle",
        ) from None
    except (ValueError, AttributeError, KeyError, EOFError, OSError) as err:
        raise ReadError(path, f"the pixel data is corrupt or truncated: {err}") from None
    except BaseException as err:
        # the Rust decoders (pylibjpeg-rle) panic, a BaseException, when Rows/Columns disagree with the data
        if type(err).__name__ != "PanicException":
            raise
        raise ReadError(path, f"the compressed pixel data does not match the header's {ds.get('Rows')} rows x "
                              f"{ds.get('Columns')} columns (the decoder failed: {err})") from None


# --------------------------------------------------------------------- 2D images


def display_pipeline(ds: pydicom.Dataset, stored: np.ndarray) -> tuple[np.ndarray, tuple[float, float], list[str]]:
    """Modality LUT, VOI LUT/window, MONOCHROME1 inversion.

    Returns float32 display values, the range those values can take (the
    contrast limits) and the steps applied.  The range is found by pushing the
    stored-value extremes through the same monotonic LUTs, so inversion and
    limits do not depend on what this particular image happens to contain.
    """
    bits = int(ds.get("BitsStored", 16))
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    extremes = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1] if signed else [0, 2**bits - 1])
    extremes = extremes.astype(stored.dtype if np.issubdtype(stored.dtype, np.integer) else np.int64)
    steps = []
    values = apply_modality_lut(stored, ds)
    ends = apply_modality_lut(extremes, ds)
    if "ModalityLUTSequence" in ds or "RescaleSlope" in ds or "RescaleIntercept" in ds:
        steps.append("modality LUT")
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        values = apply_voi_lut(values, ds, index=0)
        ends = apply_voi_lut(ends, ds, index=0)
        steps.append("VOI LUT" if "VOILUTSequence" in ds else "window")
    values = values.astype(np.float32, copy=False)
    low, high = float(np.min(ends)), float(np.max(ends))
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        values = np.float32(low + high) - values
        steps.append("MONOCHROME1 inverted")
    if not any(s in steps for s in ("VOI LUT", "window")):
        # No window in the file: show what the detector recorded, not the full bit depth.
        sample = values[:: max(1, values.shape[0] // 512), :: max(1, values.shape[1] // 512)]
        low, high = (float(v) for v in np.percentile(sample, [0.5, 99.5]))
        if high <= low:
            high = low + 1.0
    return values, (low, high), steps


def _mammogram_view(ds: pydicom.Dataset) -> tuple[str | None, str]:
    view = ds.get("ViewPosition") or None
    if view:
        return str(view), "ViewPosition"
    # CBIS-DDSM and other de-identified sets carry the view only in free text.
    for keyword in ("PatientID", "SeriesDescription", "StudyDescription"):
        text = str(ds.get(keyword, "")).upper().replace("-", "_").split("_")
        for candidate in ("MLO", "CC", "ML", "LM", "XCCL"):
            if candidate in text:
                return candidate, keyword
    return None, "absent"


def _pixel_spacing(ds: pydicom.Dataset, path: str = "") -> tuple[tuple[float, float] | None, str]:
    """(row, column) spacing in mm and the element it came from; a ReadError for one that is not a size."""
    found: tuple[object, str] | None = None
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value:
            found = (value, keyword)
            break
    if found is None:
        shared = _functional_group(ds, "PixelMeasuresSequence")
        if shared is not None and shared.get("PixelSpacing"):
            found = (shared.PixelSpacing, "PixelMeasuresSequence")
    if found is None:
        return None, "absent"
    value, source = found
    try:
        spacing = (float(value[0]), float(value[1]))  # type: ignore[index]
    except (TypeError, ValueError, IndexError):
        raise ReadError(path, f"{source} {value!r} is not two numbers (row and column spacing in mm)") from None
    # a negative, zero or NaN spacing would give negative napari scales and wrong distances and areas
    if not all(np.isfinite(v) and v > 0 for v in spacing):
        raise ReadError(path, f"{source} {list(spacing)} is not a positive size in mm")
    return spacing, source


def read_2d(path: str, ds: pydicom.Dataset) -> LayerData:
    stored = pixel_array(ds, path)
    if stored.ndim == 3 and stored.shape[-1] == 3 and ds.get("SamplesPerPixel", 1) == 3:
        rgb = True
        values, limits, steps = stored, (0.0, 255.0), ["RGB"]
    else:
        rgb = False
        values, limits, steps = display_pipeline(ds, stored)
    spacing, spacing_source = _pixel_spacing(ds, path)
    view, view_source = _mammogram_view(ds)
    metadata = {
        "format": "DICOM",
        "path": path,
        "modality": ds.get("Modality"),
        "laterality": ds.get("ImageLaterality") or ds.get("Laterality") or None,
        "view": view,
        "view_source": view_source,
        "photometric": ds.get("PhotometricInterpretation"),
        "bits_stored": ds.get("BitsStored"),
        "transfer_syntax": str(getattr(ds.file_meta.get("TransferSyntaxUID"), "name", "")),
        "display_steps": steps,
        "pixel_spacing_mm": spacing,
        "pixel_spacing_source": spacing_source,
        "scale_units": "millimetre" if spacing else "pixel",
        "scale_note": None if spacing else "no PixelSpacing or ImagerPixelSpacing; scale set to 1 pixel",
    }
    kwargs = {
        "name": Path(path).name,
        "scale": spacing if spacing else (1.0, 1.0),
        "units": ("mm", "mm") if spacing else ("pixel", "pixel"),
        "contrast_limits": list(limits),
        "rgb": rgb,
        "metadata": metadata,
    }
    if not rgb:
        kwargs["colormap"] = "gray"
    return values, kwargs, "image"


# ------------------------------------------------------------------------ volumes


@dataclass
class Plane:
    """One 2D frame of a volume with where it lies (LPS mm)."""

    position: np.ndarray
    frame: Any  # a callable giving the 2D pixels, so headers are sorted before decoding


def _functional_group(ds: pydicom.Dataset, sequence: str, frame: int | None = None):
    groups = []
    if frame is not None and "PerFrameFunctionalGroupsSequence" in ds:
        groups.append(ds.PerFrameFunctionalGroupsSequence[frame])
    if "SharedFunctionalGroupsSequence" in ds:
        groups.append(ds.SharedFunctionalGroupsSequence[0])
    for group in groups:
        items = group.get(sequence)
        if items:
            return items[0]
    return None


def _orientation(ds: pydicom.Dataset, path: str) -> np.ndarray:
    iop = ds.get("ImageOrientationPatient")
    if iop is None:
        item = _functional_group(ds, "PlaneOrientationSequence", 0)
        iop = item.get("ImageOrientationPatient") if item is not None else None
    if iop is None:
        raise ReadError(path, "has no ImageOrientationPatient: cannot place its slices in a volume")
    try:
        orientation = np.asarray([float(v) for v in iop], dtype=float).reshape(2, 3)
    except (TypeError, ValueError):
        raise ReadError(path, f"ImageOrientationPatient {iop!r} is not six numbers") from None
    norms = np.linalg.norm(orientation, axis=1) if np.isfinite(orientation).all() else np.zeros(2)
    if not np.allclose(norms, 1.0, atol=0.01) or abs(float(orientation[0] @ orientation[1])) > 0.01:
        raise ReadError(path, f"ImageOrientationPatient {orientation.ravel().tolist()} is not two perpendicular "
                              "unit vectors: the slices cannot be placed in space")
    return orientation


def assemble_volume(planes: list[Plane], orientation: np.ndarray, spacing_rc: tuple[float, float], path: str):
    """Sort planes along the slice normal; return the (s, r, c) stack, its LPS affine and notes."""
    normal = np.cross(orientation[0], orientation[1])
    distances = np.array([float(p.position @ normal) for p in planes])
    order = np.argsort(distances, kind="stable")
    distances = distances[order]
    notes = []
    gaps = np.diff(distances)
    if len(planes) > 1:
        if np.any(np.isclose(gaps, 0.0, atol=1e-4)):
            raise ReadError(path, "two slices share one position: the folder mixes series or repeats a slice")
        dz = float(np.median(gaps))
        if np.any(np.abs(gaps - dz) > SPACING_TOLERANCE * dz):
            notes.append(f"uneven slice spacing {gaps.min():.4g}-{gaps.max():.4g} mm; median {dz:.4g} used")
    else:
        dz = 1.0
        notes.append("single slice: z spacing unknown, set to 1 mm")
    stack = np.stack([np.asarray(planes[i].frame()) for i in order])
    first = planes[order[0]].position
    # DICOM: columns advance along orientation[0], rows along orientation[1].
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = orientation[0] * spacing_rc[1]  # i = column
    affine_lps[:3, 1] = orientation[1] * spacing_rc[0]  # j = row
    affine_lps[:3, 2] = normal * dz  # k = slice
    affine_lps[:3, 3] = first
    return stack, affine_lps, notes, distances


def volume_layer(stack_src: np.ndarray, affine_lps: np.ndarray, name: str, layer_type: str, metadata: dict, **extra):
    """A (s, r, c) stack in canonical (z, y, x) with scale and translate in mm."""
    data_ijk = np.transpose(stack_src, (2, 1, 0))
    reorientation = Reorientation.from_affine(affine_lps, data_ijk.shape)
    data = np.ascontiguousarray(reorientation.to_canonical(data_ijk))
    metadata = dict(metadata, affine_lps=affine_lps.tolist(), scale_units="millimetre",
                    orientation="(z, y, x) = (Superior, Posterior, Left)")
    kwargs = {
        "name": name,
        "scale": reorientation.spacing_zyx,
        "translate": reorientation.origin_zyx,
        "units": ("mm", "mm", "mm"),
        "metadata": metadata,
        **extra,
    }
    return data, kwargs, layer_type


def _series_planes(items: list[tuple[str, pydicom.Dataset]]) -> list[Plane]:
    planes = []
    for path, header in items:
        position = header.get("ImagePositionPatient")
        if position is None:
            raise ReadError(path, "has no ImagePositionPatient: cannot place it in its series")
        planes.append(Plane(_position(position, path), _frame_loader(path)))
    return planes


def _position(value, path: str, where: str = "ImagePositionPatient") -> np.ndarray:
    """A slice's position (LPS mm): three finite numbers, or slices would be sorted and spaced by NaN."""
    try:
        position = np.asarray([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        raise ReadError(path, f"{where} {value!r} is not three numbers") from None
    if position.shape != (3,) or not np.isfinite(position).all():
        raise ReadError(path, f"{where} {position.tolist()} is not three finite numbers (mm)")
    return position


def _frame_loader(path: str):
    def load() -> np.ndarray:
        ds = read_header(path, pixels=True)
        return apply_modality_lut(pixel_array(ds, path), ds).astype(np.float32, copy=False)

    return load


def read_series(items: list[tuple[str, pydicom.Dataset]]) -> tuple[LayerData, dict]:
    """Slices of one series (several files) -> one 3D image layer."""
    first_path, first = items[0]
    shapes = {(int(h.Rows), int(h.Columns)) for _, h in items}
    if len(shapes) > 1:
        raise ReadError(first_path, f"series {first.SeriesInstanceUID} mixes image sizes {sorted(shapes)}")
    spacing, _ = _pixel_spacing(first, first_path)
    if spacing is None:
        raise ReadError(first_path, "has no PixelSpacing: cannot build a volume in millimetres")
    orientation = _orientation(first, first_path)
    planes = _series_planes(items)
    stack, affine, notes, distances = assemble_volume(planes, orientation, spacing, first_path)
    metadata = {
        "format": "DICOM series",
        "path": os.path.dirname(first_path),
        "modality": first.get("Modality"),
        "series_uid": str(first.SeriesInstanceUID),
        "series_description": str(first.get("SeriesDescription", "")),
        "slices": len(items),
        "slice_positions_mm": [round(float(d), 4) for d in distances],
        "notes": notes,
    }
    name = str(first.get("SeriesDescription") or f"series {first.get('SeriesNumber', '')}").strip()
    layer = volume_layer(stack.astype(np.float32), affine, name, "image", metadata, colormap="gray")
    layer[1]["contrast_limits"] = _limits(layer[0])
    geometry = {"affine": affine, "distances": distances, "shape": stack.shape, "orientation": orientation}
    return layer, geometry


def read_multiframe(path: str, ds: pydicom.Dataset) -> LayerData:
    frames = pixel_array(ds, path)
    spacing, _ = _pixel_spacing(ds, path)
    orientation = _orientation(ds, path)
    planes = []
    for index in range(int(ds.NumberOfFrames)):
        item = _functional_group(ds, "PlanePositionSequence", index)
        if item is None:
            raise ReadError(path, f"frame {index + 1} has no PlanePositionSequence")
        planes.append(Plane(_position(item.ImagePositionPatient, path, f"frame {index + 1} ImagePositionPatient"),
                            lambda i=index: frames[i]))
    stack, affine, notes, _ = assemble_volume(planes, orientation, spacing or (1.0, 1.0), path)
    metadata = {"format": "DICOM multi-frame", "path": path, "modality": ds.get("Modality"), "notes": notes}
    layer = volume_layer(apply_modality_lut(stack, ds).astype(np.float32), affine, Path(path).name,
                         "image", metadata, colormap="gray")
    layer[1]["contrast_limits"] = _limits(layer[0])
    return layer


def read_seg(path: str, ds: pydicom.Dataset, geometry: dict | None) -> LayerData:
    """A DICOM SEG as one Labels volume; label value = segment number.

    Segments may overlap (a lesion inside the prostate); segments are painted
    largest first, so that smaller structures stay visible on top.
    """
    frames = pixel_array(ds, path)
    if frames.ndim == 2:
        frames = frames[None]
    orientation = _orientation(ds, path)
    spacing, _ = _pixel_spacing(ds, path)
    positions, segments = [], []
    for index in range(frames.shape[0]):
        position = _functional_group(ds, "PlanePositionSequence", index)
        segment = _functional_group(ds, "SegmentIdentificationSequence", index)
        if position is None or segment is None:
            raise ReadError(path, f"SEG frame {index + 1} lacks its position or segment number")
        positions.append(_position(position.ImagePositionPatient, path, f"SEG frame {index + 1} ImagePositionPatient"))
        segments.append(int(segment.ReferencedSegmentNumber))
    normal = np.cross(orientation[0], orientation[1])
    frame_distances = np.array([p @ normal for p in positions])
    if geometry is not None:
        affine, distances, shape = geometry["affine"], geometry["distances"], geometry["shape"]
        if tuple(frames.shape[1:]) != tuple(shape[1:]):
            raise ReadError(path, f"SEG frames {frames.shape[1:]} do not match the series {shape[1:]}")
        reference = "referenced series"
    else:
        unique = np.unique(np.round(frame_distances, 3))
        planes = [Plane(positions[int(np.argmin(np.abs(frame_distances - d)))], lambda: None) for d in unique]
        first = min(planes, key=lambda p: p.position @ normal).position
        dz = float(np.median(np.diff(unique))) if len(unique) > 1 else 1.0
        affine = np.eye(4)
        affine[:3, 0] = orientation[0] * (spacing or (1, 1))[1]
        affine[:3, 1] = orientation[1] * (spacing or (1, 1))[0]
        affine[:3, 2] = normal * dz
        affine[:3, 3] = first
        distances, shape = unique, (len(unique),) + frames.shape[1:]
        reference = "own frame positions"
    slice_step = float(np.median(np.diff(distances))) if len(distances) > 1 else 1.0
    masks: dict[int, np.ndarray] = defaultdict(lambda: np.zeros(shape, bool))
    for index, (distance, segment) in enumerate(zip(frame_distances, segments)):
        k = int(np.argmin(np.abs(distances - distance)))
        if abs(distances[k] - distance) > 0.5 * abs(slice_step):
            raise ReadError(path, f"SEG frame {index + 1} lies between slices of the referenced series")
        masks[segment][k] |= frames[index].astype(bool)
    labels = np.zeros(shape, np.uint8)
    for segment in sorted(masks, key=lambda s: -int(masks[s].sum())):
        labels[masks[segment]] = segment
    names = {int(s.SegmentNumber): str(s.get("SegmentLabel", s.SegmentNumber)) for s in ds.get("SegmentSequence", [])}
    metadata = {
        "format": "DICOM SEG",
        "path": path,
        "segments": names,
        "geometry_from": reference,
        "overlap_rule": "segments painted largest first; smaller segments stay on top",
    }
    return volume_layer(labels, affine, f"{Path(path).stem} (SEG)", "labels", metadata,
                        **segment_display(ds, sorted(set(names) | set(masks))))


def segment_display(ds: pydicom.Dataset, segments: list[int]) -> dict[str, Any]:
    """Labels ``features`` (segment names, so napari's status bar names the segment under the cursor) and a
    colormap of the SEG's recommended display colours; a segment without one gets a colour outside the
    Gleason table (classes.OTHER_COLOURS), never a pathology class's."""
    items = {int(s.SegmentNumber): s for s in ds.get("SegmentSequence", [])}
    spare = iter(OTHER_COLOURS * (1 + len(segments) // len(OTHER_COLOURS)))
    transparent = np.zeros(4)
    colormap: dict[int | None, np.ndarray] = {None: transparent, 0: transparent}
    classes = ["background"]
    for segment in segments:
        item = items.get(segment)
        classes.append(str(item.get("SegmentLabel", segment)) if item is not None else f"segment {segment}")
        lab = item.get("RecommendedDisplayCIELabValue") if item is not None else None
        rgb = dicom_lab_to_rgb(lab) if lab is not None and len(lab) == 3 else np.asarray(next(spare)) / 255.0
        colormap[segment] = np.array([*rgb, 1.0])
    return {"features": {"index": [0, *segments], "class": classes}, "colormap": colormap}


def dicom_lab_to_rgb(lab) -> np.ndarray:
    """A DICOM CIELab triple (PS3.3 C.10.7.1.1: L* and a*, b* scaled to 0..65535, D65 white) as sRGB in 0..1."""
    lightness = float(lab[0]) * 100.0 / 65535.0
    a, b = (float(v) * 255.0 / 65535.0 - 128.0 for v in lab[1:3])
    fy = (lightness + 16.0) / 116.0
    f = np.array([fy + a / 500.0, fy, fy - b / 200.0])
    delta = 6.0 / 29.0
    xyz = np.where(f > delta, f ** 3, 3 * delta ** 2 * (f - 4.0 / 29.0)) * np.array([0.95047, 1.0, 1.08883])
    linear = np.array([[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]]) @ xyz
    linear = np.clip(linear, 0.0, 1.0)
    return np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)


def _limits(data: np.ndarray) -> list[float]:
    low, high = np.percentile(data[:: max(1, data.shape[0] // 8)], [0.5, 99.5])
    return [float(low), float(high) if high > low else float(low) + 1.0]


# ------------------------------------------------------------------------ readers


def _is_seg(ds: pydicom.Dataset) -> bool:
    return ds.get("SOPClassUID") == SEG_SOP_CLASS or ds.get("Modality") == "SEG"


def read_file(path: str) -> list[LayerData]:
    ds = read_header(path, pixels=True)
    if _is_seg(ds):
        return [read_seg(path, ds, None)]
    if int(ds.get("NumberOfFrames", 1) or 1) > 1 and "PerFrameFunctionalGroupsSequence" in ds:
        return [read_multiframe(path, ds)]
    return [read_2d(path, ds)]


def split_acquisitions(items: list[tuple[str, pydicom.Dataset]]) -> list[tuple[str, list]]:
    """The slices of one SeriesInstanceUID, split into volumes that can be stacked.

    Scanners reuse one series UID for repeated acquisitions (a re-scan, another orientation): stacking those
    interleaves two volumes into one with the wrong slice spacing.  Slices are grouped by AcquisitionNumber
    and by orientation; a list of (label, items), one element when the series is one volume.
    """
    groups: dict[tuple, list] = defaultdict(list)
    for path, header in items:
        acquisition = header.get("AcquisitionNumber")
        orientation = _orientation(header, path) if "ImageOrientationPatient" in header else None  # checked
        key_orientation = tuple(round(float(v), 3) for v in orientation.ravel()) if orientation is not None else None
        groups[(str(acquisition) if acquisition not in (None, "") else None, key_orientation)].append((path, header))
    if len(groups) == 1:
        return [("", items)]
    acquisitions = {a for a, _ in groups}
    orientations = {o for _, o in groups}
    parts = []
    for index, ((acquisition, orientation), members) in enumerate(groups.items(), start=1):
        label = []
        if len(acquisitions) > 1:
            label.append(f"acquisition {acquisition}")
        if len(orientations) > 1:
            label.append(f"orientation {index}")
        parts.append((", ".join(label) + f", {len(members)} slices", members))
    return parts


def read_files(paths: list[str]) -> list[LayerData]:
    """Files grouped by series: several-slice series become volumes; SEGs join their series."""
    series: dict[str, list[tuple[str, pydicom.Dataset]]] = defaultdict(list)
    segs: list[tuple[str, pydicom.Dataset]] = []
    skipped = []
    for path in paths:
        try:
            header = read_header(path)
        except ReadError:
            skipped.append(os.path.basename(path))
            continue
        (segs if _is_seg(header) else series[str(header.get("SeriesInstanceUID", path))]).append((path, header))
    if not series and not segs:
        raise ReadError(os.path.commonpath(paths) if paths else "", "holds no readable DICOM file")
    layers, geometries = [], {}
    split_notes = []
    for uid, series_items in series.items():
        parts = split_acquisitions(series_items)
        if len(parts) > 1:
            split_notes.append(f"series {uid} holds {len(parts)} acquisitions ("
                               + "; ".join(label for label, _ in parts) + "): opened as separate volumes, not one")
        for label, items in parts:
            if len(items) == 1:
                layers.extend(read_file(items[0][0]))
                continue
            layer, geometry = read_series(items)
            if len(parts) > 1:
                layer[1]["name"] = f"{layer[1]['name']} ({label})"
                layer[1]["metadata"]["acquisition"] = label
                layer[1]["metadata"]["notes"] = [*layer[1]["metadata"]["notes"], split_notes[-1]]
            layers.append(layer)
            if len(parts) == 1:  # a SEG names its series, not an acquisition: only an unsplit one is its grid
                geometries[uid] = geometry
    for path, header in segs:
        ds = read_header(path, pixels=True)
        referenced = [str(s.SeriesInstanceUID) for s in ds.get("ReferencedSeriesSequence", [])]
        grid = next((geometries[uid] for uid in referenced if uid in geometries), None)
        layers.append(read_seg(path, ds, grid))
    if len(layers) > 1 or skipped:
        message = f"{len(series)} series and {len(segs)} SEG object(s), opened as {len(layers)} layers"
        if skipped:
            message += f"; skipped {len(skipped)} non-DICOM file(s): {', '.join(skipped[:5])}"
        for _, kwargs, _ in layers:
            kwargs["metadata"]["folder_summary"] = message
    return layers


def read(path: str | list[str]) -> list[LayerData]:
    if isinstance(path, (list, tuple)):
        files = [f for p in path for f in (_iter_files(p) if os.path.isdir(p) else [p])]
        return read_files(files)
    if os.path.isdir(path):
        return read_files(list(_iter_files(path)))
    return read_file(path)
