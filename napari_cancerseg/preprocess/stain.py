"""H&E stain normalisation: Macenko (optical density, natural log).

It returns a ``NormalisedTile`` whose ``normalised`` flag is False (and whose
image is the input, unchanged) for a tile without enough tissue to estimate
stains from: glass is normal on slides and must not stop a tiled run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Macenko's standard H&E reference (columns: haematoxylin, eosin), OD per RGB channel.
REFERENCE_STAIN_MATRIX = np.array([[0.5626, 0.2159], [0.7201, 0.8012], [0.4062, 0.5581]])
#: 99th-percentile concentrations of the reference (haematoxylin, eosin).
REFERENCE_MAX_CONCENTRATIONS = np.array([1.9705, 1.0308])
IO = 240  # transmitted light intensity
ALPHA = 1.0  # percentile of the angle distribution used as the robust extreme
BETA = 0.15  # OD below this in any channel is transparent (glass)
MIN_TISSUE_PIXELS = 500


@dataclass
class NormalisedTile:
    image: np.ndarray
    normalised: bool
    reason: str = ""


@dataclass
class MacenkoStains:
    matrix: np.ndarray  # (3, 2): haematoxylin, eosin columns, unit vectors
    max_concentrations: np.ndarray  # (2,)


def optical_density(rgb: np.ndarray, io: float = IO) -> np.ndarray:
    """OD = -ln((I + 1) / Io), per channel (natural log, as Beer-Lambert and Macenko use)."""
    return -np.log((rgb.astype(np.float64) + 1.0) / io)


def fit_macenko(rgb: np.ndarray, io: float = IO, alpha: float = ALPHA, beta: float = BETA) -> MacenkoStains | None:
    """Stain vectors and maximum concentrations of a tile; None if it has too little tissue."""
    od = optical_density(rgb.reshape(-1, 3), io)
    tissue = od[np.all(od > beta, axis=1)]
    if len(tissue) < MIN_TISSUE_PIXELS:
        return None
    _, eigenvectors = np.linalg.eigh(np.cov(tissue.T))
    plane = eigenvectors[:, 1:3]  # the two largest eigenvalues
    projected = tissue @ plane
    angles = np.arctan2(projected[:, 1], projected[:, 0])
    low, high = np.percentile(angles, alpha), np.percentile(angles, 100 - alpha)
    v_low = plane @ np.array([np.cos(low), np.sin(low)])
    v_high = plane @ np.array([np.cos(high), np.sin(high)])
    # haematoxylin absorbs more red than eosin: it is the vector with the larger first component
    matrix = np.array([v_low, v_high]).T if v_low[0] > v_high[0] else np.array([v_high, v_low]).T
    matrix *= np.sign(matrix.sum(axis=0))  # optical densities are positive
    matrix /= np.linalg.norm(matrix, axis=0)
    concentrations = np.linalg.lstsq(matrix, od.T, rcond=None)[0]
    max_concentrations = np.percentile(concentrations, 99, axis=1)
    return MacenkoStains(matrix, max_concentrations)


def macenko_normalise(
    rgb: np.ndarray,
    reference: MacenkoStains | None = None,
    io: float = IO,
    alpha: float = ALPHA,
    beta: float = BETA,
) -> NormalisedTile:
    """Re-render a tile with the reference's stain vectors and concentration range."""
    reference = reference or MacenkoStains(REFERENCE_STAIN_MATRIX, REFERENCE_MAX_CONCENTRATIONS)
    stains = fit_macenko(rgb, io, alpha, beta)
    if stains is None:
        return NormalisedTile(rgb, False, "too little tissue to estimate stains (background tile)")
    od = optical_density(rgb.reshape(-1, 3), io)
    concentrations = np.linalg.lstsq(stains.matrix, od.T, rcond=None)[0]
    concentrations *= (reference.max_concentrations / stains.max_concentrations)[:, None]
    out = io * np.exp(-reference.matrix @ concentrations)
    out = np.clip(np.rint(out.T), 0, 255).astype(np.uint8).reshape(rgb.shape)
    return NormalisedTile(out, True)
