"""The model process: runs ``predict_slide`` and reports progress as JSON lines on stdout.

napari never imports TensorFlow (DESIGN.md): the widget starts this module as
a fresh interpreter (``python -m napari_cancerseg.inference.worker``: spawned,
not forked), reads its messages, and reads the prediction from the store it
writes.  Killing it loses nothing written: the store resumes.
"""

from __future__ import annotations

import argparse
import sys
import threading

from .. import processes
from .options import PredictOptions


def command(slide: str, model: str, out: str, options: PredictOptions | None = None) -> list[str]:
    """The model process's argv: the run's options travel as one JSON argument (``PredictOptions.to_json``)."""
    return [sys.executable, "-m", "napari_cancerseg.inference.worker", slide, "--model", model, "--out", out,
            "--options", (options or PredictOptions()).to_json()]


def start(slide: str, model: str, out: str, options: PredictOptions | None = None) -> processes.ChildProcess:
    """Start the model process; follow it with ``.messages()`` (processes.py is the protocol)."""
    return processes.ChildProcess(command(slide, model, out, options), "model").start()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="napari_cancerseg.inference.worker")
    parser.add_argument("slide")
    parser.add_argument("--model", required=True)
    parser.add_argument("--out", required=True)
    # parsed in the job, where a bad one is reported to the GUI as an error message like any other
    parser.add_argument("--options", default=PredictOptions().to_json(), help="PredictOptions as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return processes.run_job(lambda cancel: _predict(args, cancel))


def _predict(args: argparse.Namespace, cancel: threading.Event) -> processes.Message:
    """predict_slide with its progress as messages; SIGTERM/SIGINT set ``cancel``, which stops it cleanly."""
    from .engine import predict_slide

    def progress(p) -> None:
        processes.emit(processes.Progress("tiles", p.tiles_done, p.tiles_total, {
            "chunks_done": p.chunks_done, "chunks_total": p.chunks_total, "tiles_per_second": p.tiles_per_second,
            "seconds_left": p.seconds_left}))

    options = PredictOptions.from_json(args.options)
    processes.emit(processes.Started({"slide": args.slide, "model": args.model, "out": args.out}))
    summary = predict_slide(args.slide, args.model, args.out, options, progress=progress, cancel=cancel)
    for note in summary.notes:
        processes.emit(processes.Note(note))
    if summary.cancelled:  # every finished chunk is in the store: a rerun resumes from there
        return processes.Cancelled(summary.line())
    return processes.Done(summary.line(), {"out": args.out, "tiles": summary.tiles, "seconds": summary.seconds,
                                           "notes": summary.notes})


if __name__ == "__main__":
    sys.exit(main())
