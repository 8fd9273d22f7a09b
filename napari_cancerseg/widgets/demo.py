"""The main job as one call: napari, a slide, the Predict slide widget running on it."""

import time

import napari
from qtpy.QtWidgets import QApplication

from .._reader import show_scale_bar


def run_demo(path: str, out: str | None = None, screenshot: str | None = None) -> str:
    """Open ``path``, predict it with the bundled model in a model process; with ``screenshot``,
    wait for the prediction, save what a user sees and close. Returns the widget's status line."""
    viewer = napari.Viewer(title="napari-cancerseg demo (research use only, not for diagnosis)")
    slide = viewer.open(path, plugin="napari-cancerseg")[0]
    show_scale_bar(viewer)  # in µm: every layer the plugin adds carries the slide's units
    _, widget = viewer.window.add_plugin_dock_widget("napari-cancerseg", "Predict slide")
    widget.slide.value = slide
    if out:
        widget.out.value = out
    widget.run()
    if not screenshot:
        napari.run()
        return widget.status.value
    def settled() -> bool:  # the model finished and, after a prediction, its counts and areas are measured
        return widget.process is None and (widget.state != "done" or widget.result_text is not None)

    # headless check: the GUI keeps running meanwhile. The measuring thread must end before the viewer closes:
    # closing under it deleted its Qt signals and aborted the process (rc 134) after the screenshot was saved
    while not settled():
        QApplication.processEvents()
        time.sleep(0.05)
    settle = time.monotonic() + 1.0  # the heat maps and glass layer follow on later event-loop turns
    while time.monotonic() < settle:
        QApplication.processEvents()
        time.sleep(0.05)
    viewer.screenshot(screenshot, canvas_only=False)
    status = widget.status.value
    viewer.close()
    return status
