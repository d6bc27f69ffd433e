"""Reverse mode of the shallow-water tendencies: ``(dF/dx)^T lambda`` and ``(dF/dp)^T lambda`` without a matrix.

TSAdjoint of an explicit Runge-Kutta method needs, at every stage of every step, only the products of the transposed
Jacobians with a vector (``MatMultTranspose`` of the RHS Jacobian and of the parameter Jacobian). Assembling ``dF/dx``
(:mod:`.jacobian`: 9 forward-mode directions per input component, then ``MatSetValues``) cost ~20 forward RHS
evaluations per stage, which made a 4D-Var gradient ~20 forward runs. Here the Jacobians are PETSc shell matrices:
the Jacobian callbacks keep the stage state and ``multTranspose`` runs :func:`tendency_vjp`, the reverse-mode
(vector-Jacobian product) sweep of :func:`~twin.kinds.shallow_water.kernel.tendency`, which gives the parameter
part in the same sweep.

Why hand-written: the kernel is a fixed, short sequence of array operations (windows, sums, products, one
quotient), so its reverse sweep is written statement by statement in reverse order (each forward statement
``a = f(b, c)`` becomes ``Lb += (df/db)^T La``, ``Lc += (df/dc)^T La``); a general reverse-mode tape would cost
more Python overhead per stage than the kernel itself. It cannot drift from the kernel unnoticed: a test checks the
shell matrices against the assembled Jacobian (itself checked against forward mode and finite differences) to
round-off, another ``tendency_vjp`` against the forward mode of the reference kernel (dot-product test), and the
4D-Var Taylor tests check the whole adjoint.

Why compiled (Numba, as the forward kernel, :mod:`.compiled`): once the forward RHS was compiled, the NumPy sweep
(one pass and ~1 us of call overhead per operation) made the 4D-Var gradient the slow half. Measured side by side
in one run (1 rank, load average ~3.5 from other jobs on the 2-core machine): the sweep on the 48 x 36 block of
benchmarks/bench_fourdvar.py 0.025 ms against 0.096 ms in NumPy, on 512^2 15 ms against 26 ms; that benchmark's
shallow-water 4D-Var forward run 6.4-6.9 ms (15-17 ms before the compiled kernels), the gradient 17-18 ms (34-44 ms
before), gradient/forward 2.6 (2.3-2.6 before: the forward gained more than the adjoint, whose remaining cost is
mostly PETSc's TSAdjoint, the Python callbacks per stage and the covariance's KSP solves).
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

from twin.kinds.shallow_water.jacobian import PARAMETER_NAMES
from twin.kinds.shallow_water.kernel import Geometry


@dataclass(frozen=True)
class FlatGeometry:
    """The constant data of :class:`~twin.kinds.shallow_water.kernel.Geometry` laid out for :func:`tendency_vjp`.

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


def tendency_vjp(fields: list[np.ndarray], fgeo: FlatGeometry, p: dict, lam: list[np.ndarray],
                 out: np.ndarray | None = None, work: np.ndarray | None = None
                 ) -> tuple[list[np.ndarray], dict[str, float]]:
    """``lambda^T dF/dx`` on the ghosted block and this block's part of ``lambda^T dF/dp``.

    Layout (why): every array is flat in the ghosted block's C order (row length ``M = nx + 2``) and the four
    windows of the kernel are contiguous ranges at offsets ``0, 1, M, M + 1`` (lower-left, lower-right, upper-left,
    upper-right), so each statement of the sweep is one simple loop over a contiguous range that LLVM vectorises
    (and that NumPy ran ~3x faster than the same operations on strided 2-D windows, before the sweep was compiled).
    Quantities of the extended block (the kernel's rows and columns ``-1 .. n-1``) have length
    ``n = (ny + 2) M - M - 1``; the flat positions in column ``M - 1`` are not points of it. Their values stay
    finite (the windows wrap into the next row) and every adjoint quantity there is exactly zero, because ``lambda``
    is zero in the ghost layer and each of them is a product with a ``lambda`` window that only reaches ghosts
    from there; so scattering them adds nothing.

    Parameters
    ----------
    fields : list of ndarray
        Ghosted ``h, u, v`` (and ``phi``), contiguous, as for :func:`~twin.kinds.shallow_water.kernel.tendency`.
    fgeo : FlatGeometry
    p : dict
        ``gravity, f0, beta, drag, forcing_amplitude`` (floats).
    lam : list of ndarray
        ``lambda`` per component on the ghosted block (contiguous), zero in the ghost layer.
    out : ndarray, shape (dof, ny + 2, nx + 2), optional
        Receives the adjoint (allocated when not given).
    work : ndarray, shape (WORK_ROWS, (ny + 2)(nx + 2)), optional
        Scratch space (allocated when not given; pass it to sweep large blocks repeatedly without page faults).

    Returns
    -------
    list of ndarray
        Adjoint per component on the ghosted block (ghost entries belong to the neighbours' points: add them with a
        local-to-global ``ADD_VALUES``).
    dict
        This block's sums ``lambda^T dF/dp`` for :data:`PARAMETER_NAMES` (reduce over ranks).
    """
    N, M = fgeo.shape
    out = np.empty((len(fields), N, M)) if out is None else out
    work = np.empty((WORK_ROWS, N * M)) if work is None else work
    sums = _vjp(*_arguments(fields, lam, fgeo), p["gravity"], p["f0"], p["beta"], p["drag"],
                out.reshape(len(fields), N * M), work)
    return list(out), dict(zip(PARAMETER_NAMES, sums))


#: stands for the tracer and its lambda when there is none
_NONE = np.zeros(0)
#: rows of the scratch array of :func:`tendency_vjp`
WORK_ROWS = 14


def _arguments(fields: list[np.ndarray], lam: list[np.ndarray], fgeo: FlatGeometry) -> tuple:
    """The leading arguments of :func:`_vjp`: flat views of the fields and lambdas, and the constant data."""
    tracer = len(fields) > 3
    flat = [f.reshape(-1) for f in fields] + ([] if tracer else [_NONE])
    lflat = [x.reshape(-1) for x in lam[:len(fields)]] + ([] if tracer else [_NONE])
    return (*flat, *lflat, fgeo.y, fgeo.topography, fgeo.forcing, fgeo.shape[1], 1.0 / fgeo.dx, 1.0 / fgeo.dy)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _windows(a, M, n):
    """The lower-left, lower-right, upper-left and upper-right windows (length ``n``) of a flat ghosted array."""
    return a[:n], a[1:n + 1], a[M:M + n], a[M + 1:M + 1 + n]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _vjp(h, u, v, phi, Ph, Pu, Pv, Pphi, y, topo, forcing, M, rdx, rdy, g, f0, beta, r, out, work):
    """The sweep of :func:`tendency_vjp` on flat arrays; ``out`` receives ``Lh, Lu, Lv(, Lphi)``; returns the sums
    ``lambda^T dF/dp`` in the order of :data:`PARAMETER_NAMES`.

    Every loop indexes views by the loop counter alone: an index such as ``k + M`` with a run-time ``M`` could be
    negative for all Numba knows, which it wraps around, and LLVM then gathers instead of loading a vector (~3x
    slower). And one loop per statement, each writing one array: LLVM vectorises a loop only after run-time
    checks that the arrays it writes do not overlap those it reads, and gives up when there are many.
    """
    T = h.size
    n = T - M - 1
    hx, hy, U, V, hc, q = work[0, :n], work[1, :n], work[2, :n], work[3, :n], work[4, :n], work[5, :n]
    LB, Lqv, Lqu, Lq, LU, LV = work[6, :n], work[7, :n], work[8, :n], work[9, :n], work[10, :n], work[11, :n]
    Lnum, c = work[12, :n], work[13]
    hLL, hLR, hUL, hUR = _windows(h, M, n)
    uLL, uLR, _, uUR = _windows(u, M, n)
    vLL, _, vUL, vUR = _windows(v, M, n)
    # forward values at the stage state: U = avg_x(h) u, V = avg_y(h) v, q = (f0 + beta y + zeta) / h_corner
    for k in range(n):
        hx[k] = 0.5 * (hLL[k] + hLR[k])
    for k in range(n):
        hy[k] = 0.5 * (hLL[k] + hUL[k])
    for k in range(n):
        U[k] = hx[k] * uLR[k]
    for k in range(n):
        V[k] = hy[k] * vUL[k]
    for k in range(n):
        hc[k] = 0.25 * (hUR[k] + hUL[k] + hLR[k] + hLL[k])
    for k in range(n):
        q[k] = ((vUR[k] - vUL[k]) * rdx - (uUR[k] - uLR[k]) * rdy + f0 + beta * y[k]) / hc[k]
    # B: du -= dx(B), dv -= dy(B)
    PuLL, PuLR, _, PuUR = _windows(Pu, M, n)
    PvLL, _, PvUL, PvUR = _windows(Pv, M, n)
    PhLL, PhLR, PhUL, _ = _windows(Ph, M, n)
    for k in range(n):
        LB[k] = (PuLR[k] - PuLL[k]) * rdx + (PvUL[k] - PvLL[k]) * rdy
    # Coriolis: du += avg_y(q avg_x(V)), dv -= avg_x(q avg_y(U)); Lqv, Lqu carry a factor 2, signs applied below
    for k in range(n):
        Lqv[k] = PuUR[k] + PuLR[k]
    for k in range(n):
        Lqu[k] = PvUR[k] + PvUL[k]
    Lq[:] = 0.0
    U_north = U[M:]
    for k in range(n - M):
        Lq[k] -= (U[k] + U_north[k]) * Lqu[k]
    V_east = V[1:]
    for k in range(n - 1):
        Lq[k] += (V[k] + V_east[k]) * Lqv[k]
    for k in range(n):
        Lq[k] *= 0.25
    # dh = -(dx(U) + dy(V)), plus the transposed averages of U and V
    for k in range(n):
        LU[k] = (PhLR[k] - PhLL[k]) * rdx - 0.25 * (Lqu[k] * q[k])
    LU_north = LU[M:]
    for k in range(n - M):
        LU_north[k] -= 0.25 * (Lqu[k] * q[k])
    for k in range(n):
        LV[k] = (PhUL[k] - PhLL[k]) * rdy + 0.25 * (Lqv[k] * q[k])
    LV_east = LV[1:]
    for k in range(n - 1):
        LV_east[k] += 0.25 * (Lqv[k] * q[k])
    tracer = phi.size > 0
    if tracer:
        # tracer fluxes U avg_x(c), V avg_y(c), c = phi / h
        for k in range(T):
            c[k] = phi[k] / h[k]
        cLL, cLR, cUL, _ = _windows(c, M, n)
        PLL, PLR, PUL, _ = _windows(Pphi, M, n)
        for k in range(n):
            LU[k] += 0.5 * (cLL[k] + cLR[k]) * ((PLR[k] - PLL[k]) * rdx)
        for k in range(n):
            LV[k] += 0.5 * (cLL[k] + cUL[k]) * ((PUL[k] - PLL[k]) * rdy)
        # Lcu = dx(lambda_phi) U / 2 at LL and LR, Lcv = dy(lambda_phi) V / 2 at LL and UL
        Lphi = out[3]
        Lphi[:] = 0.0
        LphiLL, LphiLR, LphiUL, _ = _windows(Lphi, M, n)
        for k in range(n):
            LphiLL[k] += (PLR[k] - PLL[k]) * rdx * (0.5 * U[k]) + (PUL[k] - PLL[k]) * rdy * (0.5 * V[k])
        for k in range(n):
            LphiLR[k] += (PLR[k] - PLL[k]) * rdx * (0.5 * U[k])
        for k in range(n):
            LphiUL[k] += (PUL[k] - PLL[k]) * rdy * (0.5 * V[k])
        for k in range(T):
            Lphi[k] /= h[k]
    # q = (f0 + beta y + zeta) / hc
    for k in range(n):
        Lnum[k] = Lq[k] / hc[k]
    # h: hc (all four windows, -Lnum q / 4 each), B (LL), U = avg_x(h) u (LL, LR), V = avg_y(h) v (LL, UL)
    Lh, Lu, Lv = out[0], out[1], out[2]
    Lh[:] = 0.0
    LhLL, LhLR, LhUL, LhUR = _windows(Lh, M, n)
    for k in range(n):
        LhUR[k] -= 0.25 * (Lnum[k] * q[k])
    for k in range(n):
        LhUL[k] += 0.5 * (LV[k] * vUL[k]) - 0.25 * (Lnum[k] * q[k])
    for k in range(n):
        LhLR[k] += 0.5 * (LU[k] * uLR[k]) - 0.25 * (Lnum[k] * q[k])
    for k in range(n):
        LhLL[k] += 0.5 * (LU[k] * uLR[k]) + 0.5 * (LV[k] * vUL[k]) - 0.25 * (Lnum[k] * q[k]) + g * LB[k]
    if tracer:
        for k in range(T):
            Lh[k] -= Lphi[k] * c[k]
    # u: zeta (UR, LR), B (LL, LR), U (LR);  v: zeta (UR, UL), B (LL, UL), V (UL); drag on all points
    for k in range(T):
        Lu[k] = -r * Pu[k]
    LuLL, LuLR, _, LuUR = _windows(Lu, M, n)
    for k in range(n):
        LuUR[k] -= Lnum[k] * rdy
    for k in range(n):
        LuLR[k] += 0.5 * LB[k] * uLR[k] + Lnum[k] * rdy + LU[k] * hx[k]
    for k in range(n):
        LuLL[k] += 0.5 * LB[k] * uLL[k]
    for k in range(T):
        Lv[k] = -r * Pv[k]
    LvLL, _, LvUL, LvUR = _windows(Lv, M, n)
    for k in range(n):
        LvUR[k] += Lnum[k] * rdx
    for k in range(n):
        LvUL[k] += 0.5 * LB[k] * vUL[k] - Lnum[k] * rdx + LV[k] * hy[k]
    for k in range(n):
        LvLL[k] += 0.5 * LB[k] * vLL[k]
    # the parameter sums; drag and forcing act on the owned points, where lambda is the only non-zero part
    s_g = s_f0 = s_beta = 0.0
    for k in range(n):
        s_g += LB[k] * (hLL[k] + topo[k])
        s_f0 += Lnum[k]
        s_beta += Lnum[k] * y[k]
    s_drag = s_forcing = 0.0
    for k in range(T):
        s_drag -= Pu[k] * u[k] + Pv[k] * v[k]
        s_forcing += Pu[k] * forcing[k]
    return s_g, s_f0, s_beta, s_drag, s_forcing


class ShellJacobians:
    """``dF/dx`` and ``dF/dp`` of a :class:`~twin.kinds.shallow_water.model.ShallowWater` model as PETSc shell
    matrices that only multiply transposed (what TSAdjoint of explicit RK uses), by :func:`tendency_vjp`.

    The TS Jacobian callbacks (:meth:`rhs_jacobian`, :meth:`rhs_jacobian_p`) keep the stage state's ghosted fields.
    A transposed product with ``dF/dx`` also computes the parameter part for the same vector and keeps it, so the
    product with ``dF/dp`` that TSAdjoint asks for next, at the same state and vector, costs no second sweep.
    """

    def __init__(self, model):
        self.model = model
        grid = model.grid
        comm = grid.da.getComm()
        dof = grid.dof
        n_local = grid.local_shape[0] * grid.local_shape[1] * dof
        n_global = grid.size * dof
        shape = tuple(grid.ghosted_shape())
        self._owned = tuple(grid.local_shape) + (dof,)
        self._ghosted = shape + (dof,)
        self._loc = grid.create_local()
        # buffers reused at every stage (views of PETSc vectors are re-fetched: their arrays may move)
        self._fields = np.empty((dof,) + shape)  # the stage state's ghosted fields, by component
        self._have_fields = False
        self._state = np.empty(n_local)  # the stage state's owned entries, to recognise it in rhs_jacobian_p
        self._lam = np.zeros((dof,) + shape)  # lambda with zero ghosts, refilled on the owned block
        self._swept = np.empty(n_local)  # the lambda of the last sweep, and its parameter sums
        self._grads: dict[str, float] | None = None
        self._adj = np.empty((dof, shape[0] * shape[1]))
        self._work = np.empty((WORK_ROWS, shape[0] * shape[1]))
        # the sweep reads and writes the buffers above through these views, prepared once: on the small blocks of
        # 4D-Var (48 x 36) a whole adjoint stage takes ~0.1 ms, so even building argument lists per call shows
        self._arguments = _arguments(list(self._fields), list(self._lam), FlatGeometry.of(model.geometry, shape))
        self._comm = grid.comm_mpi()
        self.J = PETSc.Mat().createPython(((n_local, n_global), (n_local, n_global)), _JacobianT(self), comm=comm)
        self.J.setUp()
        self.Jp = PETSc.Mat().createPython(((n_local, n_global), (PETSc.DECIDE, len(PARAMETER_NAMES))),
                                           _ParameterJacobianT(self), comm=comm)
        self.Jp.setUp()

    def rhs_jacobian(self, ts, t, X, J, P) -> None:
        self.model.grid.global_to_local(X, self._loc)
        np.copyto(self._fields, self._loc.getArray(readonly=True).reshape(self._ghosted).transpose(2, 0, 1))
        self._state[...] = X.getArray(readonly=True)
        self._have_fields = True
        self._grads = None

    def rhs_jacobian_p(self, ts, t, X, Jp) -> None:
        # TSAdjoint sets dF/dp at the stage state it has just given rhs_jacobian: compare the owned entries (every
        # rank's, collectively) before paying for a second ghost exchange
        same = self._have_fields and np.array_equal(X.getArray(readonly=True), self._state)
        if self._comm.size > 1:
            same = self._comm.allreduce(same, op=MPI.LAND)
        if not same:
            self.rhs_jacobian(ts, t, X, None, None)

    def _sweep(self, x: PETSc.Vec) -> dict[str, float]:
        """:func:`tendency_vjp` for ``lambda = x`` into ``self._adj``; returns (and keeps) the parameter sums."""
        lam = x.getArray(readonly=True)
        self._lam[:, 1:-1, 1:-1] = lam.reshape(self._owned).transpose(2, 0, 1)
        p = self.model.parameter_values()
        sums = _vjp(*self._arguments, p["gravity"], p["f0"], p["beta"], p["drag"], self._adj, self._work)
        self._grads = dict(zip(PARAMETER_NAMES, sums))
        self._swept[...] = lam
        return self._grads

    def mult_transpose_state(self, x: PETSc.Vec, y: PETSc.Vec) -> None:
        self._sweep(x)
        adj = self._adj.reshape((-1,) + self._ghosted[:2])
        np.copyto(self._loc.getArray().reshape(self._ghosted), adj.transpose(1, 2, 0))
        y.set(0.0)
        self.model.grid.da.localToGlobal(self._loc, y, addv=PETSc.InsertMode.ADD_VALUES)

    def mult_transpose_parameters(self, x: PETSc.Vec, y: PETSc.Vec) -> None:
        lam = x.getArray(readonly=True)
        if self._grads is not None and np.array_equal(self._swept, lam):
            grads = self._grads
        else:
            grads = self._sweep(x)
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
