"""napari on a machine without a display: a virtual one for screenshots, else one line that says what to do."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from napari_cancerseg import headless
from napari_cancerseg.errors import CancersegError


@pytest.fixture
def no_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(sys, "platform", "linux")


def test_without_a_display_the_demo_says_how_to_run_headless(no_display):
    with pytest.raises(CancersegError, match="no display.*xvfb-run -a cancerseg demo --screenshot out.png"):
        headless.ensure_display(screenshot=False)


def test_without_xvfb_a_screenshot_run_names_the_package(no_display, monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(CancersegError, match="apt-get install xvfb"):
        headless.ensure_display(screenshot=True)


def test_a_display_that_is_there_is_kept(monkeypatch):
    monkeypatch.setenv("DISPLAY", ":42")
    assert headless.ensure_display(screenshot=True) is None and os.environ["DISPLAY"] == ":42"


@pytest.mark.skipif(shutil.which("Xvfb") is None, reason="Xvfb is not installed (CI installs it)")
def test_a_screenshot_run_gets_a_virtual_display_that_accepts_windows(no_display):
    """The started display is real: a fresh process opens a Qt window on it and grabs the screen."""
    display = headless.ensure_display(screenshot=True)
    assert display and os.environ["DISPLAY"] == display
    script = ("from qtpy.QtWidgets import QApplication, QLabel; app = QApplication([]); w = QLabel('x'); w.show(); "
              "app.processEvents(); print(app.primaryScreen().grabWindow(0).width())")
    env = {**os.environ, "QT_QPA_PLATFORM": "xcb"}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip() == "1280"  # the virtual screen's width
