"""Annotations from ImageScope (Aperio XML), ASAP (XML) and QuPath (GeoJSON), as one model.

``read(path)`` picks the format from the content; every format module has
``read(path) -> AnnotationSet`` and ``write(annotation_set, path)``.
"""

from __future__ import annotations

import os

from ..errors import ReadError
from .model import Annotation, AnnotationSet

__all__ = ["Annotation", "AnnotationSet", "read", "sniff", "write"]


def sniff(path: str) -> str | None:
    """'aperio', 'asap' or 'geojson' from the first bytes of a file, or None."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    except OSError:
        return None
    if head.startswith((b"{", b"[")):
        return "geojson"
    if b"<ASAP_Annotations" in head:
        return "asap"
    if b"<Annotations" in head:
        return "aperio"
    return None


def read(path: str | os.PathLike) -> AnnotationSet:
    from . import aperio, asap, geojson

    path = os.fspath(path)
    kind = sniff(path)
    if kind is None:
        raise ReadError(path, "not an annotation file this plugin reads (Aperio XML, ASAP XML or GeoJSON)")
    return {"aperio": aperio, "asap": asap, "geojson": geojson}[kind].read(path)


def write(annotation_set: AnnotationSet, path: str | os.PathLike, fmt: str | None = None) -> str:
    """Write to 'aperio', 'asap' or 'geojson' (default: from the extension; .xml means Aperio)."""
    from . import aperio, asap, geojson

    path = os.fspath(path)
    fmt = fmt or ("geojson" if path.lower().endswith((".json", ".geojson")) else "aperio")
    return {"aperio": aperio, "asap": asap, "geojson": geojson}[fmt].write(annotation_set, path)
