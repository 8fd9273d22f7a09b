"""ruff and mypy as part of the test suite: CI runs only `pytest tests/core` and `pytest tests/gui` (README),
so this is where lint and type errors fail the build. Both read their settings from pyproject.toml."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str, timeout: float) -> subprocess.CompletedProcess:
    # the tools of the interpreter running the tests (the venv's), in the repository root so pyproject.toml applies
    return subprocess.run([sys.executable, "-m", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_ruff_finds_nothing():
    result = _run("ruff", "check", "--no-fix", "--output-format", "concise", "napari_cancerseg", "tests",
                  "benchmarks", timeout=120)
    assert result.returncode == 0, f"ruff check:\n{result.stdout}{result.stderr}"


def test_mypy_finds_no_errors():
    # the files and options come from [tool.mypy]; .mypy_cache keeps a rerun to a few seconds
    result = _run("mypy", timeout=600)
    assert result.returncode == 0, f"mypy:\n{result.stdout}{result.stderr}"
