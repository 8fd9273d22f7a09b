"""Shared fixtures: real data from ../shared/data (or $CANCERSEG_TEST_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CANCERSEG_TEST_DATA", ROOT.parent / "shared" / "data"))


def data_path(relative: str) -> str:
    """A real test file; the test is skipped (not faked) when it is missing."""
    path = DATA / relative
    if not path.exists():
        pytest.skip(f"test data {relative} not found under {DATA}")
    return str(path)


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
