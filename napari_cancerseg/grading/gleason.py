"""Gleason score and ISUP grade group from areas per pattern (DESIGN.md, biopsy rules).

Primary pattern: the largest graded area.  Secondary: the highest pattern
above the primary, in any amount (pathologists report a small high-grade
component on biopsies); otherwise the largest lower pattern covering at least
5% of the graded tumour; otherwise the primary again (4+4).  ISUP grade
groups: 3+3 -> 1, 3+4 -> 2, 4+3 -> 3, 4+4/3+5/5+3 -> 4, 4+5/5+4/5+5 -> 5.

Research use only, not for diagnosis.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..classes import GLEASON_3, GLEASON_4, GLEASON_5

RESEARCH_ONLY = "research use only, not for diagnosis"
#: label -> Gleason pattern
PATTERN_OF_LABEL = {GLEASON_3: 3, GLEASON_4: 4, GLEASON_5: 5}
MINOR_LOWER_PATTERN = 0.05  # a lower secondary pattern below this share of the graded tumour is not reported


@dataclass(frozen=True)
class Grade:
    primary: int | None
    secondary: int | None

    @property
    def score(self) -> str | None:
        return f"{self.primary}+{self.secondary}" if self.primary else None

    @property
    def total(self) -> int | None:
        return self.primary + self.secondary if self.primary and self.secondary else None

    @property
    def isup_grade_group(self) -> int | None:
        return isup_grade_group(self.primary, self.secondary) if self.primary and self.secondary else None


def isup_grade_group(primary: int, secondary: int) -> int:
    if not {primary, secondary} <= {3, 4, 5}:
        raise ValueError(f"Gleason patterns are 3, 4 or 5 here, not {primary}+{secondary}")
    total = primary + secondary
    if total <= 6:
        return 1
    if total == 7:
        return 2 if primary == 3 else 3
    return 4 if total == 8 else 5


def grade(pattern_areas: dict[int, float]) -> Grade:
    """The biopsy grade of areas per Gleason pattern (3, 4, 5); no graded area -> no grade."""
    areas = {p: float(a) for p, a in pattern_areas.items() if a > 0}
    if not areas:
        return Grade(None, None)
    unknown = set(areas) - {3, 4, 5}
    if unknown:
        raise ValueError(f"Gleason patterns are 3, 4 or 5 here, not {sorted(unknown)}")
    total = sum(areas.values())
    primary = max(areas, key=lambda p: (areas[p], p))  # a tie goes to the higher pattern
    higher = [p for p in areas if p > primary]
    if higher:
        secondary = max(higher)
    else:
        lower = [p for p in areas if p < primary and areas[p] / total >= MINOR_LOWER_PATTERN]
        secondary = max(lower, key=lambda p: (areas[p], p)) if lower else primary
    return Grade(primary, secondary)
