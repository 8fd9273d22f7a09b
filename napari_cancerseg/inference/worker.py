"""The model process: runs ``predict_slide`` and reports progress as JSON lines on stdout.

napari never imports TensorFlow (DESIGN.md): the widget starts this module as
a fresh interpreter (``python -m napari_cancerseg.inference.worker``: spawned,
not forked), reads its messages, and reads the prediction from the store it
writes.  Killing it loses nothing written: the store resumes.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import traceback

from .. import processes
from .options import PredictOptions


def command(slide: str, model: str, out: str, options: PredictOptions | None = None) -> list[str]:
    """The model process's argv: the run's options travel as one JSON argument (``PredictOptions.to_json``)."""
    return [sys.executable, "-m", "napari_cancerseg.inference.worker", slide, "--model", model, "--out", out,
            "--options", (options or PredictOptions()).to_json()]


def start(slide: str, model: str, out: str, options: PredictOptions | None = None) -> subprocess.Popen:
    """Start the model process; its stdout carries one JSON message per line (``processes.messages``)."""
    return processes.start(command(slide, model, out, options))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari_cancerseg.inference.worker")
    parser.add_argument("slide")
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    # parsed in main, where a bad one is reported to the GUI as an error message like any other
    parser.add_argument("--options", default=PredictOptions().to_json(), help="PredictOptions as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ..errors import CancersegError
    from .engine import predict_slide

    def progress(p) -> None:
        processes.emit(event="progress", tiles_done=p.tiles_done, tiles_total=p.tiles_total, chunks_done=p.chunks_done,
              chunks_total=p.chunks_total, tiles_per_second=p.tiles_per_second, seconds_left=p.seconds_left)

    processes.emit(event="started", slide=args.slide, model=args.model, out=args.out)
    try:
        summary = predict_slide(args.slide, args.model, args.out, PredictOptions.from_json(args.options),
                                progress=progress)
    except CancersegError as err:
        processes.emit(event="error", message=str(err))
        return 2
    except Exception as err:  # noqa: BLE001 - report anything to the GUI rather than die silently
        processes.emit(event="error", message=f"{type(err).__name__}: {err}", traceback=traceback.format_exc())
        return 1
    processes.emit(event="done", summary=summary.line(), tiles=summary.tiles, seconds=summary.seconds, notes=summary.notes)
    return 0


if __name__ == "__main__":
    sys.exit(main())
