"""Reverse mode of the shallow-water tendencies: ``(dF/dx)^T lambda`` and ``(dF/dp)^T lambda`` without a matrix.

TSAdjoint of an explicit Runge-Kutta method needs, at every stage of every step, only the products of the transposed
Jacobians with a vector (``MatMultTranspose`` of the RHS Jacobian and of the parameter Jacobian). Assembling ``dF/dx``
(:mod:`.jacobian`: 9 forward-mode directions per input component, then ``MatSetValues``) cost ~20 forward RHS
evaluations per stage, which made a 4D-Var gradient ~20 forward runs. Here the Jacobians are PETSc shell matrices:
the Jacobian callbacks keep the stage state and ``multTranspose`` runs :func:`tendency_vjp`, the reverse-mode
(vector-Jacobian product) sweep of :func:`~twin.models.shallow_water.kernel.tendency`, which costs about two RHS
evaluations and gives the parameter part in the same sweep.

Why hand-written: the kernel is a fixed, short sequence of array operations (windows, sums, products, one
quotient), so its reverse sweep is written statement by statement in reverse order (each forward statement
``a = f(b, c)`` becomes ``Lb += (df/db)^T La``, ``Lc += (df/dc)^T La``); a general reverse-mode tape would cost
more Python overhead per stage than the kernel itself. It cannot drift from the kernel unnoticed: a test checks
``tendency_vjp`` against the assembled Jacobian (itself checked against forward mode and finite differences) to
round-off, and the 4D-Var Taylor tests check the whole adjoint.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

from twin.models.shallow_water.jacobian import PARAMETER_NAMES
from twin.models.shallow_water.kernel import Geometry


class _Ghosted:
    """Adjoint accumulators on the ghosted block with the kernel's window convention (ghost width 1)."""

    def __init__(self, shape: tuple[int, int]):
        self.a = np.zeros(shape)
        self.ny2, self.nx2 = shape

    def add(self, j0: int, j1: int, i0: int, i1: int, value) -> None:
        self.a[1 + j0:self.ny2 - 1 + j1, 1 + i0:self.nx2 - 1 + i1] += value


def _w(a: np.ndarray, j0: int, j1: int, i0: int, i1: int) -> np.ndarray:
    ny2, nx2 = a.shape
    return a[1 + j0:ny2 - 1 + j1, 1 + i0:nx2 - 1 + i1]


def tendency_vjp(fields: list[np.ndarray], geo: Geometry, p: dict, lam: list[np.ndarray]
                 ) -> tuple[list[np.ndarray], dict[str, float]]:
    """``lambda^T dF/dx`` on the ghosted block and this block's part of ``lambda^T dF/dp``.

    Parameters
    ----------
    fields : list of ndarray
        Ghosted ``h, u, v`` (and ``phi``), as for :func:`~twin.models.shallow_water.kernel.tendency`.
    geo : Geometry
    p : dict
        ``gravity, f0, beta, drag, forcing_amplitude`` (floats).
    lam : list of ndarray
        ``lambda`` per component on the owned block, shape ``(ny, nx)``.

    Returns
    -------
    list of ndarray
        Adjoint per component on the ghosted block (ghost entries belong to the neighbours' points: add them with a
        local-to-global ``ADD_VALUES``).
    dict
        This block's sums ``lambda^T dF/dp`` for :data:`PARAMETER_NAMES` (reduce over ranks).
    """
    h, u, v = fields[:3]
    dx, dy = geo.dx, geo.dy
    g = p["gravity"]
    Ldh, Ldu, Ldv = lam[:3]
    shape = h.shape
    Lh, Lu, Lv = _Ghosted(shape), _Ghosted(shape), _Ghosted(shape)
    # forward values needed by the reverse sweep (same statements as the kernel)
    h00 = _w(h, -1, 0, -1, 0)
    hx = 0.5 * (h00 + _w(h, -1, 0, 0, 1))
    Ua = _w(u, -1, 0, 0, 1)
    U = hx * Ua
    hy = 0.5 * (h00 + _w(h, 0, 1, -1, 0))
    Va = _w(v, 0, 1, -1, 0)
    V = hy * Va
    zeta = (_w(v, 0, 1, 0, 1) - _w(v, 0, 1, -1, 0)) / dx - (_w(u, 0, 1, 0, 1) - Ua) / dy
    hc = 0.25 * (_w(h, 0, 1, 0, 1) + _w(h, 0, 1, -1, 0) + _w(h, -1, 0, 0, 1) + h00)
    q = (p["f0"] + p["beta"] * geo.y_corner + zeta) / hc
    u0, v0 = _w(u, -1, 0, -1, 0), _w(v, -1, 0, -1, 0)
    Vavg = 0.5 * (V[:, :-1] + V[:, 1:])
    Uavg = 0.5 * (U[:-1, :] + U[1:, :])

    grads = {"drag": -float(np.sum(Ldu * _w(u, 0, 0, 0, 0)) + np.sum(Ldv * _w(v, 0, 0, 0, 0))),
             "forcing_amplitude": float(np.sum(Ldu * geo.forcing_shape))}
    Lu.add(0, 0, 0, 0, -p["drag"] * Ldu)
    Lv.add(0, 0, 0, 0, -p["drag"] * Ldv)
    # du = avg_y(qv) - dx(B);  dv = -avg_x(qu) - dy(B)
    n1, m1 = U.shape
    Lqv = np.zeros((n1, m1 - 1))
    Lqv[:-1] += 0.5 * Ldu
    Lqv[1:] += 0.5 * Ldu
    LB = np.zeros((n1, m1))
    LB[1:, 1:] -= Ldu / dx + Ldv / dy
    LB[1:, :-1] += Ldu / dx
    LB[:-1, 1:] += Ldv / dy
    Lqu = np.zeros((n1 - 1, m1))
    Lqu[:, :-1] -= 0.5 * Ldv
    Lqu[:, 1:] -= 0.5 * Ldv
    # qu = q[:-1] avg_y(U);  qv = q[:, :-1] avg_x(V)
    Lq = np.zeros((n1, m1))
    Lq[:-1, :] += Lqu * Uavg
    Lq[:, :-1] += Lqv * Vavg
    LUavg = Lqu * q[:-1, :]
    LVavg = Lqv * q[:, :-1]
    LU = np.zeros((n1, m1))
    LU[:-1] += 0.5 * LUavg
    LU[1:] += 0.5 * LUavg
    LV = np.zeros((n1, m1))
    LV[:, :-1] += 0.5 * LVavg
    LV[:, 1:] += 0.5 * LVavg
    # dh = -(dx(U) + dy(V))
    LU[1:, 1:] -= Ldh / dx
    LU[1:, :-1] += Ldh / dx
    LV[1:, 1:] -= Ldh / dy
    LV[:-1, 1:] += Ldh / dy
    Lphi = None
    if len(fields) > 3:
        phi = fields[3]
        Ldphi = lam[3]
        c = phi / h
        cx = 0.5 * (_w(c, -1, 0, -1, 0) + _w(c, -1, 0, 0, 1))
        cy = 0.5 * (_w(c, -1, 0, -1, 0) + _w(c, 0, 1, -1, 0))
        Lcu = np.zeros((n1, m1))
        Lcu[1:, 1:] -= Ldphi / dx
        Lcu[1:, :-1] += Ldphi / dx
        Lcv = np.zeros((n1, m1))
        Lcv[1:, 1:] -= Ldphi / dy
        Lcv[:-1, 1:] += Ldphi / dy
        LU += Lcu * cx
        LV += Lcv * cy
        Lcx, Lcy = Lcu * U, Lcv * V
        Lc = _Ghosted(shape)
        Lc.add(-1, 0, -1, 0, 0.5 * (Lcx + Lcy))
        Lc.add(-1, 0, 0, 1, 0.5 * Lcx)
        Lc.add(0, 1, -1, 0, 0.5 * Lcy)
        Lphi = Lc.a / h
        Lh.a -= Lc.a * c / h
    # B = g (h + b) + (u0^2 + u1^2 + v0^2 + v1^2) / 4
    grads["gravity"] = float(np.sum(LB * (h00 + geo.topography[:-1, :-1])))
    Lh.add(-1, 0, -1, 0, g * LB)
    Lu.add(-1, 0, -1, 0, 0.5 * LB * u0)
    Lu.add(-1, 0, 0, 1, 0.5 * LB * Ua)
    Lv.add(-1, 0, -1, 0, 0.5 * LB * v0)
    Lv.add(0, 1, -1, 0, 0.5 * LB * Va)
    # q = (f0 + beta y + zeta) / hc
    Lnum = Lq / hc
    grads["f0"] = float(np.sum(Lnum))
    grads["beta"] = float(np.sum(Lnum * geo.y_corner))
    Lhc = -0.25 * Lq * q / hc
    for j0, j1, i0, i1 in ((0, 1, 0, 1), (0, 1, -1, 0), (-1, 0, 0, 1), (-1, 0, -1, 0)):
        Lh.add(j0, j1, i0, i1, Lhc)
    Lv.add(0, 1, 0, 1, Lnum / dx)
    Lv.add(0, 1, -1, 0, -Lnum / dx)
    Lu.add(0, 1, 0, 1, -Lnum / dy)
    Lu.add(-1, 0, 0, 1, Lnum / dy)
    # V = avg_y(h) v;  U = avg_x(h) u
    LVh = 0.5 * LV * Va
    Lv.add(0, 1, -1, 0, LV * hy)
    Lh.add(-1, 0, -1, 0, LVh)
    Lh.add(0, 1, -1, 0, LVh)
    LUh = 0.5 * LU * Ua
    Lu.add(-1, 0, 0, 1, LU * hx)
    Lh.add(-1, 0, -1, 0, LUh)
    Lh.add(-1, 0, 0, 1, LUh)
    out = [Lh.a, Lu.a, Lv.a] + ([Lphi] if Lphi is not None else [])
    return out, grads


class ShellJacobians:
    """``dF/dx`` and ``dF/dp`` of a :class:`~twin.models.shallow_water.model.ShallowWater` model as PETSc shell
    matrices that only multiply transposed (what TSAdjoint of explicit RK uses), by :func:`tendency_vjp`.

    The TS Jacobian callbacks (:meth:`rhs_jacobian`, :meth:`rhs_jacobian_p`) keep the stage state's ghosted fields.
    A transposed product with ``dF/dx`` also computes the parameter part for the same vector and keeps it, so the
    product with ``dF/dp`` that TSAdjoint asks for next, at the same state and vector, costs no second sweep.
    """

    def __init__(self, model):
        self.model = model
        grid = model.grid
        comm = grid.da.getComm()
        n_local = grid.local_shape[0] * grid.local_shape[1] * grid.dof
        n_global = grid.size * grid.dof
        self._loc = grid.create_local()
        self._fields: list[np.ndarray] | None = None
        self._state: np.ndarray | None = None
        self._cache: tuple[np.ndarray, dict[str, float]] | None = None
        self.J = PETSc.Mat().createPython(((n_local, n_global), (n_local, n_global)), _JacobianT(self), comm=comm)
        self.J.setUp()
        self.Jp = PETSc.Mat().createPython(((n_local, n_global), (PETSc.DECIDE, len(PARAMETER_NAMES))),
                                           _ParameterJacobianT(self), comm=comm)
        self.Jp.setUp()

    def rhs_jacobian(self, ts, t, X, J, P) -> None:
        self._fields = [f.copy() for f in self.model.ghosted_fields(X)]
        self._state = X.getArray(readonly=True).copy()
        self._cache = None

    def rhs_jacobian_p(self, ts, t, X, Jp) -> None:
        # TSAdjoint sets dF/dp at the stage state it has just given rhs_jacobian: compare the owned entries (every
        # rank's, collectively) before paying for a second ghost exchange
        same = self._fields is not None and np.array_equal(X.getArray(readonly=True), self._state)
        if not self.model.grid.comm_mpi().allreduce(same, op=MPI.LAND):
            self.rhs_jacobian(ts, t, X, None, None)

    def _sweep(self, x: PETSc.Vec) -> tuple[list[np.ndarray], dict[str, float]]:
        m = self.model
        lam = m.grid.owned_array(x, readonly=True)
        adj, grads = tendency_vjp(self._fields, m.geometry, m.parameter_values(),
                                  [np.ascontiguousarray(lam[..., c]) for c in range(m.grid.dof)])
        self._cache = (lam.copy(), grads)
        return adj, grads

    def mult_transpose_state(self, x: PETSc.Vec, y: PETSc.Vec) -> None:
        adj, _ = self._sweep(x)
        m = self.model
        a = m.grid.ghosted_array(self._loc, readonly=False)
        for c, arr in enumerate(adj):
            a[..., c] = arr
        y.set(0.0)
        m.grid.da.localToGlobal(self._loc, y, addv=PETSc.InsertMode.ADD_VALUES)

    def mult_transpose_parameters(self, x: PETSc.Vec, y: PETSc.Vec) -> None:
        m = self.model
        lam = m.grid.owned_array(x, readonly=True)
        if self._cache is not None and np.array_equal(self._cache[0], lam):
            grads = self._cache[1]
        else:
            grads = self._sweep(x)[1]
        local = np.array([grads[k] for k in PARAMETER_NAMES])
        total = np.empty_like(local)
        m.grid.comm_mpi().Allreduce(local, total)
        r0, r1 = y.getOwnershipRange()
        y.getArray()[...] = total[r0:r1]

    def destroy(self) -> None:
        for obj in (self.J, self.Jp, self._loc):
            obj.destroy()


class _JacobianT:
    def __init__(self, owner: ShellJacobians):
        self.owner = owner

    def multTranspose(self, mat, x, y) -> None:  # noqa: N802 - petsc4py's Python-matrix protocol
        self.owner.mult_transpose_state(x, y)


class _ParameterJacobianT:
    def __init__(self, owner: ShellJacobians):
        self.owner = owner

    def multTranspose(self, mat, x, y) -> None:  # noqa: N802 - petsc4py's Python-matrix protocol
        self.owner.mult_transpose_parameters(x, y)
