"""What the plain array-likes napari slices share: numpy's basic indexing turned into windows to read.

Slide levels (``slide_levels.SlideLevel``), live and finished prediction levels
(``stores.chunks.StridedLevel``) and heat maps (``stores.prediction.ProbabilityPlane``)
are not dask arrays, so that napari's slicing costs no graph work on the GUI thread.
Each reads a window; this module says which window a key asks for.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class AxisRead(NamedTuple):
    """The span [low, high) of one axis to read forwards, the step to take over it after (negative: reversed),
    and whether an integer index dropped the axis."""

    low: int
    high: int
    step: int
    dropped: bool


def read_plan(key: Any, shape: tuple[int, ...], read_axes: int, what: str) -> tuple[list[AxisRead], tuple]:
    """The reads of the first ``read_axes`` axes for a basic index key (integers, slices, one Ellipsis), and
    the key's entries for the remaining axes (padded with ``slice(None)``), to apply to the pixels read.

    ``what`` names the array in errors ("slide levels", "live levels").
    """
    ndim = len(shape)
    key = key if isinstance(key, tuple) else (key,)
    ellipses = [at for at, item in enumerate(key) if item is Ellipsis]  # `in` would compare arrays
    if len(ellipses) > 1:
        raise IndexError("an index can only have a single ellipsis ('...')")
    if ellipses:
        at = ellipses[0]
        key = key[:at] + (slice(None),) * (ndim - len(key) + 1) + key[at + 1:]
    if len(key) > ndim:
        raise IndexError(f"too many indices for {what}: {len(key)} for {ndim} axes")
    key = key + (slice(None),) * (ndim - len(key))
    axes = []
    for axis, item in enumerate(key[:read_axes]):
        if isinstance(item, (int, np.integer)) and not isinstance(item, bool):
            index = int(item) + (shape[axis] if item < 0 else 0)
            if not 0 <= index < shape[axis]:
                raise IndexError(f"index {int(item)} is out of bounds for axis {axis} with size {shape[axis]}")
            axes.append(AxisRead(index, index + 1, 1, True))
        elif isinstance(item, slice):
            start, stop, step = item.indices(shape[axis])
            if step > 0:
                axes.append(AxisRead(start, max(start, stop), step, False))
            else:  # start, start + step, ... > stop: read (stop, start] forwards, take it backwards
                axes.append(AxisRead(stop + 1, max(stop + 1, start + 1), step, False))
        else:
            raise IndexError(f"{what} take integers and slices, not {type(item).__name__}: "
                             "read a window first (np.asarray(level[y0:y1, x0:x1]))")
    return axes, key[read_axes:]


def take(window: np.ndarray, axes: list[AxisRead], rest: tuple = ()) -> np.ndarray:
    """The steps and dropped axes of ``axes`` applied to the window read forwards, then ``rest``."""
    stepped = window[tuple(slice(None, None, a.step) for a in axes)]
    return stepped[tuple(0 if a.dropped else slice(None) for a in axes) + tuple(rest)]


class WindowArray:
    """``shape``, ``dtype`` and ``__getitem__`` make an array-like; this adds what numpy and napari ask besides."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        raise NotImplementedError

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        pixels = self[...]
        return pixels if dtype is None else pixels.astype(dtype, copy=False)
