"""Child processes that talk in JSON lines: the model process (prediction) and the training process.

napari never imports TensorFlow (DESIGN.md), so model work runs in a fresh
interpreter (spawned, not forked).  Its stdout carries one JSON message per
line; stderr goes to a file, not a pipe, so a chatty library can never fill a
pipe and stall the child while nobody reads it.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any


def start(argv: list[str]) -> subprocess.Popen:
    log = tempfile.TemporaryFile(mode="w+t", prefix="cancerseg-", suffix=".log")
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1)
    process.stderr_log = log  # read back by messages() when the process dies without saying why
    return process


def messages(process: subprocess.Popen) -> Iterator[dict[str, Any]]:
    """The process's messages until it exits; an exit without 'done' or 'error' becomes an error message."""
    finished = False
    for line in process.stdout:
        try:
            message = json.loads(line)
        except json.JSONDecodeError:
            continue  # stray output of a library
        if not isinstance(message, dict):
            continue
        finished |= message.get("event") in ("done", "error")
        yield message
    code = process.wait()
    if not finished:
        log = getattr(process, "stderr_log", None)
        tail = ""
        if log is not None:
            log.seek(0)
            tail = log.read()[-2000:]
        yield {"event": "error", "message": f"the process stopped (exit {code}): {tail.strip()}"}


def emit(**message) -> None:
    print(json.dumps(message), flush=True)
