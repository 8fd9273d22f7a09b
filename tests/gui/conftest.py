"""GUI tests run in their own pytest process, like napari itself: TensorFlow is never imported here.

DESIGN.md: importing TensorFlow after a napari viewer exists segfaults, and
importing it before aborts at exit. Each test checks that nothing it did
(opening files, running the plugin's code) pulled TensorFlow in.
"""

import sys

import pytest


@pytest.fixture(autouse=True)
def no_tensorflow_in_the_napari_process():
    assert "tensorflow" not in sys.modules, "run tests/gui in its own process (see README)"
    yield
    assert "tensorflow" not in sys.modules, "this test imported TensorFlow into the napari process"


class EventLoopLatency:
    """How late a 20 ms Qt timer fires while work runs: the viewer's responsiveness, measured."""

    def __init__(self):
        from qtpy.QtCore import QTimer

        self.gaps: list[float] = []
        self._last = 0.0
        self._timer = QTimer()
        self._timer.timeout.connect(self._tick)

    def _tick(self) -> None:
        import time

        now = time.perf_counter()
        self.gaps.append(now - self._last)
        self._last = now

    def __enter__(self):
        import time

        self._last = time.perf_counter()
        self._timer.start(20)
        return self

    def __exit__(self, *exc):
        self._timer.stop()

    def summary(self) -> str:
        return f"{len(self.gaps)} ticks, max gap {max(self.gaps, default=0) * 1000:.0f} ms"


@pytest.fixture
def event_loop_latency():
    return EventLoopLatency()
