"""Patch datasets (images, masks and their slide boxes, for training), written like stores: never over a user's
files, built under a temporary name and renamed into place when whole."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import zarr

from ...errors import CancersegError, WriteError
from .attributes import MARK, describe_os_error, raw_attributes
from .output import building


class PatchDataset:
    """The arrays of a patch dataset being written: ``images`` (N, S, S, 3), ``masks`` (N, S, S), ``coords`` (N, 4)."""

    def __init__(self, group: zarr.Group, count: int, size: int):
        self.images = group.create_array("images", shape=(count, size, size, 3), chunks=(1, size, size, 3),
                                         dtype=np.uint8)
        self.masks = group.create_array("masks", shape=(count, size, size), chunks=(1, size, size), dtype=np.uint8)
        self.coords = group.create_array("coords", shape=(count, 4), dtype=np.int64)
        self.attributes: dict[str, Any] = {}
        self._group = group

    @classmethod
    @contextlib.contextmanager
    def create(cls, path: str, count: int, size: int, overwrite: bool = False) -> Iterator[PatchDataset]:
        """Write a dataset of ``count`` patches of ``size`` px at ``path``; it appears there only when whole."""
        with building(path, overwrite, "patch dataset") as temporary:
            try:
                dataset = cls(zarr.open_group(temporary, mode="w", zarr_format=2), count, size)
                yield dataset
                dataset._group.attrs.update({**dataset.attributes, MARK: {"kind": "patches", "version": 2}})
            except OSError as err:
                raise WriteError(path, f"cannot write the patch dataset: {describe_os_error(err)}") from None


def read_dataset_attributes(path: str | os.PathLike) -> dict[str, Any]:
    """A patch dataset's attributes ({} when it has none)."""
    return dict(raw_attributes(os.fspath(path)) or {})


def open_patch_dataset(path: str) -> tuple[zarr.Array, zarr.Array, list[str]]:
    """A patch dataset's ``images`` (N, H, W, 3) and ``masks`` (N, H, W) arrays (lazy) and each patch's slide.

    The slide of each patch: the ``slides`` array when the dataset mixes slides,
    else the group's ``slide`` attribute, else the dataset's name.
    """
    try:
        group = zarr.open_group(path, mode="r")
        images, masks = group["images"], group["masks"]
    except (KeyError, FileNotFoundError, ValueError) as err:
        raise CancersegError(f"{path}: not a patch dataset (needs arrays 'images' and 'masks'): {err}") from None
    slides_array = group["slides"] if "slides" in group else None
    for name, node in (("images", images), ("masks", masks), ("slides", slides_array)):
        if node is not None and not isinstance(node, zarr.Array):
            raise CancersegError(f"{path}: '{name}' is a group, not an array as a patch dataset needs")
    assert isinstance(images, zarr.Array) and isinstance(masks, zarr.Array)  # checked just above; tells mypy
    if images.shape[0] != masks.shape[0] or images.shape[1:3] != masks.shape[1:3]:
        raise CancersegError(f"{path}: images {images.shape} and masks {masks.shape} do not pair up")
    if isinstance(slides_array, zarr.Array):
        slides = [str(s) for s in np.asarray(slides_array[:])]
    else:
        slides = [str(group.attrs.get("slide", os.path.splitext(os.path.basename(path.rstrip("/")))[0]))] \
            * images.shape[0]
    return images, masks, slides
