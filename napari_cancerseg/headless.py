"""A display for napari on machines without one: Xvfb for ``--screenshot`` runs, else one clear line.

Without an X display, Qt aborts the process (rc 134, "Reinstalling the
application may fix this problem"), which reads as a broken install.  This
module never imports Qt: the CLI asks it before napari is imported.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import time

from .errors import CancersegError


def has_display() -> bool:
    """An X or Wayland display to draw on (macOS and Windows always have one)."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def ensure_display(screenshot: bool, command: str = "cancerseg demo") -> str | None:
    """Make sure napari can open a window; returns the display started (None if one was there).

    With ``screenshot`` (nobody watches the window) and Xvfb installed, start a
    virtual display for this process and stop it at exit.  Otherwise, with no
    display, raise one line that says what to do.
    """
    if has_display():
        return None
    xvfb = shutil.which("Xvfb")
    if not screenshot or xvfb is None:
        hint = (f"xvfb-run -a {command} --screenshot out.png" if screenshot else
                f"run it on a desktop, or save a screenshot headless: xvfb-run -a {command} --screenshot out.png")
        raise CancersegError(f"no display to open napari on (DISPLAY is not set); {hint}"
                             + ("" if xvfb else " (Debian: apt-get install xvfb)"))
    read_end, write_end = os.pipe()
    # -displayfd: Xvfb picks a free display number and writes it once it accepts connections
    server = subprocess.Popen([xvfb, "-displayfd", str(write_end), "-screen", "0", "1280x1024x24", "-nolisten", "tcp"],
                              pass_fds=(write_end,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write_end)
    number = _read_display_number(read_end, server)
    atexit.register(_stop, server)
    os.environ["DISPLAY"] = f":{number}"
    return os.environ["DISPLAY"]


def _read_display_number(fd: int, server: subprocess.Popen, timeout: float = 20.0) -> str:
    deadline, text = time.monotonic() + timeout, b""
    os.set_blocking(fd, False)
    try:
        while time.monotonic() < deadline:
            try:
                chunk = os.read(fd, 64)
            except BlockingIOError:
                chunk = None
            if chunk:
                text += chunk
                if text.endswith(b"\n"):
                    return text.decode().strip()
            elif chunk == b"" or server.poll() is not None:
                break
            time.sleep(0.02)
    finally:
        os.close(fd)
    _stop(server)
    raise CancersegError("Xvfb did not start a virtual display; run the command under xvfb-run -a")


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(5)
        except subprocess.TimeoutExpired:
            server.kill()
