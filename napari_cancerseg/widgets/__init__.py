"""Dock widgets: the only modules that import Qt or magicgui. Each is thin over the core."""

import tempfile
from pathlib import Path


def scratch_path(source: str, model: str, suffix: str) -> str:
    """Where a dock writes a result nobody named: ``<tmp>/napari-cancerseg/<source>.<model><suffix>``."""
    folder = Path(tempfile.gettempdir()) / "napari-cancerseg"
    folder.mkdir(exist_ok=True)
    return str(folder / f"{Path(source.rstrip('/')).name.split('.')[0]}.{Path(model).stem}{suffix}")
