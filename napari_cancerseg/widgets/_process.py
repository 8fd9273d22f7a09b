"""What every process-running dock shares: one child at a time, followed off the GUI thread, and its four endings.

Predict slide, Train in background, MRI and mammograms (classify, segment)
and Gleason grading ("Colour tumour by pattern") each run a model in a child
process (processes.py).  A :class:`ProcessRunner` owns that child, the
``thread_worker`` that follows its messages, the Run/Cancel buttons, the
progress bar and the status line, and ends in one of:

* **done**: the dock's ``on_done`` shows the result;
* **cancelled**: a neutral status ("cancelled; Run again resumes"), the bar
  back at 0, the dock's ``on_cancelled`` (e.g. the live layer takes its final
  name): never an error;
* **failed**: a red notification with the child's own line and its log's path;

and it ends the child when the dock is closed or napari quits.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import Any

from magicgui.widgets import Container, Label, ProgressBar, PushButton
from napari.qt.threading import thread_worker
from napari.utils import progress as activity_progress
from napari.utils.notifications import show_error
from qtpy.QtCore import QEvent, QObject, QThreadPool
from qtpy.QtWidgets import QApplication

from ..errors import CancersegError
from ..processes import Cancelled, ChildProcess, Done, Error, Message, Note, Progress, Started

IDLE, RUNNING, DONE, CANCELLED, FAILED = "idle", "running", "done", "cancelled", "failed"
#: Seconds a child may take to stop after its dock is closed (it exits by itself soon after its stdin closes).
CLOSE_GRACE = 5.0
#: How much lower the children's CPU priority is than napari's (``nice``). A model on the CPU takes every core;
#: at the same priority the window waited its turn behind it: the live layer of a Predict run froze it for
#: 0.41-0.64 s, 0.25-0.31 s with the model niced (2 cores). Lower, a child still has every core napari leaves idle.
CHILD_NICE = 10


def _start_child(argv: list[str], name: str) -> ChildProcess:
    """A dock's child, started at the lower priority its window needs (CHILD_NICE)."""
    return ChildProcess(argv, name, nice=CHILD_NICE).start()


def _grow_global_pool(by: int) -> None:
    """Give Qt's global thread pool ``by`` more threads (fewer, when negative) while followers run.

    A follower (``thread_worker``, so a thread of ``QThreadPool.globalInstance()``) waits on its child for the
    whole run.  Qt 5 converts and scales images on that same pool while the GUI thread waits for it (napari's
    activity spinner is a QMovie, scaled each frame): with the pool's threads, one per core (2 on CI), taken by a
    follower and any other worker, the window froze for seconds (5.3 s measured, PyQt5 only: Qt 6 has a pool of its
    own for that).  A follower is not CPU work, so it gets a thread of its own instead of one of the cores'.
    """
    pool = QThreadPool.globalInstance()
    if pool is not None:
        pool.setMaxThreadCount(max(1, pool.maxThreadCount() + by))


class _DockClosed(QObject):
    """Calls back when the dock's widget leaves its dock (napari's close button un-parents it) or is destroyed."""

    def __init__(self, widget, callback: Callable[[], None]):
        super().__init__(widget)
        self._widget, self._callback, self._docked = widget, callback, widget.parent() is not None
        widget.installEventFilter(self)
        widget.destroyed.connect(lambda *_: callback())

    def eventFilter(self, obj, event) -> bool:  # noqa: N802 - Qt's name
        if event.type() == QEvent.Type.ParentChange:
            if self._widget.parent() is not None:
                self._docked = True
            elif self._docked:  # it was in a dock, and no longer is: the dock was closed
                self._docked = False
                self._callback()
        return False


class ProcessRunner:
    """One child process at a time for a dock, with its buttons, bar and status line.

    ``start(argv, ...)`` runs ``prepare()`` (optional, a generator of messages
    run in the worker thread: cheap work before the child, such as cutting
    patches), then the child; ``on_message`` sees every message in the GUI
    thread; ``on_done``/``on_cancelled``/``on_failed`` see the final one.
    """

    def __init__(self, dock: Container, run_buttons: list[PushButton], status: Label,
                 cancel_button: PushButton | None = None, progress: ProgressBar | None = None,
                 cancelled_text: str = "cancelled"):
        self.dock, self.run_buttons, self.status = dock, run_buttons, status
        self.cancel_button, self.progress, self.cancelled_text = cancel_button, progress, cancelled_text
        self.state = IDLE
        self.process: ChildProcess | None = None
        self.worker: Any = None
        self.final: Message | None = None
        self._cancel_requested = False
        self._closed = False
        self._pool_thread = False  # whether this runner's follower added a thread to Qt's global pool
        self._handlers: dict[str, Callable | None] = {}
        self._on_finished: Callable[[], None] | None = None
        self.activity: Any = None  # the run's entry in napari's activity panel
        if cancel_button is not None:
            cancel_button.changed.connect(self.cancel)
        # Qt holds only weak references to the runner: neither the application nor the widget's `destroyed`
        # signal may keep a closed dock alive, or call into a runner the garbage collector is tearing down
        ref = weakref.ref(self)

        def close_if_alive() -> None:
            runner = ref()
            if runner is not None and "_closed" in vars(runner):
                runner.close()

        self._watch = _DockClosed(dock.native, close_if_alive)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(close_if_alive)

    @property
    def running(self) -> bool:
        return self.worker is not None

    @property
    def closed(self) -> bool:
        """The dock was closed (or napari quits): its widgets may be gone, nothing may be shown in them."""
        return self._closed

    def start(self, argv: list[str], name: str = "model", on_message: Callable[[Message], None] | None = None,
              on_done: Callable[[Done], None] | None = None, on_cancelled: Callable[[Cancelled], None] | None = None,
              on_failed: Callable[[Error], None] | None = None,
              prepare: Callable[[], Iterator[Message]] | None = None, cancelled_text: str | None = None,
              on_finished: Callable[[], None] | None = None) -> None:
        if self.running:
            return
        self._handlers = {"message": on_message, "done": on_done, "cancelled": on_cancelled, "failed": on_failed}
        self._cancelled_text = cancelled_text or self.cancelled_text
        self.state, self.final, self._cancel_requested = RUNNING, None, False
        for button in self.run_buttons:
            button.enabled = False
        if self.cancel_button is not None:
            self.cancel_button.enabled = True
        if self.progress is not None:
            self.progress.max, self.progress.value = 1, 0
        self._on_finished = on_finished
        self._name = name
        self._close_activity()
        # napari's activity panel shows the run from its first second: starting Python and TensorFlow and
        # loading the model take 20-60 s before the first tile, and an empty panel read as a hang
        self.activity = activity_progress(total=0, desc=f"{name}: starting the process")
        if prepare is None:  # started here and now: `process` is set when start() returns
            try:
                self.process = _start_child(argv, name)
            except OSError as err:
                self._fail(Error(f"cannot start the {name} process: {err}"))
                self._finished()
                return
        self.worker = self._follow(argv, name, prepare)
        self.worker.yielded.connect(self._on_message)
        self.worker.errored.connect(self._on_worker_error)
        self.worker.finished.connect(self._finished)  # after every yielded message: Qt keeps their order
        if not self._pool_thread:
            _grow_global_pool(1)
            self._pool_thread = True
        self.worker.start()

    @thread_worker
    def _follow(self, argv: list[str], name: str, prepare: Callable[[], Iterator[Message]] | None):
        if prepare is not None:
            for message in prepare():
                yield message
                if isinstance(message, Error):
                    return
            if self._cancel_requested or self._closed:
                yield Cancelled()
                return
            # Popen runs in processes' long-lived spawner thread, whichever thread asks
            self.process = _start_child(argv, name)
            if self._cancel_requested or self._closed:  # Cancel was pressed while it started
                self.process.cancel()
        if self.process is not None:
            yield from self.process.messages()

    def _on_message(self, message: Message) -> None:
        if self._closed:
            return
        if isinstance(message, Progress) and self.progress is not None and message.total > 0:
            self.progress.max, self.progress.value = message.total, min(message.done, message.total)
        self._report_activity(message)
        handler = self._handlers.get("message")
        if handler is not None:
            handler(message)
        if isinstance(message, Done):
            self.state, self.final = DONE, message
            if self.progress is not None:
                self.progress.value = self.progress.max
            self._call("done", message)
        elif isinstance(message, Cancelled):
            self.state, self.final = CANCELLED, message
            if self.progress is not None:
                self.progress.value = 0  # not left at the fraction it reached: nothing is running
            self.status.value = self._cancelled_text
            self._call("cancelled", message)
        elif isinstance(message, Error):
            self._fail(message)

    def _fail(self, error: Error) -> None:
        self.state, self.final = FAILED, error
        if self.progress is not None:
            self.progress.value = 0
        show_error(error.text())
        self.status.value = "failed: " + error.message[:300]
        self._call("failed", error)

    def _call(self, name: str, message: Message) -> None:
        handler = self._handlers.get(name)
        if handler is not None:
            handler(message)

    def _on_worker_error(self, err: BaseException) -> None:
        if not self._closed:  # the follow loop itself failed (prepare raised, or the child could not start)
            self._fail(Error(str(err) if isinstance(err, CancersegError) else f"{type(err).__name__}: {err}"))

    def _report_activity(self, message: Message) -> None:
        activity = self.activity
        if activity is None:
            return
        if isinstance(message, Started):
            activity.set_description(f"{self._name}: loading the model")
            if self.status.value.startswith("starting"):
                self.status.value = f"loading the model in the {self._name} process..."
        elif isinstance(message, Progress) and message.total > 0:
            if activity.total != message.total:
                activity.total = message.total
                activity.set_description(f"{self._name}: {message.stage}")
            activity.n = min(message.done, message.total)
            activity.refresh()
        elif isinstance(message, Note):
            activity.set_description(f"{self._name}: {message.text[:80]}")

    def _close_activity(self) -> None:
        if self.activity is not None:
            self.activity.close()
            self.activity = None

    def _finished(self) -> None:
        if self._pool_thread:
            _grow_global_pool(-1)
            self._pool_thread = False
        self._close_activity()
        self.process = self.worker = None
        if self._on_finished is not None:
            self._on_finished()
        if self._closed:
            return
        for button in self.run_buttons:
            button.enabled = True
        if self.cancel_button is not None:
            self.cancel_button.enabled = False

    def cancel(self, *_: Any) -> None:
        """Ask the child to stop; the follow loop ends with Cancelled (or Done, if it had just finished)."""
        if not self.running:
            return
        self._cancel_requested = True
        self.status.value = "cancelling..."
        if self.process is not None:
            self.process.cancel()

    def close(self) -> None:
        """The dock is closed or napari quits: end the child without waiting for it here."""
        if self._closed:
            return
        self._closed = True
        if self.process is not None:
            self.process.cancel(CLOSE_GRACE)
            if self.process.process is not None and self.process.process.stdin is not None:
                try:
                    self.process.process.stdin.close()  # EOF: the child's watchdog ends it within seconds
                except OSError:
                    pass


class ProcessDock:
    """What a dock that runs a model process shows of it (tests and the demo wait on these), from its runner."""

    runner: ProcessRunner

    @property
    def process(self) -> ChildProcess | None:
        """The model process while it runs; None when idle."""
        return self.runner.process

    @property
    def worker(self) -> Any:
        """The thread following the run; None when idle."""
        return self.runner.worker

    @property
    def state(self) -> str:
        """idle, running, done, cancelled or failed."""
        return self.runner.state
