"""One canonical orientation for every volume (NIfTI and DICOM alike).

Volumes are shown with axes (z, y, x) pointing to the patient's
(Superior, Posterior, Left): the DICOM patient frame (LPS).  An axial slice then
looks as radiologists expect it (anterior at the top, the patient's right on
the left of the screen), and a NIfTI and a DICOM of the same patient overlay.

The reorientation is only flips and axis permutations (never resampling), so
it is exact and reversible: ``to_original`` undoes ``to_canonical`` and writers
use it to save labels in the geometry of the file they belong to.  An oblique
acquisition is put on its closest canonical axes; its exact affine is kept in
the layer metadata.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from nibabel import orientations

#: Converts a RAS+ world (NIfTI) to LPS+ (DICOM) and back.
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])
#: Each voxel axis (i, j, k) points to world axis (L, P, S), none flipped.
_LPS_ORNT = np.array([[0, 1], [1, 1], [2, 1]], dtype=float)


@dataclass(frozen=True)
class Reorientation:
    """How an (i, j, k[, extra...]) array maps to the canonical (z, y, x) layout."""

    transform: np.ndarray  # nibabel ornt: for each input axis, (output axis, flip)
    shape_ijk: tuple[int, int, int]
    affine_lps: np.ndarray  # original voxel (i, j, k) -> LPS mm

    @classmethod
    def from_affine(cls, affine_lps: np.ndarray, shape_ijk) -> Reorientation:
        start = orientations.io_orientation(affine_lps)
        return cls(orientations.ornt_transform(start, _LPS_ORNT), tuple(shape_ijk[:3]), affine_lps)

    @property
    def canonical_affine(self) -> np.ndarray:
        """Voxel (i, j, k) of the reoriented LPS-aligned array -> LPS mm."""
        return self.affine_lps @ orientations.inv_ornt_aff(self.transform, self.shape_ijk)

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        z, y, x = (float(v) for v in np.sqrt((self.canonical_affine[:3, :3] ** 2).sum(axis=0))[::-1])
        return z, y, x

    @property
    def origin_zyx(self) -> tuple[float, float, float]:
        """LPS position (mm) of the first voxel, as (S, P, L) to match (z, y, x)."""
        z, y, x = (float(v) for v in self.canonical_affine[:3, 3][::-1])
        return z, y, x

    def to_canonical(self, array_ijk):
        """(i, j, k, *extra) -> (*extra, z, y, x). Works on numpy and dask arrays."""
        out = array_ijk
        for axis, (_, flip) in enumerate(self.transform):
            if flip == -1:
                out = np.flip(out, axis=axis)
        order = list(np.argsort(self.transform[:, 0])) + list(range(3, out.ndim))
        out = out.transpose(order)  # now (L, P, S, *extra)
        extra = list(range(3, out.ndim))
        return out.transpose(extra + [2, 1, 0])

    def to_original(self, array_zyx):
        """Inverse of ``to_canonical``: (*extra, z, y, x) -> (i, j, k, *extra)."""
        n_extra = array_zyx.ndim - 3
        out = array_zyx.transpose([n_extra + 2, n_extra + 1, n_extra] + list(range(n_extra)))
        inverse = orientations.ornt_transform(_LPS_ORNT, orientations.io_orientation(self.affine_lps))
        for axis, (_, flip) in enumerate(inverse):
            if flip == -1:
                out = np.flip(out, axis=axis)
        order = list(np.argsort(inverse[:, 0])) + list(range(3, out.ndim))
        return out.transpose(order)
