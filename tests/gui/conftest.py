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
