"""The README's main job, headless: `cancerseg demo --screenshot` predicts, saves what a user sees and exits 0."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image

from ..conftest import data_path


def test_demo_screenshot_runs_to_the_end_and_reports_counted_nuclei(tmp_path):
    out, shot = tmp_path / "demo.zarr", tmp_path / "demo.png"
    command = [sys.executable, "-m", "napari_cancerseg.cli", "demo", data_path("wsi/CMU-1-Small-Region.svs"),
               "--out", str(out), "--screenshot", str(shot)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    # closing napari while the result was still being measured aborted the process (rc 134) after the screenshot
    assert result.returncode == 0, result.stderr[-2000:]
    width, height = Image.open(shot).size
    assert width > 800 and height > 500
    from skimage.measure import label as connected

    from napari_cancerseg.io import stores

    (levels, _, _), = stores.read(str(out))
    nuclei = int(connected(np.asarray(levels[0]) == 1, connectivity=2).max())  # counted here, independently
    assert f"{nuclei:,} nuclei in " in result.stdout + result.stderr, result.stdout[-1000:]
