"""Dock widgets: the only modules that import Qt or magicgui. Each is thin over the core."""

from pathlib import Path

import platformdirs


def scratch_folder() -> Path:
    """Where docks and the demo write results nobody named: the user's cache folder, never the working directory
    or the system temporary folder (a prediction kept there resumes next time; the OS may empty /tmp at boot)."""
    folder = Path(platformdirs.user_cache_dir("napari-cancerseg", appauthor=False))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def scratch_path(source: str, model: str, suffix: str) -> str:
    """Where a dock writes a result nobody named: ``<user cache>/napari-cancerseg/<source>.<model><suffix>``."""
    return str(scratch_folder() / f"{Path(source.rstrip('/')).name.split('.')[0]}.{Path(model).stem}{suffix}")
