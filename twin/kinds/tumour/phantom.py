"""Synthetic brain-like tissue for the tumour model: a tissue mask and a white-matter fraction on the model grid.

The diffusivity of the tumour model is

    D(x) = D_white w(x) + D_grey (1 - w(x))   inside the tissue mask,

with ``w`` the white-matter fraction in [0, 1] (mm^2/day). The phantom is a head-like ellipse (ellipsoid in 3-D) of
tissue: an outer ribbon of grey matter (cortex) around a white-matter core whose boundary is wavy like gyri, and two
ventricles (cerebrospinal fluid) that are not tissue. Cells outside the mask are inactive: the density there stays 0
and no flux crosses the tissue boundary. Coordinates and lengths are in mm.

The fields are evaluated on the whole grid on every rank (a few arrays of the global size): the checks that the mask is
not empty and that the grid contains the phantom need the whole picture, and the face conductances of the ghost layer
then need no communication.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass
class Tissue:
    """Tissue on a grid (whole-grid arrays in natural C order, shape ``grid.shape[::-1]``).

    Attributes
    ----------
    mask : ndarray of bool
        Active (tissue) cells.
    white : ndarray of float
        White-matter fraction ``w`` in [0, 1]; 0 outside the mask.
    """

    mask: np.ndarray
    white: np.ndarray

    def __post_init__(self):
        self.mask = np.asarray(self.mask, dtype=bool)
        self.white = np.where(self.mask, np.clip(np.asarray(self.white, dtype=float), 0.0, 1.0), 0.0)
        if self.white.shape != self.mask.shape:
            raise ValueError(f"white-matter fraction has shape {self.white.shape}, mask has {self.mask.shape}")


def box_tissue(shape_c: Sequence[int], white: float = 1.0) -> Tissue:
    """Every cell is tissue with a uniform white-matter fraction (used for verification and strip geometries)."""
    shape_c = tuple(int(n) for n in shape_c)
    return Tissue(np.ones(shape_c, dtype=bool), np.full(shape_c, float(white)))


def brain_phantom(mesh: Sequence[np.ndarray], extent: Sequence[Sequence[float]], *,
                  center: Sequence[float] | None = None, semi_axes: Sequence[float] | None = None,
                  white_radius: float = 0.7, smoothing: float = 1.0, ventricles: bool = True) -> Tissue:
    """A brain-like phantom.

    Parameters
    ----------
    mesh : sequence of ndarray
        Cell-centre coordinates ``(X, Y[, Z])`` in mm (arrays in C order, e.g. ``Grid.mesh()``).
    extent : sequence of (float, float)
        The grid box in mm, PETSc order; the phantom must fit inside it.
    center : sequence of float, optional
        Centre in mm (default: the centre of the box).
    semi_axes : sequence of float, optional
        Semi-axes of the head ellipse in mm (default: 45 % of the box along each axis).
    white_radius : float
        Mean radius of the white-matter core relative to the ellipse (0 < r < 1).
    smoothing : float
        Width in mm of the white/grey transition (a tanh profile keeps ``D`` smooth for the gradient).
    ventricles : bool
        Carve two ventricles (non-tissue) near the centre.

    Raises
    ------
    ValueError
        If the ellipse does not fit inside the grid box, or an argument is out of range.
    """
    dim = len(mesh)
    lo = np.array([e[0] for e in extent], dtype=float)
    hi = np.array([e[1] for e in extent], dtype=float)
    c = 0.5 * (lo + hi) if center is None else np.asarray(center, dtype=float)
    s = 0.45 * (hi - lo) if semi_axes is None else np.asarray(semi_axes, dtype=float)
    if c.shape != (dim,) or s.shape != (dim,):
        raise ValueError(f"phantom centre and semi-axes need {dim} entries, got {c.tolist()} and {s.tolist()}")
    if np.any(s <= 0) or not 0 < white_radius < 1 or smoothing <= 0:
        raise ValueError("phantom semi-axes and smoothing must be positive and 0 < white_radius < 1")
    if np.any(c - s < lo) or np.any(c + s > hi):
        raise ValueError(f"the phantom (centre {c.tolist()} mm, semi-axes {s.tolist()} mm) does not fit in the grid "
                         f"box {[list(e) for e in extent]} mm: enlarge the grid extent or shrink the phantom")
    rel = [(x - ci) / si for x, ci, si in zip(mesh, c, s)]
    r = np.sqrt(sum(q * q for q in rel))
    mask = r < 1.0
    # Gyri: the white-matter boundary oscillates with the in-plane angle (and the polar angle in 3-D).
    phi = np.arctan2(rel[1], rel[0])
    wavy = 1.0 + 0.08 * np.sin(6.0 * phi)
    if dim == 3:
        polar = np.arccos(np.clip(rel[2] / np.maximum(r, 1e-12), -1.0, 1.0))
        wavy = wavy * (1.0 + 0.05 * np.cos(4.0 * polar))
    width = smoothing / float(s.min())
    white = 0.5 * (1.0 - np.tanh((r - white_radius * wavy) / width))
    if ventricles:
        vs = np.array([0.08, 0.25, 0.2][:dim])
        for side in (-1.0, 1.0):
            off = np.zeros(dim)
            off[0] = 0.15 * side
            rv = np.sqrt(sum(((q - o) / v) ** 2 for q, o, v in zip(rel, off, vs)))
            mask &= rv >= 1.0
    return Tissue(mask, white)
