"""Reverse mode of the shallow-water tendencies: ``(dF/dx)^T lambda`` and ``(dF/dp)^T lambda`` without a matrix.

TSAdjoint of an explicit Runge-Kutta method needs, at every stage of every step, only the products of the transposed
Jacobians with a vector (``MatMultTranspose`` of the RHS Jacobian and of the parameter Jacobian). Assembling ``dF/dx``
(:mod:`.jacobian`: 9 forward-mode directions per input component, then ``MatSetValues``) cost ~20 forward RHS
evaluations per stage, which made a 4D-Var gradient ~20 forward runs. Here the Jacobians are PETSc shell matrices:
the Jacobian callbacks keep the stage state and ``multTranspose`` runs :func:`tendency_vjp`, the reverse-mode
(vector-Jacobian product) sweep of :func:`~twin.models.shallow_water.kernel.tendency`, which costs about one RHS
evaluation (48 x 36 block: 0.21 ms vs 0.26 ms; 0.53 ms before its flat layout, see :func:`tendency_vjp`) and gives
the parameter part in the same sweep.

Why hand-written: the kernel is a fixed, short sequence of array operations (windows, sums, products, one
quotient), so its reverse sweep is written statement by statement in reverse order (each forward statement
``a = f(b, c)`` becomes ``Lb += (df/db)^T La``, ``Lc += (df/dc)^T La``); a general reverse-mode tape would cost
more Python overhead per stage than the kernel itself. It cannot drift from the kernel unnoticed: a test checks
``tendency_vjp`` against the assembled Jacobian (itself checked against forward mode and finite differences) to
round-off, and the 4D-Var Taylor tests check the whole adjoint.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

from twin.models.shallow_water.jacobian import PARAMETER_NAMES
from twin.models.shallow_water.kernel import Geometry


@dataclass(frozen=True)
class FlatGeometry:
    """The constant data of :class:`~twin.models.shallow_water.kernel.Geometry` laid out for :func:`tendency_vjp`.

    Attributes
    ----------
    shape : tuple of int
        Ghosted block shape ``(ny + 2, nx + 2)``.
    dx, dy : float
        Cell widths [m].
    y : ndarray
        ``y - y_mid`` at the corners of the extended block, flat (length ``(ny + 2)(nx + 2) - (nx + 2) - 1``) [m].
    topography : ndarray
        ``b`` at the same flat positions (the kernel's lower-left window) [m].
    forcing : ndarray
        ``F(y)`` on the ghosted block, flat, zero in the ghost layer [1].
    """

    shape: tuple[int, int]
    dx: float
    dy: float
    y: np.ndarray
    topography: np.ndarray
    forcing: np.ndarray

    @classmethod
    def of(cls, geo: Geometry, shape: tuple[int, int]) -> "FlatGeometry":
        rows, width = shape
        n = rows * width - width - 1
        y = np.repeat(np.asarray(geo.y_corner, dtype=float)[:, 0], width)[:n]
        forcing = np.zeros(shape)
        forcing[1:-1, 1:-1] = geo.forcing_shape
        topo = np.ascontiguousarray(geo.topography, dtype=float).ravel()[:n].copy()
        return cls(tuple(shape), geo.dx, geo.dy, y, topo, forcing.ravel())


def tendency_vjp(fields: list[np.ndarray], fgeo: FlatGeometry, p: dict, lam: list[np.ndarray]
                 ) -> tuple[list[np.ndarray], dict[str, float]]:
    """``lambda^T dF/dx`` on the ghosted block and this block's part of ``lambda^T dF/dp``.

    Layout (why): NumPy operations on strided 2-D windows of a small block cost ~3x those on contiguous 1-D
    arrays. So every array is flat in the ghosted block's C order (row length ``M = nx + 2``) and the four windows
    of the kernel are contiguous slices at offsets ``0, 1, M, M + 1`` (lower-left, lower-right, upper-left,
    upper-right). Quantities of the extended block (the kernel's rows and columns ``-1 .. n-1``) have length
    ``n = (ny + 2) M - M - 1``; the flat positions in column ``M - 1`` are not points of it. Their values stay
    finite (the windows wrap into the next row) and every adjoint quantity there is exactly zero, because ``lambda``
    is zero in the ghost layer and each of them is a product with a ``lambda`` window that only reaches ghosts
    from there; so scattering them adds nothing.

    Parameters
    ----------
    fields : list of ndarray
        Ghosted ``h, u, v`` (and ``phi``), contiguous, as for :func:`~twin.models.shallow_water.kernel.tendency`.
    fgeo : FlatGeometry
    p : dict
        ``gravity, f0, beta, drag, forcing_amplitude`` (floats).
    lam : list of ndarray
        ``lambda`` per component on the ghosted block (contiguous), zero in the ghost layer.

    Returns
    -------
    list of ndarray
        Adjoint per component on the ghosted block (ghost entries belong to the neighbours' points: add them with a
        local-to-global ``ADD_VALUES``).
    dict
        This block's sums ``lambda^T dF/dp`` for :data:`PARAMETER_NAMES` (reduce over ranks).
    """
    N, M = fgeo.shape
    T = N * M
    n = T - M - 1
    h, u, v = (f.reshape(-1) for f in fields[:3])
    Ph, Pu, Pv = (l.reshape(-1) for l in lam[:3])
    rdx, rdy = 1.0 / fgeo.dx, 1.0 / fgeo.dy
    g, r = p["gravity"], p["drag"]
    LL, LR, UL, UR = slice(0, n), slice(1, n + 1), slice(M, M + n), slice(M + 1, T)
    # forward values at the stage state (the kernel's statements; in-place where a temporary is not needed again)
    hLL = h[LL]
    Ua, Va = u[LR], v[UL]
    hx = hLL + h[LR]
    hx *= 0.5
    hy = hLL + h[UL]
    hy *= 0.5
    U = hx * Ua
    V = hy * Va
    hc = h[UR] + h[UL]
    hc += h[LR]
    hc += hLL
    hc *= 0.25
    q = v[UR] - Va
    q *= rdx
    t = u[UR] - Ua
    t *= rdy
    q -= t
    q += p["f0"]
    q += p["beta"] * fgeo.y
    q /= hc
    # B: du -= dx(B), dv -= dy(B)
    LB = Pu[LR] - Pu[LL]
    LB *= rdx
    t = Pv[UL] - Pv[LL]
    t *= rdy
    LB += t
    # Coriolis: du += avg_y(q avg_x(V)), dv -= avg_x(q avg_y(U)); Lqv, Lqu carry a factor 2, signs applied below
    Lqv = Pu[UR] + Pu[LR]
    Lqu = Pv[UR] + Pv[UL]
    Lq = np.zeros(n)
    t = U[:n - M] + U[M:]
    t *= Lqu[:n - M]
    Lq[:n - M] -= t
    t = V[:-1] + V[1:]
    t *= Lqv[:-1]
    Lq[:-1] += t
    Lq *= 0.25
    LUavg = Lqu * q
    LUavg *= -0.25
    LVavg = Lqv * q
    LVavg *= 0.25
    # dh = -(dx(U) + dy(V)), plus the transposed averages of U and V
    LU = Ph[LR] - Ph[LL]
    LU *= rdx
    LU += LUavg
    LU[M:] += LUavg[:-M]
    LV = Ph[UL] - Ph[LL]
    LV *= rdy
    LV += LVavg
    LV[1:] += LVavg[:-1]
    Lphi = None
    if len(fields) > 3:
        # tracer fluxes U avg_x(c), V avg_y(c), c = phi / h
        Pphi = lam[3].reshape(-1)
        c = fields[3].reshape(-1) / h
        cx = c[LL] + c[LR]
        cx *= 0.5
        cy = c[LL] + c[UL]
        cy *= 0.5
        Lcu = Pphi[LR] - Pphi[LL]
        Lcu *= rdx
        Lcv = Pphi[UL] - Pphi[LL]
        Lcv *= rdy
        cx *= Lcu
        LU += cx
        cy *= Lcv
        LV += cy
        Lcu *= U
        Lcu *= 0.5
        Lcv *= V
        Lcv *= 0.5
        Lphi = np.zeros(T)
        Lphi[LL] = Lcu + Lcv
        Lphi[LR] += Lcu
        Lphi[UL] += Lcv
        Lphi /= h
    # q = (f0 + beta y + zeta) / hc
    Lnum = Lq / hc
    grads = {"f0": float(Lnum.sum()), "beta": float(np.dot(Lnum, fgeo.y))}
    Lhc = Lnum * q
    Lhc *= -0.25
    # h: hc (all four windows), B (LL), U = avg_x(h) u (LL, LR), V = avg_y(h) v (LL, UL)
    a = LU * Ua
    a *= 0.5
    b = LV * Va
    b *= 0.5
    Lh = np.zeros(T)
    Lh[UR] = Lhc
    b += Lhc
    Lh[UL] += b
    a += Lhc
    Lh[LR] += a
    a += b
    a -= Lhc
    t = g * LB
    a += t
    Lh[LL] += a
    if Lphi is not None:
        Lh -= Lphi * c
    t = hLL + fgeo.topography
    grads["gravity"] = float(np.dot(LB, t))
    # u: zeta (UR, LR), B (LL, LR), U (LR);  v: zeta (UR, UL), B (LL, UL), V (UL)
    LB *= 0.5
    Ln = Lnum * rdy
    Lu = np.zeros(T)
    np.negative(Ln, out=Lu[UR])
    t = LB * Ua
    t += Ln
    LU *= hx
    t += LU
    Lu[LR] += t
    t = LB * u[LL]
    Lu[LL] += t
    Ln = Lnum * rdx
    Lv = np.zeros(T)
    Lv[UR] = Ln
    t = LB * Va
    t -= Ln
    LV *= hy
    t += LV
    Lv[UL] += t
    t = LB * v[LL]
    Lv[LL] += t
    # drag and forcing act on the owned points, where lambda is the only non-zero part of the padded vector
    grads["drag"] = -float(np.dot(Pu, u) + np.dot(Pv, v))
    grads["forcing_amplitude"] = float(np.dot(Pu, fgeo.forcing))
    if r:
        Lu -= r * Pu
        Lv -= r * Pv
    out = [x.reshape(N, M) for x in (Lh, Lu, Lv)] + ([Lphi.reshape(N, M)] if Lphi is not None else [])
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
        shape = grid.ghosted_shape()
        self._flat = FlatGeometry.of(model.geometry, shape)
        self._lam = np.zeros((grid.dof,) + tuple(shape))  # lambda with zero ghosts, refilled on the owned block
        self._comm = grid.comm_mpi()
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
        if self._comm.size > 1:
            same = self._comm.allreduce(same, op=MPI.LAND)
        if not same:
            self.rhs_jacobian(ts, t, X, None, None)

    def _sweep(self, x: PETSc.Vec) -> tuple[list[np.ndarray], dict[str, float]]:
        m = self.model
        lam = m.grid.owned_array(x, readonly=True)
        for c in range(m.grid.dof):
            self._lam[c, 1:-1, 1:-1] = lam[..., c]
        adj, grads = tendency_vjp(self._fields, self._flat, m.parameter_values(), list(self._lam))
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
        self._comm.Allreduce(local, total)
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
