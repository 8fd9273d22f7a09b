"""The one protocol between napari and its child processes (the model process, training, segment, classify, overlay).

napari never imports TensorFlow (DESIGN.md), so model work runs in a fresh
interpreter (``sys.executable -m ...``: spawned, not forked).  This module is
both sides of that seam, and nothing else in the package speaks it:

* **messages**: typed dataclasses (:class:`Started`, :class:`Progress`,
  :class:`Note`, :class:`Done`, :class:`Error`, :class:`Cancelled`), one JSON
  object per line on the child's stdout (:func:`emit` writes them, :func:`parse`
  reads them; any other line is a library's stray output and is ignored);
* **the parent side**: :class:`ChildProcess` starts the child with its stderr
  in a log file (a chatty library can never fill a pipe and stall it, and its
  noise never reaches the user as an error), follows its messages, cancels it
  (SIGTERM, then SIGKILL after a grace period) and always ends with exactly
  one of Done, Error (the child's own one line plus the log's path) or Cancelled;
* **the child side**: :func:`child_setup` makes the child die with its parent
  (Linux's parent-death signal, and EOF on the stdin pipe the parent holds),
  and turns SIGINT/SIGTERM into a cancel request (:func:`cancel_on_signals`)
  or a :class:`KeyboardInterrupt` the CLI reports as "cancelled" (exit 130).

It sits at the bottom layer: the standard library only (platformdirs, a
napari dependency, is imported lazily for the log folder).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import dataclasses
import json
import math
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar

#: Exit status of a child (and of ``cancerseg``) that stopped because it was asked to: 128 + SIGINT, as shells do.
CANCELLED_EXIT = 130
#: Set by ChildProcess in the child's environment: the parent's pid (the child checks it is still its parent).
PARENT_ENV = "NAPARI_CANCERSEG_PARENT_PID"
#: Set by ``ChildProcess(nice=N)`` in the child's environment: how much lower the child sets its CPU priority,
#: before it starts any thread (on Linux each thread has its own, and a new thread takes its creator's).
NICE_ENV = "NAPARI_CANCERSEG_NICE"
#: Seconds a cancelled child may take to stop cleanly (finish the chunk it writes) before it is killed.
GRACE_SECONDS = 15.0
#: Seconds an orphaned child (its parent gone) may take to stop before it exits anyway.
ORPHAN_GRACE_SECONDS = 3.0
#: Log files kept in the log folder (the oldest go first).
KEEP_LOGS = 50


# ---- messages ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Started:
    """The child began its job; ``data`` says what it works on (slide, model, store...)."""

    event: ClassVar[str] = "started"
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Progress:
    """``done`` of ``total`` units of ``stage`` ("tiles", "step", "epoch", "patches"); ``data`` holds the rest."""

    event: ClassVar[str] = "progress"
    stage: str
    done: int
    total: int
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total > 0 else 0.0


@dataclass(frozen=True)
class Note:
    """Something the user should know that is not a failure (e.g. which level was read)."""

    event: ClassVar[str] = "note"
    text: str


@dataclass(frozen=True)
class Done:
    """The job finished: a one-line ``summary`` and the results (paths, counts) in ``data``."""

    event: ClassVar[str] = "done"
    summary: str = ""
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Error:
    """The job failed: the child's own one-line ``message``; ``log`` is the child's stderr log, when there is one."""

    event: ClassVar[str] = "error"
    message: str
    log: str | None = None

    def text(self) -> str:
        """What the user sees: the one line, and where the details are."""
        return f"{self.message} (log: {self.log})" if self.log else self.message


@dataclass(frozen=True)
class Cancelled:
    """The job stopped because it was asked to (Cancel, Ctrl-C, the parent gone); resumable work stays resumable."""

    event: ClassVar[str] = "cancelled"
    message: str = "cancelled"


Message = Started | Progress | Note | Done | Error | Cancelled
MESSAGE_TYPES: dict[str, type] = {t.event: t for t in (Started, Progress, Note, Done, Error, Cancelled)}
FINAL = (Done, Error, Cancelled)


def to_dict(message: Message) -> dict[str, Any]:
    """The message as its flat JSON object: ``{"event": ..., field: value, ..., data key: value, ...}``.

    ``data`` is spread at the top level, so ``cancerseg segment --json``'s
    line reads as it always did (``{"event": "done", "kind": ..., "out": ...}``);
    the message's own fields win over a data key of the same name.
    """
    fields = {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}
    data = fields.pop("data", {})
    return {**data, "event": message.event, **fields}


def from_dict(obj: dict[str, Any]) -> Message | None:
    """The message a JSON object spells, or None if it is not one of ours."""
    event = obj.get("event")
    kind = MESSAGE_TYPES.get(event) if isinstance(event, str) else None
    if kind is None:
        return None
    names = {f.name for f in dataclasses.fields(kind)}
    own = {k: v for k, v in obj.items() if k in names and k != "data"}
    if "data" in names:
        own["data"] = {k: v for k, v in obj.items() if k not in names and k != "event"}
    try:
        return kind(**own)
    except TypeError:  # a line shaped like a message but missing a field of ours
        return None


def parse(line: str) -> Message | None:
    """The message on ``line``, or None for anything else (a library's stray output, an unknown event)."""
    line = line.strip()
    if not line.startswith("{"):
        return None
    try:
        obj = json.loads(line)
    except json.JSONDecodeError:
        return None
    return from_dict(obj) if isinstance(obj, dict) else None


def _jsonable(value: Any) -> Any:
    """numpy scalars and arrays (results of the core) as plain JSON; anything else by its text."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (set, tuple)):
        return list(value)
    return str(value)


_emit_lock = threading.Lock()


def emit(message: Message, stream: IO[str] | None = None) -> None:
    """Write one message as one line on stdout (the child's side of the protocol), flushed at once.

    NaN and infinity become null: ``json.loads`` in the parent would accept
    them, but a NaN loss is "no number", and JSON has no such number.
    """
    text = json.dumps(_finite(to_dict(message)), default=_jsonable)
    with _emit_lock:  # progress comes from worker threads: one line never interleaves with another
        out = stream or sys.stdout
        try:
            out.write(text + "\n")
            out.flush()
        except (BrokenPipeError, ValueError):  # nobody reads us any more (the parent is gone): work on, quietly
            pass


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


# ---- native log lines ---------------------------------------------------------------------------------------

#: The environment that keeps TensorFlow's C++ loggers quiet in a process that may import it: set (unless the
#: user set them) before TensorFlow is imported, in the CLI and in every child.  "failed call to cuInit" on a
#: machine without a GPU, oneDNN and CPU-feature notes are noise to a user, never the cause of an error.
QUIET_NATIVE_LOGS = {"TF_CPP_MIN_LOG_LEVEL": "3", "GRPC_VERBOSITY": "ERROR"}


def quiet_native_logs() -> None:
    """Quiet TensorFlow's C++ log lines in this process (before it imports TensorFlow; harmless after).

    The environment handles most of them; a few ("All log messages before absl::InitializeLog() is called are
    written to STDERR", cudart_stub's "Could not find cuda drivers") are written while TensorFlow's libraries
    load, whatever the level.  So while ``tensorflow`` is imported, file descriptor 2 goes to a log file in
    :func:`log_folder` when it is a terminal or a pipe (a child's stderr already is its log).
    """
    for name, value in QUIET_NATIVE_LOGS.items():
        os.environ.setdefault(name, value)
    if "tensorflow" not in sys.modules and not any(isinstance(f, _NativeLogsToFile) for f in sys.meta_path):
        sys.meta_path.insert(0, _NativeLogsToFile())


class _NativeLogsToFile:
    """A meta path finder that only wraps the import of ``tensorflow`` (then leaves): see quiet_native_logs."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != "tensorflow":
            return None
        import importlib.util

        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module: Any) -> None:
            with _stderr_to_log("tensorflow"):
                run(module)

        spec.loader.exec_module = exec_module  # type: ignore[method-assign]  # this spec's own loader only
        return spec


@contextlib.contextmanager
def _stderr_to_log(name: str) -> Iterator[None]:
    """File descriptor 2 in a log file while inside, when it is a terminal or a pipe (not already a file)."""
    import stat

    try:
        already_a_file = stat.S_ISREG(os.fstat(2).st_mode)
    except OSError:
        already_a_file = True
    if already_a_file:
        yield
        return
    path = log_folder() / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}-{os.getpid()}.log"
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(path, "w") as log:
            os.dup2(log.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


# ---- the parent side --------------------------------------------------------------------------------------


def log_folder() -> Path:
    """Where the children's stderr logs go: the user's log folder (``platformdirs``), else the temporary folder."""
    try:
        import platformdirs

        folder = Path(platformdirs.user_log_dir("napari-cancerseg", appauthor=False))
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    except (ImportError, OSError):
        import tempfile

        folder = Path(tempfile.gettempdir()) / "napari-cancerseg-logs"
        folder.mkdir(parents=True, exist_ok=True)
        return folder


def _prune_logs(folder: Path, keep: int = KEEP_LOGS) -> None:
    logs = sorted(folder.glob("*.log"), key=lambda p: p.stat().st_mtime if p.exists() else 0)
    for old in logs[:-keep] if len(logs) > keep else []:
        with contextlib.suppress(OSError):
            old.unlink()


class _Spawner:
    """One long-lived thread that starts every child.

    Linux's parent-death signal fires when the *thread* that forked the child
    ends, not the process: a child started from a short-lived worker thread
    would be told its parent died as soon as that thread finished.  Starting
    all children here, from a thread that lives as long as the process, makes
    the signal mean what it says.
    """

    def __init__(self) -> None:
        self._jobs: queue.Queue = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def popen(self, *args: Any, **kwargs: Any) -> subprocess.Popen:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._serve, name="cancerseg-spawner", daemon=True)
                self._thread.start()
        reply: queue.Queue = queue.Queue(maxsize=1)
        self._jobs.put((args, kwargs, reply))
        ok, value = reply.get()
        if not ok:
            raise value
        return value

    def _serve(self) -> None:
        while True:
            args, kwargs, reply = self._jobs.get()
            try:
                reply.put((True, subprocess.Popen(*args, **kwargs)))
            except BaseException as err:  # noqa: BLE001 - handed back to the caller's thread, raised there
                reply.put((False, err))


_spawner = _Spawner()
_live: weakref.WeakSet[ChildProcess] = weakref.WeakSet()


@atexit.register
def _close_children() -> None:
    """napari quitting ends its children (the stdin pipe would too, a moment later; this also waits for them)."""
    for child in list(_live):
        child.close(grace=5.0)


#: A Python exception's last line in a traceback: "SomeError: what went wrong" (the child's own words).
_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(Error|Exception)): (.+)$")


class ChildProcess:
    """A child process that speaks this protocol, seen from its parent.

    ``ChildProcess(argv, name).start()``, then iterate :meth:`messages` (from
    any thread) until it ends; it yields exactly one final message: Done,
    Error or Cancelled.  :meth:`cancel` asks the child to stop; :meth:`close`
    also makes sure it is gone.  The child's stderr is in :attr:`log`.
    """

    def __init__(self, argv: list[str], name: str = "child", env: dict[str, str] | None = None,
                 log_dir: str | os.PathLike | None = None, nice: int = 0):
        self.argv = list(argv)
        self.name = name
        self.env = env
        self.nice = nice  # how much lower than ours the child's CPU priority is (0: the same)
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.log: str | None = None
        self.process: subprocess.Popen | None = None
        self.final: Message | None = None
        self._cancel_requested = threading.Event()
        self._kill_timer: threading.Timer | None = None

    # -- lifecycle --

    def start(self) -> ChildProcess:
        folder = self.log_dir or log_folder()
        folder.mkdir(parents=True, exist_ok=True)
        _prune_logs(folder)
        safe = re.sub(r"[^\w.-]+", "-", self.name)
        path = folder / f"{time.strftime('%Y%m%d-%H%M%S')}-{safe}-{os.getpid()}-{id(self) % 100000}.log"
        self.log = str(path)
        env = dict(os.environ if self.env is None else self.env)
        env[PARENT_ENV] = str(os.getpid())
        env.pop(NICE_ENV, None)  # never inherited: the child of a niced child is niced by inheritance already
        if self.nice > 0:
            env[NICE_ENV] = str(self.nice)
        for name, value in QUIET_NATIVE_LOGS.items():  # the child's stderr is its log: keep it readable
            env.setdefault(name, value)
        with open(path, "w") as log:
            log.write(f"# {' '.join(self.argv)}\n")
            log.flush()
            # stdin: a pipe nobody writes to; it reads EOF when this process ends, however it ends (SIGKILL too)
            self.process = _spawner.popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                          text=True, bufsize=1, env=env, close_fds=True)
        _live.add(self)
        return self

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def cancelled(self) -> bool:
        return self._cancel_requested.is_set()

    def cancel(self, grace: float = GRACE_SECONDS) -> None:
        """Ask the child to stop (SIGTERM: it cancels its job cleanly); SIGKILL if it has not within ``grace`` s."""
        self._cancel_requested.set()
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        if self._kill_timer is None:
            self._kill_timer = threading.Timer(grace, self._kill)
            self._kill_timer.daemon = True
            self._kill_timer.start()

    def _kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()

    def close(self, grace: float = GRACE_SECONDS) -> None:
        """The parent is done with this child (dock closed, napari quitting): cancel it, wait, kill if need be."""
        if self.process is None:
            return
        if self.running:
            self.cancel(grace)
            with contextlib.suppress(OSError, AttributeError):
                self.process.stdin.close()  # type: ignore[union-attr]  # EOF: the child's own watchdog stops it too
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                self._kill()
                self.process.wait()
        _live.discard(self)

    # -- messages --

    def messages(self) -> Iterator[Message]:
        """The child's messages until it exits, ending with exactly one Done, Error or Cancelled."""
        if self.process is None:
            self.start()
        assert self.process is not None and self.process.stdout is not None
        final: Message | None = None
        for line in self.process.stdout:
            message = parse(line)
            if message is None or final is not None:
                continue  # stray output, or anything after the final word
            if isinstance(message, Error):
                message = Error(message.message, self.log)
            if isinstance(message, FINAL):
                final = message
            yield message
        code = self.process.wait()
        if self._kill_timer is not None:
            self._kill_timer.cancel()
        _live.discard(self)
        if final is None:
            final = self._ending(code)
            yield final
        self.final = final

    def _ending(self, code: int) -> Message:
        """The last word for a child that exited without one: cancelled if asked, otherwise an error in its words."""
        if self.cancelled or code in (CANCELLED_EXIT, -signal.SIGTERM, -signal.SIGINT):
            return Cancelled()
        if code == 0:
            return Error(f"the {self.name} process ended without a result", self.log)
        return Error(f"the {self.name} process stopped (exit {code}){self._own_words()}", self.log)

    def _own_words(self) -> str:
        """The last exception line of the child's log (its own message), never the libraries' warnings."""
        if not self.log:
            return ""
        try:
            with open(self.log, errors="replace") as fh:
                lines = fh.read()[-20000:].splitlines()
        except OSError:
            return ""
        for line in reversed(lines):
            if _EXCEPTION_LINE.match(line.strip()):
                return ": " + line.strip()[:300]
        return ""

    def run(self) -> Message:
        """Start (if needed), follow to the end, return the final message."""
        final: Message = Cancelled()
        for final in self.messages():
            pass
        return final


# ---- the child side ---------------------------------------------------------------------------------------

PR_SET_PDEATHSIG = 1
_cancel_event: threading.Event | None = None
_setup_done = False


def child_setup() -> None:
    """Make this process a well-behaved child (call first thing in a child's main; harmless elsewhere).

    TensorFlow's C++ log lines are quieted (:func:`quiet_native_logs`).  SIGTERM becomes
    KeyboardInterrupt, as SIGINT is (or a cancel request, in :func:`cancel_on_signals`).  If a
    ChildProcess started us: we die with the parent, by the parent-death signal (Linux) and by EOF on stdin,
    and we lower our CPU priority as it asked (``nice``), so that its window is served first.
    """
    global _setup_done
    quiet_native_logs()
    if _setup_done or threading.current_thread() is not threading.main_thread():
        return
    _setup_done = True
    nice = os.environ.pop(NICE_ENV, "")
    if nice.isdigit() and hasattr(os, "nice"):
        with contextlib.suppress(OSError):
            os.nice(int(nice))
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    parent = os.environ.pop(PARENT_ENV, None)  # popped: our own children (reader processes) are not its children
    if parent is None:
        return
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if str(os.getppid()) != parent:  # the parent died before the signal was armed: nothing started, nobody listens
        os._exit(CANCELLED_EXIT)
    threading.Thread(target=_watch_stdin, name="cancerseg-parent-watch", daemon=True).start()


def _on_signal(signum: int, frame: Any) -> None:
    if _cancel_event is not None and not _cancel_event.is_set():
        _cancel_event.set()  # the job stops at its next checkpoint, cleanly; a second signal interrupts
        return
    raise KeyboardInterrupt


def _watch_stdin() -> None:
    """EOF on stdin: the parent is gone (quit, crashed, SIGKILLed) or let go of us; stop."""
    # os.read on the raw descriptor, not sys.stdin: a daemon thread blocked in a buffered reader's lock
    # makes the interpreter abort at exit ("could not acquire lock for <stdin>")
    with contextlib.suppress(OSError):
        while os.read(0, 65536):
            pass
    _orphaned()


def _orphaned() -> None:
    """Cancel cleanly if we can, but exit within a few seconds whatever happens: nobody reads our results."""
    timer = threading.Timer(ORPHAN_GRACE_SECONDS, os._exit, args=(CANCELLED_EXIT,))
    timer.daemon = True
    timer.start()
    with contextlib.suppress(ProcessLookupError):
        os.kill(os.getpid(), signal.SIGTERM)


@contextlib.contextmanager
def cancel_on_signals(event: threading.Event) -> Iterator[threading.Event]:
    """While inside, SIGINT/SIGTERM set ``event`` (a job that checks it stops cleanly); a second one interrupts."""
    global _cancel_event
    if threading.current_thread() is not threading.main_thread():
        yield event
        return
    previous = _cancel_event, signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    _cancel_event = event
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    try:
        yield event
    finally:
        _cancel_event = previous[0]
        signal.signal(signal.SIGINT, previous[1])
        signal.signal(signal.SIGTERM, previous[2])


def run_job(job: Callable[[threading.Event], Message]) -> int:
    """A child's main: run ``job(cancel)`` and emit its final message; the exit status follows it.

    ``job`` returns Done (or Cancelled, if it saw ``cancel`` set and stopped);
    a CancersegError becomes Error with its message (exit 2), any other
    exception Error with its type and message (exit 1, traceback on stderr,
    which is the log), Ctrl-C/SIGTERM Cancelled (exit 130).
    """
    from .errors import CancersegError

    child_setup()
    cancel = threading.Event()
    try:
        with cancel_on_signals(cancel):
            final = job(cancel)
    except KeyboardInterrupt:
        final = Cancelled()
    except CancersegError as err:
        emit(Error(_one_line(str(err))))
        return 2
    except Exception as err:  # noqa: BLE001 - the parent shows the one line; the traceback goes to the log
        import traceback

        traceback.print_exc(file=sys.stderr)
        emit(Error(_one_line(f"{type(err).__name__}: {err}")))
        return 1
    emit(final)
    return CANCELLED_EXIT if isinstance(final, Cancelled) else 0 if isinstance(final, Done) else 1


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[0] if len(lines) == 1 else "; ".join(lines))[:1000] if lines else "failed"
