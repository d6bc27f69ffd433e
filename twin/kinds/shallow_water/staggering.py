"""Where the shallow-water unknowns sit on the Arakawa C-grid, and their coordinates.

The model grid is a cell-centred :class:`~twin.core.grid.Grid` with ``dof`` 3 (``h, u, v``) or 4 (``+ phi``). On cell
``(j, i)`` (C order) ``h`` and ``phi`` sit at the centre, ``u`` on the west face and ``v`` on the south face. Offsets
below are in cell widths from the cell centre, PETSc order ``(x, y)``; lengths are in metres.
"""

from __future__ import annotations

import numpy as np

from twin.core.grid import Grid

#: state component names, their index in a grid point's dof block, and units
COMPONENTS = ("h", "u", "v", "tracer")
UNITS = ("m", "m/s", "m/s", "m")
#: offset of each component from the cell centre, in cell widths (x, y)
OFFSETS = {"h": (0.0, 0.0), "u": (-0.5, 0.0), "v": (0.0, -0.5), "tracer": (0.0, 0.0), "corner": (-0.5, -0.5)}


def component_index(name: str) -> int:
    """Index of a state component in the dof block (``h`` 0, ``u`` 1, ``v`` 2, ``tracer`` 3)."""
    return COMPONENTS.index(name)


def coordinates(grid: Grid, kind: str, owned: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """``(X, Y)`` of the ``kind`` points (a component name or ``"corner"``) of the owned block (or of the whole grid).

    Arrays have C-order shape ``(ny, nx)``; coordinates lie in ``[lo, hi)`` of each axis.
    """
    ox, oy = OFFSETS[kind]
    X, Y = grid.owned_mesh() if owned else grid.mesh()
    dx, dy = grid.spacing
    return X + ox * dx, Y + oy * dy


def periodic_delta(a: np.ndarray, b: float, length: float) -> np.ndarray:
    """The signed shortest distance ``a - b`` on a periodic axis of ``length``."""
    d = np.asarray(a) - b
    return d - length * np.round(d / length)


def wrap(points: np.ndarray, grid: Grid) -> np.ndarray:
    """Points (shape ``(m, 2)``) mapped into ``[lo, hi)`` along each periodic axis."""
    out = np.array(points, dtype=float, copy=True)
    for a, ((lo, hi), p) in enumerate(zip(grid.extent, grid.periodic)):
        if p:
            out[:, a] = lo + np.mod(out[:, a] - lo, hi - lo)
    return out
