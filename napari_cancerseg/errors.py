"""Errors that name the file and the problem, so a user knows what to fix."""

from __future__ import annotations

import os


class CancersegError(Exception):
    """Base class for errors this plugin raises on purpose."""


class ReadError(CancersegError, ValueError):
    """A file claims a format this plugin reads, but cannot be read as such.

    The message always starts with the file's path, so that napari's
    notification (which shows only the message) says which file is broken.
    """

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class WriteError(CancersegError, ValueError):
    """A layer cannot be written in the requested format."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path = os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
