"""Which slide a store belongs to: recorded when it is made, checked before its ``slide_path`` is used."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ...errors import CancersegError

if TYPE_CHECKING:
    from .labels import LabelStore


def slide_identity(path: str) -> dict[str, Any]:
    """What makes a store belong to one slide: OpenSlide's quickhash when there is one, else size + name."""
    from ..wsi import SlideHandle

    handle = SlideHandle.shared(path)
    props = handle.slide.properties
    return {"name": os.path.basename(path), "dimensions": list(handle.slide.dimensions),
            "quickhash": props.get("openslide.quickhash-1") or f"size:{os.path.getsize(path)}"}


def verified_slide(store: LabelStore) -> str:
    """The store's ``slide_path``, once it is known to be the slide the store was made from.

    The path must be absolute and plain (a store is a file anyone can edit:
    ``../../etc/passwd`` is refused), name a file, and that file must have the
    identity the store recorded (quickhash, or size and name).  A store that
    recorded no identity (rasterised annotations) is checked by geometry: the
    slide's level 0 must be the store's level 0 times its downsample.
    """
    path = store.attributes.slide_path
    if not path:
        raise CancersegError(f"{store.path}: the store does not say which slide it was made from")
    if not os.path.isabs(path) or ".." in path.replace("\\", "/").split("/") or "\x00" in path:
        raise CancersegError(f"{store.path}: its slide path {path!r} is not a plain absolute path: refused")
    if not os.path.isfile(path):
        raise CancersegError(f"{store.path}: its slide {path} is not there (moved or deleted?)")
    recorded = store.attributes.slide if isinstance(store.attributes.slide, dict) else None
    try:
        actual = slide_identity(path)
    except CancersegError as err:
        raise CancersegError(f"{store.path}: its slide {path} cannot be opened as a slide ({err})") from None
    except Exception as err:  # noqa: BLE001 - OpenSlide raises its own error types and OSError: all mean "not a slide"
        raise CancersegError(f"{store.path}: its slide {path} cannot be opened as a slide "
                             f"({type(err).__name__}: {err})") from None
    if recorded:
        differ = [k for k in ("quickhash", "dimensions", "name") if k in recorded and recorded[k] != actual[k]]
        if differ:
            raise CancersegError(f"{store.path}: the slide at {path} is not the one this store was made from "
                                 f"({', '.join(differ)} differ); put the right slide back at that path")
        return path
    width, height = actual["dimensions"]
    level0 = store.attributes.levels[0].shape[-2:]
    step = store.downsample
    if abs(level0[0] * step - height) > 2 * step or abs(level0[1] * step - width) > 2 * step:
        raise CancersegError(f"{store.path}: the slide at {path} ({width} x {height} px) does not match the store "
                             f"({level0[1]} x {level0[0]} px at downsample {step:g})")
    return path
