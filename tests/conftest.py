"""Shared fixtures: real data from ../shared/data (or $CANCERSEG_TEST_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CANCERSEG_TEST_DATA", ROOT.parent / "shared" / "data"))


def data_path(relative: str) -> str:
    """A real test file; the test is skipped (not faked) when it is missing."""
    path = DATA / relative
    if not path.exists():
        pytest.skip(f"test data {relative} not found under {DATA}")
    return str(path)


@pytest.fixture
def fresh_slide_handles(monkeypatch):
    """Each test gets its own OpenSlide handles, so read counters start at zero."""
    from napari_cancerseg.io.wsi import SlideHandle

    monkeypatch.setattr(SlideHandle, "_shared", {})
    return SlideHandle
