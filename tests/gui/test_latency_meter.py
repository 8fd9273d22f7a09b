"""The event-loop meter the latency tests rely on: a freeze must show up as a gap, wherever it happens."""

from __future__ import annotations

import time


def test_a_freeze_during_the_work_is_the_largest_gap(qtbot, event_loop_latency):
    with event_loop_latency as latency:
        qtbot.wait(200)  # the loop runs: 20 ms ticks
        time.sleep(0.5)  # the GUI thread blocked, as a slow callback would block it
        qtbot.wait(200)
    assert len(latency.gaps) > 10
    assert 0.5 <= latency.largest_gap < 1.5, latency.summary()
    assert sum(g >= 0.5 for g in latency.gaps) == 1  # one freeze, one long gap


def test_a_freeze_just_before_the_end_is_counted(qtbot, event_loop_latency):
    with event_loop_latency as latency:
        qtbot.wait(200)
        time.sleep(0.5)  # no tick after it: only the end of the measurement sees it
    assert latency.largest_gap >= 0.5, latency.summary()


def test_each_measurement_starts_afresh(qtbot, event_loop_latency):
    with event_loop_latency as latency:
        time.sleep(0.3)
        qtbot.wait(100)
    assert latency.largest_gap >= 0.3, latency.summary()
    with event_loop_latency as latency:
        qtbot.wait(200)
    assert latency.largest_gap < 0.3, latency.summary()
