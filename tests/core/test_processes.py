"""The child-process protocol: messages, errors in the child's words, Cancel, and children dying with their parent."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import zarr

from napari_cancerseg import processes
from napari_cancerseg.processes import Cancelled, ChildProcess, Done, Error, Note, Progress, Started

from ..conftest import data_path, process_gone, wait_gone
from .test_inference import bundle  # noqa: F401 - the tiny bundle fixture, shared

CMU = "wsi/CMU-1-Small-Region.svs"
TF_NOISE = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))


def _child(tmp_path, body: str, name: str = "test", nice: int = 0) -> ChildProcess:
    script = tmp_path / f"{name}.py"
    script.write_text(textwrap.dedent(body))
    return ChildProcess([sys.executable, str(script)], name, env=_env(), log_dir=tmp_path / "logs", nice=nice)



def test_messages_round_trip_and_stray_lines_are_ignored():
    messages = [Started({"slide": "a.svs"}), Progress("tiles", 3, 10, {"tiles_per_second": 2.5}), Note("level 1"),
                Done("done: 10 tiles", {"out": "a.zarr", "tiles": 10}), Error("a.svs: not a slide", "/tmp/x.log"),
                Cancelled("cancelled: 3 tiles")]
    for message in messages:
        assert processes.parse(json.dumps(processes.to_dict(message))) == message
    # data is spread at the top level: `segment --json` reads as it always did
    assert processes.to_dict(Done("s", {"kind": "volume"})) == {"event": "done", "summary": "s", "kind": "volume"}
    assert processes.to_dict(Done("s", {"summary": "not this"}))["summary"] == "s"  # own fields win
    for stray in ["", "Epoch 1/5", "[1, 2]", '{"event": "bogus"}', '{"event": "progress", "stage": "x"}', "{oops"]:
        assert processes.parse(stray) is None
    assert Progress("step", 3, 12).fraction == 0.25 and Progress("step", 0, 0).fraction == 0.0
    assert Error("bad", "/l.log").text() == "bad (log: /l.log)"


def test_emit_writes_one_line_and_no_nan(capsys):
    processes.emit(Progress("step", 1, 2, {"loss": float("nan"), "values": np.array([1, 2])}))
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "NaN" not in out
    assert json.loads(out) == {"event": "progress", "stage": "step", "done": 1, "total": 2, "loss": None,
                               "values": [1, 2]}


def test_an_error_is_the_childs_own_line_and_the_log_path_not_library_noise(tmp_path):
    child = _child(tmp_path, f"""
        import sys
        from napari_cancerseg import processes
        from napari_cancerseg.errors import CancersegError
        def job(cancel):
            print("stray output of a library")
            sys.stderr.write({TF_NOISE!r} + "\\n")
            raise CancersegError("/data/a.svs: not a whole-slide image")
        sys.exit(processes.run_job(job))
    """)
    messages = list(child.start().messages())
    assert messages == [Error("/data/a.svs: not a whole-slide image", child.log)]
    assert child.process.returncode == 2
    assert "absl" not in messages[-1].text() and child.log in messages[-1].text()
    with open(child.log) as log:
        assert TF_NOISE in log.read()  # the noise is kept, in the log


def test_a_child_that_crashes_without_a_word_is_an_error_in_its_own_words(tmp_path):
    child = _child(tmp_path, f"""
        import sys
        sys.stderr.write({TF_NOISE!r} + "\\n")
        raise ValueError("bad header in slide.svs")
    """)
    final = child.start().run()
    assert isinstance(final, Error) and final.log == child.log
    assert final.message == "the test process stopped (exit 1): ValueError: bad header in slide.svs"
    unexpected = _child(tmp_path, "import os; os._exit(0)", "quiet").start().run()
    assert isinstance(unexpected, Error) and "without a result" in unexpected.message


def test_cancel_ends_in_cancelled_never_an_error(tmp_path):
    child = _child(tmp_path, """
        import sys, time
        from napari_cancerseg import processes
        def job(cancel):
            n = 0
            while not cancel.is_set():  # a job that checks its cancel event, as predict_slide does
                processes.emit(processes.Progress("step", n, 1000))
                n += 1
                time.sleep(0.05)
            return processes.Cancelled(f"cancelled after {n} steps")
        sys.exit(processes.run_job(job))
    """)
    seen = []
    for message in child.start().messages():
        seen.append(message)
        if isinstance(message, Progress) and message.done == 2:
            child.cancel()
    assert isinstance(seen[-1], Cancelled) and seen[-1].message.startswith("cancelled after")
    assert not any(isinstance(m, Error) for m in seen)
    assert child.process.returncode == processes.CANCELLED_EXIT


def test_a_child_that_ignores_cancel_is_killed_after_the_grace_period_and_still_cancelled(tmp_path):
    child = _child(tmp_path, """
        import signal, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print('{"event": "started"}', flush=True)
        time.sleep(60)
    """)
    messages = child.start().messages()
    assert isinstance(next(messages), Started)
    start = time.monotonic()
    child.cancel(grace=1.0)
    assert list(messages) == [Cancelled()]
    assert time.monotonic() - start < 10 and child.process.returncode == -signal.SIGKILL


SLEEPER = """
    import sys, time
    from napari_cancerseg import processes
    processes.child_setup()
    print('{"event": "started"}', flush=True)
    while True:
        time.sleep(0.1)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_child_arms_the_parent_death_signal(tmp_path):
    child = _child(tmp_path, """
        import ctypes, signal
        from napari_cancerseg import processes
        processes.child_setup()
        armed = ctypes.c_int(0)
        ctypes.CDLL(None).prctl(2, ctypes.byref(armed), 0, 0, 0)  # PR_GET_PDEATHSIG
        processes.emit(processes.Done("armed", {"signal": armed.value}))
    """)
    final = child.start().run()
    assert isinstance(final, Done) and final.data["signal"] == signal.SIGTERM


@pytest.mark.skipif(not hasattr(os, "nice"), reason="CPU priority is POSIX's")
def test_a_child_lowers_its_cpu_priority_as_asked_and_its_threads_with_it(tmp_path):
    body = """
        import os, threading
        from napari_cancerseg import processes
        processes.child_setup()
        seen = []
        thread = threading.Thread(target=lambda: seen.append(os.nice(0)))  # a thread started after the setup
        thread.start(); thread.join()
        processes.emit(processes.Done("niceness", {"main": os.nice(0), "thread": seen[0],
                                                   "env": os.environ.get(processes.NICE_ENV)}))
    """
    ours = os.nice(0)
    final = _child(tmp_path, body, "niced", nice=7).start().run()  # as ProcessRunner asks (CHILD_NICE)
    assert isinstance(final, Done), final
    # never above 19 (the kernel's floor); the variable is gone, so the child's own children are not niced twice
    assert final.data == {"main": min(ours + 7, 19), "thread": min(ours + 7, 19), "env": None}
    final = _child(tmp_path, body, "plain").start().run()  # the default: the parent's priority
    assert isinstance(final, Done) and final.data["main"] == ours == final.data["thread"]


def test_eof_on_stdin_ends_the_child(tmp_path):
    child = _child(tmp_path, SLEEPER).start()
    messages = child.messages()
    assert isinstance(next(messages), Started)
    child.process.stdin.close()  # what the OS does when the parent dies, however it dies
    assert wait_gone(child.pid, 10) is not None
    assert list(messages) == [Cancelled()]


def test_a_child_dies_with_its_parent_killed_by_sigkill(tmp_path):
    (tmp_path / "sleeper.py").write_text(textwrap.dedent(SLEEPER))
    parent = tmp_path / "parent.py"
    # the child is started from a short-lived thread: the spawner thread keeps the parent-death signal honest
    parent.write_text(textwrap.dedent(f"""
        import sys, threading, time
        from napari_cancerseg.processes import ChildProcess
        children = []
        def start():
            child = ChildProcess([sys.executable, {str(tmp_path / 'sleeper.py')!r}], "sleeper",
                                 log_dir={str(tmp_path / 'logs')!r}).start()
            next(child.messages())
            children.append(child)
        thread = threading.Thread(target=start)
        thread.start()
        thread.join()
        print(children[0].pid, flush=True)
        time.sleep(120)
    """))
    process = subprocess.Popen([sys.executable, str(parent)], stdout=subprocess.PIPE, text=True, env=_env())
    try:
        pid = int(process.stdout.readline())
        time.sleep(1.0)
        assert not process_gone(pid)  # alive while its parent is, the starting thread long gone
        process.kill()
        process.wait()
        took = wait_gone(pid, 10)
        assert took is not None, f"child {pid} still running 10 s after its parent was killed"
        print(f"child gone {took:.2f} s after SIGKILL of its parent")
    finally:
        process.kill()
        if "pid" in locals() and not process_gone(pid):
            os.kill(pid, signal.SIGKILL)




def _predict(model: str, out: str) -> list[str]:
    return [sys.executable, "-m", "napari_cancerseg.cli", "predict", data_path(CMU), "--model", model, "--out", out,
            "--tissue", "0.0", "--batch", "8"]


def test_sigint_on_cli_predict_says_cancelled_exits_130_and_a_rerun_completes_the_store(tmp_path, bundle):  # noqa: F811
    env = dict(_env(), TF_CPP_MIN_LOG_LEVEL="3")
    reference, out = str(tmp_path / "reference.zarr"), str(tmp_path / "interrupted.zarr")
    from napari_cancerseg.cli import main  # the uninterrupted run, in this process (TensorFlow is loaded already)

    assert main(_predict(bundle, reference)[3:]) == 0

    process = subprocess.Popen(_predict(bundle, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    seen = b""
    # mid-run: the model is loaded and a third of the tiles (several rows of chunks) predicted
    while max([int(n) for n in re.findall(rb"(\d+)/744 tiles", seen)] or [0]) < 250:
        chunk = os.read(process.stderr.fileno(), 4096)
        assert chunk, seen.decode(errors="replace")
        seen += chunk
    process.send_signal(signal.SIGINT)
    stdout, stderr = process.communicate(timeout=120)
    text = (stdout + seen + stderr).decode(errors="replace")
    assert process.returncode == 130, text
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    last = stderr.decode().strip().splitlines()[-1]
    assert last.startswith("cancelled: ") and "run the same command again to resume" in last, text
    group = zarr.open_group(out, mode="r")
    assert not group.attrs["cancerseg"]["complete"]  # cancelled mid-run, not a finished store

    rerun = subprocess.run(_predict(bundle, out), check=False, capture_output=True, text=True, env=env,
                           timeout=300)
    assert rerun.returncode == 0 and rerun.stdout.startswith("done: "), rerun.stderr[-2000:]
    written = int(re.search(r"(\d+) chunks written", last).group(1))
    assert 0 < written < 744
    assert f"{written} already done" in rerun.stdout  # it resumed: what the cancelled run wrote was kept
    assert zarr.open_group(out, mode="r").attrs["cancerseg"]["complete"]
    for array in ("labels/0", "probabilities"):
        np.testing.assert_array_equal(zarr.open_array(f"{out}/{array}", mode="r")[:],
                                      zarr.open_array(f"{reference}/{array}", mode="r")[:])


def test_cli_cancel_in_protocol_mode_emits_cancelled(tmp_path, monkeypatch, capsys):
    """`segment --json` stopped by Ctrl-C: one Cancelled message for the dock, "cancelled" on stderr, exit 130."""
    from napari_cancerseg import cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_segment", interrupted)  # build_parser, called by main, picks it up
    assert cli.main(["segment", "x.nii.gz", "--model", "m.keras", "--out", str(tmp_path / "o.nii.gz"),
                     "--json"]) == 130
    captured = capsys.readouterr()
    assert [processes.parse(line) for line in captured.out.splitlines()] == [Cancelled()]
    assert captured.err.strip() == "cancelled"


def test_cancelling_training_in_its_process_is_cancelled_and_leaves_no_new_bundle(tmp_path):
    """What the Train dock runs: `cancerseg train --progress-json`, cancelled after its first step."""
    pytest.importorskip("keras")
    import shutil

    from napari_cancerseg import NUCLEI_MODEL, resource_path
    from napari_cancerseg.training.patches import extract_patches

    from .test_correction import _cmu_annotations

    base = str(tmp_path / "nuclei.keras")
    shutil.copy(resource_path(NUCLEI_MODEL), base)
    patches = str(tmp_path / "p.zarr")
    extract_patches(data_path(CMU), patches, size=128, annotations=_cmu_annotations(tmp_path / "a.geojson"))
    child = ChildProcess([sys.executable, "-m", "napari_cancerseg.cli", "train", "--patches", patches, "--init", base,
                          "--epochs", "50", "--steps", "20", "--batch", "2", "--size", "128", "--progress-json"],
                         "training", env=dict(_env(), TF_CPP_MIN_LOG_LEVEL="3"), log_dir=tmp_path / "logs")
    seen = []
    for message in child.start().messages():
        seen.append(message)
        if isinstance(message, Progress) and message.stage == "step" and not child.cancelled:
            child.cancel()
    assert isinstance(seen[-1], Cancelled) and not any(isinstance(m, (Error, Done)) for m in seen), seen
    assert child.process.returncode == processes.CANCELLED_EXIT
    assert not os.path.exists(tmp_path / "nuclei-v1.1.0.keras") and os.path.exists(base)  # nothing half-saved
    with open(child.log) as log:
        text = log.read()
    assert "cancelled" in text and "Traceback" not in text
