"""Autosaved drafts of regions being corrected: killing napari loses at most one autosave interval.

A draft is the edited labels of one region plus where they belong, saved
beside the store in ``<store>.drafts/`` (never inside it: a draft is not yet
accepted).  Every save writes a temporary file and renames it over the old
one, so a crash mid-save leaves the previous draft intact.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .labels import Region

AUTOSAVE_SECONDS = 30.0


def drafts_folder(store: str | os.PathLike) -> Path:
    store = Path(store)
    return store.with_name(store.name + ".drafts")


@dataclass
class Draft:
    store: str
    region: Region
    ident: str

    @classmethod
    def new(cls, store: str | os.PathLike, region: Region) -> Draft:
        return cls(os.fspath(store), region, uuid.uuid4().hex[:10])

    @property
    def path(self) -> Path:
        return drafts_folder(self.store) / f"{self.ident}.npz"

    def save(self, labels: np.ndarray) -> None:
        """Atomically replace the saved draft with ``labels``."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(f".tmp-{os.getpid()}.npz")
        meta = {"store": self.store, "box": list(self.region.box), "level": self.region.level,
                "rows": list(self.region.rows), "cols": list(self.region.cols)}
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, labels=np.asarray(labels), meta=np.array(json.dumps(meta)))
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def load(self) -> np.ndarray:
        with np.load(self.path) as data:
            return data["labels"]

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def pending_drafts(store: str | os.PathLike) -> list[Draft]:
    """Drafts left by an earlier session (napari closed or killed before accepting), oldest first."""
    folder = drafts_folder(store)
    found = []
    for path in sorted(folder.glob("*.npz"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []:
        if ".tmp-" in path.name:
            continue  # an interrupted save: the draft it was replacing is still there
        try:
            with np.load(path) as data:
                meta = json.loads(str(data["meta"]))
        except (OSError, ValueError, KeyError):
            continue  # unreadable: leave it for a person to look at, never delete work
        region = Region(tuple(meta["box"]), int(meta["level"]), tuple(meta["rows"]), tuple(meta["cols"]))
        found.append(Draft(os.fspath(store), region, path.stem))
    return found
