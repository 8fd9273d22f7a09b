"""The tile grid over a slide level, its blend weights, and tissue fractions per chunk.

The grid is chunk-centred: output chunk (i, j) covers level pixels
[i*stride, (i+1)*stride) x [j*stride, (j+1)*stride), and tile (i, j) covers that
chunk plus ``overlap / 2`` on every side (so ``tile = stride + overlap``).  A
chunk is final once the up to 3 x 3 tiles around it are predicted, which makes
the output streamable and resumable chunk by chunk.  Tiles that stick out of
the level are padded (the slide reader fills with the background colour).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass(frozen=True)
class TileGrid:
    height: int  # of the level predicted
    width: int
    tile: int = 512
    overlap: int = 64

    def __post_init__(self):
        if self.overlap % 2 or not 0 <= 2 * self.overlap <= self.tile:
            raise ValueError(f"overlap must be even and at most half the tile ({self.tile}), not {self.overlap}")

    @property
    def stride(self) -> int:
        return self.tile - self.overlap

    @property
    def margin(self) -> int:
        return self.overlap // 2

    @property
    def rows(self) -> int:
        return -(-self.height // self.stride)

    @property
    def cols(self) -> int:
        return -(-self.width // self.stride)

    def __len__(self) -> int:
        return self.rows * self.cols

    def tile_origin(self, row: int, col: int) -> tuple[int, int]:
        """(y, x) of the tile's top-left corner in level pixels (may be negative at the edges)."""
        return row * self.stride - self.margin, col * self.stride - self.margin

    def chunk_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """(y0, y1, x0, x1) of output chunk (row, col), clipped to the level."""
        y0, x0 = row * self.stride, col * self.stride
        return y0, min(y0 + self.stride, self.height), x0, min(x0 + self.stride, self.width)

    def to_dict(self) -> dict:
        return {"height": self.height, "width": self.width, "tile": self.tile, "overlap": self.overlap}

    @cached_property
    def ramp(self) -> np.ndarray:
        """The 1-D blend weight across a tile (weights are separable: a tile's are the outer product of this)."""
        return blend_ramp(self.tile, self.overlap)


def blend_ramp(tile: int, overlap: int) -> np.ndarray:
    """(tile,) float64 weights: 1 in the middle, falling over the overlap to near 0 as sin².

    Never exactly 0, so that pixels seen by one tile only (slide edges) keep
    their prediction after normalising by the summed weight.
    """
    ramp = np.ones(tile)
    if overlap:
        d = np.arange(overlap) + 0.5
        edge = np.sin(0.5 * np.pi * d / overlap) ** 2
        ramp[:overlap] = edge
        ramp[-overlap:] = edge[::-1]
    return ramp


def tissue_fractions(grid: TileGrid, mask: np.ndarray, mask_downsample: float, level_downsample: float) -> np.ndarray:
    """(rows, cols) fraction of tissue in each output chunk, from a low-resolution tissue mask.

    ``mask_downsample`` and ``level_downsample`` are relative to level 0.
    """
    scale = level_downsample / mask_downsample  # level pixels -> mask pixels
    fractions = np.zeros((grid.rows, grid.cols))
    for row in range(grid.rows):
        for col in range(grid.cols):
            y0, y1, x0, x1 = grid.chunk_box(row, col)
            m = mask[int(y0 * scale):max(int(y0 * scale) + 1, int(np.ceil(y1 * scale))),
                     int(x0 * scale):max(int(x0 * scale) + 1, int(np.ceil(x1 * scale)))]
            fractions[row, col] = m.mean() if m.size else 0.0
    return fractions
