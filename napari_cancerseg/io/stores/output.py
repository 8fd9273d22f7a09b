"""Where stores are made: never over a user's files, atomically, and one run at a time (issue 15, items 1 and 4).

* ``check_output``: an existing path that is not a store of ours is refused (nothing in it is touched); our own
  store is replaced only with ``overwrite=True``.
* ``building``: a new store is built under a temporary sibling name and renamed into place when whole, so a kill
  at any moment leaves either no store or a whole one (and never an empty one a later run refuses); an overwritten
  store is swapped out only once its replacement is complete.
* ``StoreLock``: a run holds an advisory lock beside the store; a second run on the same store is refused clearly.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from typing import TextIO

from ...errors import CancersegError, WriteError
from .attributes import MARK, describe_os_error, raw_attributes

#: the files zarr writes before any data: a folder holding only these is an interrupted creation, not data
_METADATA = {".zgroup", ".zattrs", ".zarray", "zarr.json", ".zmetadata"}


def is_ours(path: str) -> bool:
    """A folder this plugin wrote: a store or patch dataset marked as ours, or an older store with our attributes."""
    attrs = raw_attributes(path) if os.path.isdir(path) else None
    if attrs is None:
        return False
    if isinstance(attrs.get(MARK), dict):
        return True
    props = attrs.get("cancerseg")
    if isinstance(props, dict) and "multiscales" in attrs:
        return True  # stores of earlier versions (predictions, rasterised annotations, overlays)
    return "summary" in attrs and "sources" in attrs  # patch datasets of earlier versions


def is_creation_leftover(path: str) -> bool:
    """A store folder holding zarr metadata only (no chunk, no cancerseg identity): an earlier version's run
    killed between creating the folder and writing its attributes.  Nothing in it is data."""
    attrs = raw_attributes(path)
    if attrs is not None and (attrs.get("cancerseg") or attrs.get(MARK)):
        return False
    found = False
    for _, _, names in os.walk(path):
        for name in names:
            if name not in _METADATA:
                return False
            found = True
    return found


def check_output(path: str, overwrite: bool = False, what: str = "store") -> bool:
    """Refuse ``path`` unless it is free, an empty folder, or (with ``overwrite``) our own.

    True if it exists as ours.
    """
    if not os.path.lexists(path):
        return False
    if os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path):
        return False
    if not is_ours(path) and not (os.path.isdir(path) and is_creation_leftover(path)):
        raise WriteError(path, f"already exists and is not a napari-cancerseg {what}: nothing there was changed; "
                               "choose another output path")
    return True


@contextlib.contextmanager
def building(path: str, overwrite: bool = False, what: str = "store") -> Iterator[str]:
    """Yield a temporary sibling folder to build the store in; on success it replaces ``path`` in one rename.

    ``path`` must be free, an empty folder, an interrupted creation, or (with ``overwrite``) our own.
    """
    exists = check_output(path, overwrite, what)
    if exists and not overwrite and not is_creation_leftover(path):
        raise WriteError(path, f"already exists: pass overwrite=True (--overwrite) to replace this {what}")
    parent, name = os.path.split(os.path.abspath(path))
    temporary = os.path.join(parent, f".{name}.creating-{os.getpid()}")
    _remove_stale_builds(parent, name)
    try:
        os.makedirs(parent, exist_ok=True)
        if os.path.exists(temporary):
            shutil.rmtree(temporary)
        os.makedirs(temporary)
    except OSError as err:
        raise WriteError(path, f"cannot create the store: {describe_os_error(err)}") from None
    try:
        yield temporary
        _swap_in(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise


def _swap_in(temporary: str, path: str) -> None:
    old = None
    try:
        if os.path.lexists(path):
            old = f"{os.path.join(os.path.dirname(os.path.abspath(path)), '.' + os.path.basename(path))}" \
                  f".replaced-{os.getpid()}"
            os.replace(path, old)  # the old store stays whole until its replacement is in place
        os.replace(temporary, path)
    except OSError as err:
        if old and not os.path.lexists(path):
            os.replace(old, path)
        raise WriteError(path, f"cannot put the new store in place: {describe_os_error(err)}") from None
    if old:
        shutil.rmtree(old, ignore_errors=True) if os.path.isdir(old) else os.unlink(old)


def _remove_stale_builds(parent: str, name: str) -> None:
    """Builds of killed runs (their process is gone) are half stores nobody can use: remove them."""
    prefix = f".{name}.creating-"
    try:
        entries = os.listdir(parent)
    except OSError:
        return
    for entry in entries:
        if entry.startswith(prefix):
            try:
                pid = int(entry[len(prefix):])
            except ValueError:
                continue
            if pid != os.getpid() and not _alive(pid):
                shutil.rmtree(os.path.join(parent, entry), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_partials(path: str) -> int:
    """Delete ``*.partial`` files (chunks being written when a run died, e.g. on a full disk); how many."""
    removed = 0
    for folder, _, names in os.walk(path):
        for name in names:
            if name.endswith(".partial"):
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(folder, name))
                    removed += 1
    return removed


class StoreLock:
    """An advisory lock beside a store (``.<name>.lock``), held while one run writes it.

    The OS drops the lock when the holder dies (even by SIGKILL), so a killed run
    never blocks the next one; the small lock file itself is harmless and reused.
    """

    def __init__(self, path: str):
        parent, name = os.path.split(os.path.abspath(path))
        self.store = path
        self.path = os.path.join(parent, f".{name}.lock")
        self._fh: TextIO | None = None

    def acquire(self) -> StoreLock:
        import fcntl

        try:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            fh = open(self.path, "a+")
        except OSError as err:
            raise WriteError(self.store, f"cannot lock the store: {describe_os_error(err)}") from None
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.seek(0)
            holder = fh.read().strip()
            fh.close()
            raise CancersegError(f"{self.store}: another run is writing this store"
                                 f"{f' (process {holder})' if holder else ''}; wait for it to finish, "
                                 "or choose another --out") from None
        fh.seek(0)
        fh.truncate()
        fh.write(str(os.getpid()))
        fh.flush()
        self._fh = fh
        return self

    def release(self) -> None:
        if self._fh is not None:
            self._fh.close()  # closing drops the flock
            self._fh = None

    def __enter__(self) -> StoreLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
