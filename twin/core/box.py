"""Boxes: the rectangular domains of twin's grids, as ``[(lo, hi), ...]`` per axis in length units.

Kept apart from :mod:`twin.core.grid` so that the configuration layer can check positions against a domain at
``twin validate`` without importing PETSc.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def outside_box(points: np.ndarray, extent: Sequence[tuple[float, float]]) -> np.ndarray:
    """Boolean mask: which of the points ``(m, dim)`` lie outside the closed box ``extent`` ``[(lo, hi), ...]``, or
    are not finite.

    The box is widened by ``1e-12`` of each side's length (at least ``1e-12``): a position on the boundary that a unit
    conversion moved by round-off (km to m) is inside. The one rule for the configured networks (checked at
    ``twin validate``), the point operators and the quality control of observation files.
    """
    p = np.atleast_2d(np.asarray(points, dtype=float))
    lo = np.array([a for a, _ in extent], dtype=float)
    hi = np.array([b for _, b in extent], dtype=float)
    eps = 1e-12 * np.maximum(1.0, np.abs(hi - lo))
    with np.errstate(invalid="ignore"):
        return np.any((p < lo - eps) | (p > hi + eps) | ~np.isfinite(p), axis=1)
