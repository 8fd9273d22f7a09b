"""Active learning: the regions of a prediction where the model is least sure, to correct next."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from ..errors import CancersegError
from ..inference.tiling import TileGrid
from ..io.stores import LabelStore


@dataclass(frozen=True)
class Suggestion:
    box: tuple[int, int, int, int]  # slide level-0 x, y, width, height
    entropy: float  # mean normalised entropy of the chunk, 0 (certain) to 1 (uniform)


def _plogp_table() -> np.ndarray:
    """-p log p for every uint8 probability (p = value / 255), so entropy is a table lookup per pixel."""
    p = np.arange(256) / 255.0
    with np.errstate(divide="ignore", invalid="ignore"):
        values = -p * np.log(p)
    return np.nan_to_num(values).astype(np.float32)


def uncertain_regions(store: str | os.PathLike, k: int = 5, skip_corrected: bool = True) -> list[Suggestion]:
    """The ``k`` predicted chunks with the highest mean entropy of their probabilities, most uncertain first.

    Only predicted (done) chunks count; chunks inside an accepted correction are
    skipped, since an annotator already settled them.
    """
    labels = LabelStore(store, writable=False)
    probabilities = labels.probabilities
    if probabilities is None or labels.attributes.grid is None:
        raise CancersegError(f"{store}: not a prediction store (no probabilities): predict the slide first")
    try:
        grid = TileGrid(**labels.attributes.grid)
    except (TypeError, ValueError) as err:
        raise CancersegError(f"{store}: its tile grid {labels.attributes.grid} is not a grid ({err})") from None
    downsample, done = labels.downsample, labels.predicted()
    table, n_classes = _plogp_table(), probabilities.shape[0]
    corrected = [c["box"] for c in labels.corrections] if skip_corrected else []
    scores = []
    for row, col in zip(*np.nonzero(done)):
        y0, y1, x0, x1 = grid.chunk_box(row, col)
        box = (int(x0 * downsample), int(y0 * downsample), int((x1 - x0) * downsample), int((y1 - y0) * downsample))
        if any(_inside(box, c) for c in corrected):
            continue
        chunk = np.asarray(probabilities[:, y0:y1, x0:x1])
        entropy = table[chunk].sum(axis=0).mean() / np.log(n_classes)
        scores.append(Suggestion(box, float(entropy)))
    scores.sort(key=lambda s: -s.entropy)
    return scores[:k]


def _inside(box, container) -> bool:
    x, y, w, h = box
    cx, cy, cw, ch = container
    return cx <= x and cy <= y and x + w <= cx + cw and y + h <= cy + ch
