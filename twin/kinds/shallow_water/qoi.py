"""Quantities of interest of the shallow-water model (all collective over the model's communicator).

* ``mass`` = ``sum h dx dy`` [m^3] and ``tracer_mass`` = ``sum phi dx dy`` [m^3]: conserved to round-off.
* ``energy`` = ``sum (avg_x(h) u^2/2 + avg_y(h) v^2/2 + g h (h/2 + b)) dx dy`` [m^5/s^2] (per unit density):
  conserved by the semi-discrete scheme without drag and forcing.
* ``enstrophy`` = ``sum h_corner q^2 / 2 dx dy`` [m/s^2]: potential enstrophy.
* ``area_above_threshold`` [m^2]: area where the free surface ``h + b`` exceeds the configured threshold (a height
  above the bottom datum, like ``mean_depth``).
* ``eta_at_<site>`` [m]: the sea-level anomaly ``eta = h + b - H`` at a named site, the free surface's displacement
  from its rest level ``H`` (``mean_depth``; the surface at rest is flat at ``H`` over any topography ``b``), which is
  what a forecaster reads (a warning level "4 m above the mean" is 4 m, not 1004 m of layer depth);
  ``tracer_at_<site>`` [1]: the tracer concentration ``phi / h`` there; ``u_at_<site>`` and ``v_at_<site>`` [m/s]:
  the wind there, interpolated from the C-grid faces where ``u`` and ``v`` live. All by bilinear interpolation.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

from twin.core.grid import Grid, multilinear_weights
from twin.kinds.shallow_water.kernel import local_energy, local_enstrophy
from twin.models.base import QoI

if TYPE_CHECKING:
    from twin.kinds.shallow_water.model import ShallowWater


def _sum(grid: Grid, values) -> np.ndarray:
    local = np.ascontiguousarray(np.atleast_1d(np.asarray(values, dtype=float)))
    out = np.empty_like(local)
    grid.comm_mpi().Allreduce(local, out, op=MPI.SUM)
    return out


def bilinear_at_centres(grid: Grid, owned: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear interpolation (:func:`~twin.core.grid.multilinear_weights`) of a cell-centred field (owned block
    ``a[j, i]``) at points ``(m, 2)`` [m] of the periodic grid.

    Every rank adds the corner values it owns; the sum over ranks is the interpolated value.
    """
    points = np.atleast_2d(np.asarray(points, dtype=float))
    (xs, xe), (ys, ye) = grid.owned
    total = np.zeros(points.shape[0])
    index, weights = multilinear_weights(grid, points)
    for (i, j), w in zip(index, weights):
        mine = (i >= xs) & (i < xe) & (j >= ys) & (j < ye)
        total[mine] += w[mine] * owned[j[mine] - ys, i[mine] - xs]
    return _sum(grid, total)


def quantities(model: "ShallowWater", state: PETSc.Vec) -> dict[str, QoI]:
    """All quantities of interest of ``state``."""
    grid = model.grid
    area = grid.cell_volume
    p = model.parameter_values()
    fields = model.ghosted_fields(state)
    a = grid.owned_array(state, readonly=True)
    eta = a[..., 0] + model.geometry.topography[1:-1, 1:-1]
    local = [a[..., 0].sum(), local_energy(fields, model.geometry, p["gravity"]),
             local_enstrophy(fields, model.geometry, p["f0"], p["beta"]),
             a[..., 3].sum() if grid.dof > 3 else 0.0,
             np.count_nonzero(eta > model.threshold) if model.threshold is not None else 0.0]
    mass, energy, enstrophy, tracer, above = _sum(grid, local) * area
    out = {"mass": QoI(mass, "m^3", "total mass (volume) of the layer"),
           "energy": QoI(energy, "m^5/s^2", "total energy per unit density"),
           "enstrophy": QoI(enstrophy, "m/s^2", "total potential enstrophy")}
    if grid.dof > 3:
        out["tracer_mass"] = QoI(tracer, "m^3", "total tracer amount (integral of h c)")
    if model.threshold is not None:
        out["area_above_threshold"] = QoI(above, "m^2", f"area where eta > {model.threshold:g} m")
    if model.sites:
        names = list(model.sites)
        pts = np.array([model.sites[n] for n in names])
        # the anomaly is taken after the interpolation, whose weights sum to 1: eta - H to round-off of 1e3 m
        eta_s = bilinear_at_centres(grid, eta, pts) - model.mean_depth
        for n, v in zip(names, eta_s):
            out[f"eta_at_{n}"] = QoI(float(v), "m", f"sea-level anomaly at {n} (free surface minus the rest level "
                                                    f"{model.mean_depth:g} m)")
        # u sits half a cell west of the centre, v half a cell south: shift the points onto the centre lattice
        dx, dy = grid.spacing
        u_s = bilinear_at_centres(grid, a[..., 1], pts + [0.5 * dx, 0.0])
        v_s = bilinear_at_centres(grid, a[..., 2], pts + [0.0, 0.5 * dy])
        for n, uv, vv in zip(names, u_s, v_s):
            out[f"u_at_{n}"] = QoI(float(uv), "m/s", f"eastward wind at {n}")
            out[f"v_at_{n}"] = QoI(float(vv), "m/s", f"northward wind at {n}")
        if grid.dof > 3:
            h_s = bilinear_at_centres(grid, a[..., 0], pts)
            phi_s = bilinear_at_centres(grid, a[..., 3], pts)
            for n, hv, pv in zip(names, h_s, phi_s):
                out[f"tracer_at_{n}"] = QoI(float(pv / hv), "1", f"tracer concentration at {n}")
    return out
