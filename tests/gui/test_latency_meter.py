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


def test_a_full_garbage_collection_during_the_work_is_named(qtbot, event_loop_latency):
    import gc

    garbage = []
    for _ in range(200_000):  # cycles for the collector to walk
        cycle: list = []
        cycle.append(cycle)
        garbage.append(cycle)
    with event_loop_latency as latency:
        assert gc.collect() == 0  # what the test process left was collected before the clock started
        del garbage[:]
        qtbot.wait(100)
        gc.collect()
    assert len(latency.collections) == 2 and "2 full garbage collection(s)" in latency.summary(), latency.summary()
