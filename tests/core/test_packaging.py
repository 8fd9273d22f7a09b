"""The package as users install it: manifest, entry points, README and CI in step."""

from __future__ import annotations

import re
from importlib import metadata

from npe2 import PluginManifest

from ..conftest import ROOT


def test_manifest_is_valid_and_registered():
    manifest = PluginManifest.from_distribution("napari-cancerseg")
    assert manifest.name == "napari-cancerseg"
    patterns = manifest.contributions.readers[0].filename_patterns
    assert {"*.svs", "*.ndpi", "*.nii.gz", "*.dcm", "*.zarr"} <= set(patterns)
    scripts = {ep.name for ep in metadata.entry_points(group="console_scripts")}
    assert "cancerseg" in scripts


def test_ci_runs_exactly_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    section = readme.split("**Run the tests**", 1)[1]
    readme_command = re.search(r"```bash\n(.+?)\n```", section, re.S).group(1).strip()
    ci_command = re.search(r"^TEST_COMMAND='(.+)'$", ci, re.M).group(1)
    assert readme_command == ci_command
    assert "xvfb-run" in ci and '"$TEST_COMMAND"' in ci


#: Code the napari process loads: Keras/TensorFlow may not be imported there, even lazily.
NAPARI_PROCESS = ("io", "annotations", "widgets", "preprocess", "grading", "_reader.py", "_writer.py",
                  "_sample_data.py", "__init__.py", "errors.py", "classes.py", "processes.py")


def test_no_tensorflow_in_napari_code_and_qt_only_in_widgets():
    """DESIGN.md: TensorFlow never in the napari process; Qt only in widgets/."""
    package = ROOT / "napari_cancerseg"
    for path in package.rglob("*.py"):
        text = path.read_text()
        relative = path.relative_to(package).parts
        if relative[0] in NAPARI_PROCESS and relative != ("models", "__init__.py"):
            assert not re.search(r"^\s*(import|from)\s+(tensorflow|keras)\b", text, re.M), path
        if "widgets" not in path.parts:
            assert not re.search(r"^\s*(import|from)\s+(qtpy|PyQt5|PySide\d?|magicgui)\b", text, re.M), path
