"""The class/colour table of DESIGN.md and the mapping from annotation class names to labels."""

from __future__ import annotations

import re

BACKGROUND, BENIGN, GLEASON_3, GLEASON_4, GLEASON_5, TUMOUR = 0, 1, 2, 3, 4, 5

#: label -> (name, RGB); label 0 is transparent.
CLASSES = {
    BACKGROUND: ("background", None),
    BENIGN: ("benign", (0, 160, 0)),
    GLEASON_3: ("Gleason pattern 3", (255, 255, 0)),
    GLEASON_4: ("Gleason pattern 4", (255, 165, 0)),
    GLEASON_5: ("Gleason pattern 5", (255, 0, 0)),
    TUMOUR: ("tumour, ungraded", (200, 0, 200)),
}

#: Overlaps are painted lowest first: benign, ungraded tumour, then patterns 3, 4, 5
#: (the higher pattern wins, as pathologists grade); exclusions are cleared last of all.
PAINT_ORDER = (BENIGN, TUMOUR, GLEASON_3, GLEASON_4, GLEASON_5)

_PATTERNS = [
    (re.compile(r"\b(gleason|pattern|grade|g|gp)[\s_-]*(pattern[\s_-]*)?3\b|^3$", re.I), GLEASON_3),
    (re.compile(r"\b(gleason|pattern|grade|g|gp)[\s_-]*(pattern[\s_-]*)?4\b|^4$", re.I), GLEASON_4),
    (re.compile(r"\b(gleason|pattern|grade|g|gp)[\s_-]*(pattern[\s_-]*)?5\b|^5$", re.I), GLEASON_5),
    (re.compile(r"\b(benign|normal|stroma|non[\s_-]?tumou?r|negative|healthy)\b", re.I), BENIGN),
    (re.compile(r"\b(tumou?r|cancer|carcinoma|cap|malignan\w*|adenocarcinoma|lesion)\b", re.I), TUMOUR),
]


def label_for(name: str, unknown: int | None = TUMOUR, mapping: dict[str, int] | None = None) -> int | None:
    """The label of an annotation class name; ``mapping`` (case-insensitive) overrides the built-in rules.

    Names no rule recognises get ``unknown`` (None: not drawn).
    """
    if mapping:
        lowered = {k.lower(): v for k, v in mapping.items()}
        if name.lower() in lowered:
            return lowered[name.lower()]
    for pattern, label in _PATTERNS:
        if pattern.search(name.strip()):
            return label
    return unknown


def napari_colormap() -> dict:
    """{label: RGBA 0-1} for napari Labels layers (0 transparent)."""
    return {None: (0, 0, 0, 0), **{k: ((0, 0, 0, 0) if rgb is None else (*(c / 255 for c in rgb), 1.0))
                                   for k, (_, rgb) in CLASSES.items()}}


def rgba_255() -> dict[int, tuple[int, int, int, int]]:
    return {k: (*rgb, 255) for k, (_, rgb) in CLASSES.items() if rgb is not None}
