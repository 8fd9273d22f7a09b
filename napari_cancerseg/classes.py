"""The class/colour table of DESIGN.md and the mapping from annotation class names to labels."""

from __future__ import annotations

import re
from typing import cast

BACKGROUND, BENIGN, GLEASON_3, GLEASON_4, GLEASON_5, TUMOUR = 0, 1, 2, 3, 4, 5

RGB = tuple[int, int, int]
RGBA = tuple[int, int, int, int]

#: label -> (name, RGB); label 0 is transparent.
CLASSES: dict[int, tuple[str, RGB | None]] = {
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


def rgba_255() -> dict[int, RGBA]:
    return {k: (*rgb, 255) for k, (_, rgb) in CLASSES.items() if rgb is not None}


#: Colours for classes outside the Gleason table (nuclei, organs...): never the Gleason colours,
#: so a nucleus is never shown as "benign" or "pattern 3".
OTHER_COLOURS: list[RGB] = [(0, 200, 255), (120, 80, 255), (255, 120, 200), (0, 110, 255), (150, 255, 255)]


def class_colours(classes: list[dict]) -> dict[int, RGBA]:
    """RGBA (0-255) per label of a model's class table: its own colour, else DESIGN.md's when the class
    *is* that Gleason class (by name and label), else a colour outside the Gleason table."""
    colours: dict[int, RGBA] = {}
    spare = iter(OTHER_COLOURS * 10)
    for entry in classes:
        label, name = int(entry["label"]), str(entry.get("name", ""))
        if label == BACKGROUND:
            continue
        table_rgb = CLASSES[label][1] if label in CLASSES else None
        if entry.get("color"):
            # cast, not a check: a class table's colour is passed on as it was given, as before
            colours[label] = cast(RGBA, (*(int(c) for c in entry["color"][:3]), 255))
        elif table_rgb is not None and label_for(name, None) == label:
            colours[label] = (*table_rgb, 255)
        else:
            colours[label] = (*next(spare), 255)
    return colours
