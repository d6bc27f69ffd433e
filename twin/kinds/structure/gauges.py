"""Observation operators of the structure model: strain gauges, displacement sensors (DIC patches), accelerometers.

Equations
---------
Strain gauge at point ``x`` with unit direction ``n`` (angle ``theta`` from the x axis) [1]::

    eps_nn = n_x^2 eps_xx + n_y^2 eps_yy + n_x n_y gamma_xy,    eps = B(xi, eta) u_e

with ``B`` the Q1 strain-displacement matrix of the element containing ``x`` at its local coordinates (the strain is
piecewise bilinear-derivative, exactly what the model computes), so the operator is linear in the state.

Displacement sensor (digital image correlation patch) [m]: the mean of one displacement component over a rectangular
patch, evaluated as the average of the bilinear interpolant at ``samples x samples`` points in the patch (a point
sensor is a patch of zero size).

Accelerometer (dynamic mode) [m/s^2], from the semi-discrete equation of motion at time ``t``::

    a = M^{-1} (f(t) - alpha M v - K (u + beta v)),    y = P a

with ``P`` interpolation in the sensor direction. The operator is affine in the state; its linearisation drops
``f(t)``: ``H' = -P M^{-1} [K, alpha M + beta K]``, with adjoint ``-[K; alpha M + beta K] M^{-1} P^T`` (both symmetric).
The mass solve uses CG + Jacobi (the consistent mass is well conditioned), under the options prefix
``<component>_accel_``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import scipy.sparse as sp
from petsc4py import PETSc

from twin.core.errors import ObservationError
from twin.core.petsc import set_from_options
from twin.kinds.structure.elements import CORNERS, strain_matrix
from twin.observations.base import (
    LinearObservationOperator,
    ObservationOperator,
    interpolation_matrix,
    natural_index,
)


def _points(points, name: str) -> np.ndarray:
    p = np.atleast_2d(np.asarray(points, dtype=float))
    if p.ndim != 2 or p.shape[1] != 2 or not np.all(np.isfinite(p)):
        raise ObservationError(f"observation operator '{name}': points must be finite (x, y) pairs, got shape "
                               f"{p.shape}")
    return p


def _check_inside(grid, points: np.ndarray, name: str) -> None:
    inside = grid.contains(points)
    if not inside.all():
        bad = int(np.flatnonzero(~inside)[0])
        raise ObservationError(f"observation operator '{name}': point {points[bad].tolist()} lies outside the "
                               f"structure {[list(e) for e in grid.extent]}")


def strain_gauge_matrix(grid, points, angles) -> sp.csr_matrix:
    """Sparse rows (natural ordering of ``grid``) giving the normal strain at ``points`` along ``angles`` [rad].

    ``grid`` is the model's state grid (node-centred, displacement in components 0 and 1).
    """
    points = _points(points, "strain gauges")
    _check_inside(grid, points, "strain gauges")
    m = points.shape[0]
    angles = np.broadcast_to(np.asarray(angles, dtype=float), (m,))
    hx, hy = grid.spacing
    (x0, _), (y0, _) = grid.extent
    nx, ny = grid.shape
    sx, sy = (points[:, 0] - x0) / hx, (points[:, 1] - y0) / hy
    i = np.clip(np.floor(sx).astype(np.int64), 0, nx - 2)
    j = np.clip(np.floor(sy).astype(np.int64), 0, ny - 2)
    xi, eta = 2.0 * (sx - i) - 1.0, 2.0 * (sy - j) - 1.0
    B = strain_matrix(xi, eta, hx, hy)  # (m, 3, 8)
    c, s = np.cos(angles), np.sin(angles)
    w = np.stack([c * c, s * s, c * s], axis=1)  # (m, 3)
    coeff = np.einsum("mk,mka->ma", w, B)  # (m, 8)
    cols = np.empty((m, 8), dtype=np.int64)
    for a, (di, dj) in enumerate(CORNERS):
        for comp in (0, 1):
            cols[:, 2 * a + comp] = natural_index(grid, (i + di, j + dj), comp)
    rows = np.repeat(np.arange(m), 8)
    H = sp.csr_matrix((coeff.ravel(), (rows, cols.ravel())), shape=(m, grid.size * grid.dof))
    H.sum_duplicates()
    return H


def displacement_sensor_matrix(grid, centres, component: Sequence[int] | int, half_sizes=0.0,
                               samples: int = 5) -> sp.csr_matrix:
    """Sparse rows giving the mean of displacement ``component`` (0: x, 1: y) over rectangular patches.

    ``half_sizes`` is one ``(hx, hy)`` pair or one per patch [m]; 0 gives point sensors.
    """
    centres = _points(centres, "displacement sensors")
    m = centres.shape[0]
    comp = np.broadcast_to(np.asarray(component, dtype=int), (m,))
    if np.any((comp < 0) | (comp > 1)):
        raise ObservationError("observation operator 'displacement sensors': component must be 0 (x) or 1 (y)")
    half = np.broadcast_to(np.asarray(half_sizes, dtype=float), (m, 2)) if np.ndim(half_sizes) < 2 else \
        np.asarray(half_sizes, dtype=float)
    if half.shape != (m, 2) or np.any(half < 0):
        raise ObservationError("observation operator 'displacement sensors': half_sizes must be non-negative, one "
                               "(hx, hy) pair or one per sensor")
    for corner in (centres - half, centres + half):
        _check_inside(grid, corner, "displacement sensors (patch corners)")
    k = samples if np.any(half > 0) else 1
    offsets = np.linspace(-1.0, 1.0, k) if k > 1 else np.zeros(1)
    ox, oy = np.meshgrid(offsets, offsets, indexing="ij")
    ox, oy = ox.ravel(), oy.ravel()
    blocks = []
    for c in (0, 1):
        sel = np.flatnonzero(comp == c)
        if sel.size == 0:
            continue
        pts = np.stack([(centres[sel, 0:1] + half[sel, 0:1] * ox).ravel(),
                        (centres[sel, 1:2] + half[sel, 1:2] * oy).ravel()], axis=1)
        Hs = interpolation_matrix(grid, pts, component=c)
        avg = sp.kron(sp.identity(sel.size), np.full((1, ox.size), 1.0 / ox.size))
        blocks.append((sel, sp.csr_matrix(avg @ Hs)))
    out = sp.lil_matrix((m, grid.size * grid.dof))
    for sel, H in blocks:
        out[sel] = H
    return sp.csr_matrix(out)


class StrainGauges(LinearObservationOperator):
    """Strain gauges at ``points`` measuring the normal strain along ``angles`` [rad from the x axis] [1]."""

    name = "strain_gauges"

    def __init__(self, grid, points, angles, error_std, name: str | None = None):
        pts = _points(points, name or self.name)
        super().__init__(grid, strain_gauge_matrix(grid, pts, angles), error_std, locations=pts, name=name)


class DisplacementSensors(LinearObservationOperator):
    """Displacement sensors (DIC patches) measuring the patch-mean of one displacement component [m]."""

    name = "displacement_sensors"

    def __init__(self, grid, centres, component, error_std, half_sizes=0.0, samples: int = 5,
                 name: str | None = None):
        pts = _points(centres, name or self.name)
        H = displacement_sensor_matrix(grid, pts, component, half_sizes, samples)
        super().__init__(grid, H, error_std, locations=pts, name=name)


class Accelerometers(ObservationOperator):
    """Accelerometers at ``points`` measuring the acceleration along ``angles`` [rad] at time ``time`` [m/s^2].

    Parameters
    ----------
    model : StructureModel
        A dynamic-mode structure model (its operators and loads are used).
    points : array (m, 2)
    angles : float or array (m,)
    error_std : float or array
    time : float
        Time at which the load ``f(t)`` enters; change with :meth:`set_time`.
    """

    name = "accelerometers"

    def __init__(self, model, points, angles, error_std, time: float = 0.0, name: str | None = None):
        pts = _points(points, name or self.name)
        super().__init__(error_std, pts.shape[0], locations=pts, name=name)
        if model.mode != "dynamic":
            raise ObservationError(f"observation operator '{self.name}': accelerometers need a dynamic-mode "
                                   f"structure model, '{model.name}' is {model.mode}")
        self.model = model
        self.time = float(time)
        mesh = model.mesh
        _check_inside(mesh.disp, pts, self.name)
        angles = np.broadcast_to(np.asarray(angles, dtype=float), (pts.shape[0],))
        P = (sp.diags(np.cos(angles)) @ interpolation_matrix(mesh.disp, pts, 0)
             + sp.diags(np.sin(angles)) @ interpolation_matrix(mesh.disp, pts, 1))
        self.sampler = LinearObservationOperator(mesh.disp, P, self.error_std, pts, name=self.name)
        self.M = mesh.disp.da.createMatrix()
        model.ops.mass(self.M, model.ops.m_diag)
        ksp = PETSc.KSP().create(comm=mesh.disp.da.getComm())
        ksp.setOptionsPrefix(f"{model.options_prefix}accel_")
        ksp.setOperators(self.M)
        ksp.setType(PETSc.KSP.Type.CG)
        ksp.getPC().setType(PETSc.PC.Type.JACOBI)
        ksp.setTolerances(rtol=1e-12, atol=1e-50, max_it=1000)
        set_from_options(ksp)
        self.ksp = ksp
        self._u, self._v, self._r, self._a, self._w = (mesh.disp.create_global() for _ in range(5))

    def set_time(self, t: float) -> None:
        self.time = float(t)

    def _split(self, state: PETSc.Vec) -> None:
        grid, disp = self.model.grid, self.model.mesh.disp
        x = grid.owned_array(state, readonly=True)
        disp.owned_array(self._u)[...] = x[..., :2]
        disp.owned_array(self._v)[...] = x[..., 2:]

    def _mass_solve(self, rhs: PETSc.Vec, out: PETSc.Vec) -> None:
        out.set(0.0)
        self.ksp.solve(rhs, out)
        if self.ksp.getConvergedReason() < 0:
            raise ObservationError(f"observation operator '{self.name}': mass solve failed "
                                   f"(reason {self.ksp.getConvergedReason()})")

    def acceleration(self, state: PETSc.Vec, out: PETSc.Vec) -> PETSc.Vec:
        """Nodal accelerations ``M^{-1}(f - alpha M v - K (u + beta v))`` on ``mesh.disp``. Collective."""
        model, ops = self.model, self.model.ops
        self._split(state)
        model.load_vector(self.time, self._r)
        self._w.set(0.0)
        self._w.axpy(1.0, self._u)
        self._w.axpy(ops.beta, self._v)
        K = model.stiffness()
        K.mult(self._w, self._a)
        self._r.axpy(-1.0, self._a)
        self.M.mult(self._v, self._a)
        self._r.axpy(-ops.alpha, self._a)
        self._mass_solve(self._r, out)
        return out

    def apply(self, state: PETSc.Vec) -> np.ndarray:
        a = self.model.mesh.disp.create_global()
        try:
            return self.sampler.apply(self.acceleration(state, a))
        finally:
            a.destroy()

    def apply_adjoint(self, state: PETSc.Vec, dy: np.ndarray, out: PETSc.Vec) -> None:
        ops, disp = self.model.ops, self.model.mesh.disp
        self._r.set(0.0)
        self.sampler.apply_adjoint(self._r, dy, self._r)
        self._mass_solve(self._r, self._w)
        K = self.model.stiffness()
        K.mult(self._w, self._a)  # K w
        self.M.mult(self._w, self._u)  # M w
        o = self.model.grid.owned_array(out)
        Kw = disp.owned_array(self._a, readonly=True)
        Mw = disp.owned_array(self._u, readonly=True)
        o[..., :2] -= Kw
        o[..., 2:] -= ops.alpha * Mw + ops.beta * Kw

    def destroy(self) -> None:
        self.sampler.destroy()
        self.ksp.destroy()
        self.M.destroy()
        for v in (self._u, self._v, self._r, self._a, self._w):
            v.destroy()


def build_strain_gauges(spec, model, i: int, name: str):
    """The ``strain_gauges`` network of ``assimilation.observations`` on a structure model (see
    :class:`twin.kinds.structure.config.StrainGaugesNetwork`)."""
    from twin.observations.networks import from_operator, positions

    pts = positions(spec.points, spec, model, i)
    angles = np.deg2rad(np.broadcast_to(np.asarray(spec.angles, dtype=float), (len(pts),)))
    return from_operator(StrainGauges(model.grid, pts, angles, spec.error_std, name=name), name)
