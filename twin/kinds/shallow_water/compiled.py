"""The forward shallow-water tendencies in one compiled pass over the owned block (the float64 path of the model).

Same equations, grid, discretisation and symbols as :func:`~twin.kinds.shallow_water.kernel.tendency` (see its
module docstring); this is what :meth:`ShallowWater._rhs <twin.kinds.shallow_water.model.ShallowWater._rhs>` runs.
:func:`~twin.kinds.shallow_water.kernel.tendency` stays the reference and the only path for
:class:`~twin.kinds.shallow_water.kernel.Dual` numbers (tangent-linear model, assembled Jacobians, so the derivatives
are those of the reference); tests/unit/test_shallow_water_kernel.py checks that both give the same tendencies to
round-off (1e-13 relative; the compiled loops multiply by ``1/dx`` where the reference divides by ``dx``), and the
MPI tests that 2 ranks give what 1 rank gives.

Why compiled, and why Numba. The goal is the bandwidth of reading the state and writing the tendency (``2 * 3 * 8``
bytes per point) against the STREAM triad. Measured side by side in one run, 1 rank, best of 7, on the 2-core
development VM while other jobs kept the load average at 3.8 (STREAM triad 9.5 and 10.2 GB/s at the time), RHS time
and that fraction of STREAM:

=======================================================  ================  ================
tool                                                      512^2             1024^2
=======================================================  ================  ================
NumPy on strided 2-D windows, strips of rows (before)     16.6 ms   0.08    81.1 ms   0.06
NumPy in place on flat contiguous slices, buffers         11.6 ms   0.12    51.3 ms   0.10
numexpr 2.14 on the same flat slices, 1 thread per rank   14.4 ms   0.09    78.3 ms   0.06
Numba 0.68, this module                                    1.3 ms   1.03     7.3 ms   0.68
=======================================================  ================  ================

The kernel is ~60 operations per point on ~12 arrays; NumPy and numexpr make a pass over memory (or at best over a
cache-sized strip) per operation, and in-place flat slices remove the temporaries but not the passes. A compiled
loop makes one pass. Numba rather than a PETSc-native C kernel or Cython because it is a wheel on PyPI (0.68 works
with the numpy 1.24-1.26 that Debian's petsc4py needs) and needs no C compiler or build step where twin is
installed. Compilation (~3 s for the first call of a process) is cached next to this file (``cache=True``), so later
processes load the machine code in ~0.2 s. ``error_model="numpy"`` lets a division by zero give inf or nan as NumPy
does (the state checks catch it) instead of testing for it, which would keep LLVM from vectorising the divisions.

Why no ghosted copy: the DMDA's ghost exchange (``DMGlobalToLocal``) copies the whole state into a local vector that
the kernel then reads again; at 1024^2 that copy alone took 4.3 ms in the run above, 60 % of the kernel. Here only
the ghost layer travels: a PETSc scatter (:class:`Halo`) fills a small vector with the four ghost strips (rows
below and above, columns left and right, corners included), and the kernel reads the owned block straight from the
global vector's memory. It walks up the block row by row: it de-interleaves each ghosted row ``(h, u, v[, c])``
into a ring of three rows that stays in cache, computes the quantities of the new row (mass fluxes ``U, V``,
potential vorticity ``q``, Bernoulli function ``B``) into one-row buffers, and writes the tendencies of the row
below. Every value of the state is read from memory once and every tendency written once.
"""

from __future__ import annotations

import numba
import numpy as np
from petsc4py import PETSc

from twin.core.errors import ModelError
from twin.core.grid import Grid
from twin.kinds.shallow_water.kernel import Geometry

#: positions in the constants array passed to the compiled kernel
_RDX, _RDY, _G, _F0, _BETA, _DRAG, _AMP = range(7)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _split(src, n, dst, offset):
    """``dst[c, offset + i] = src[dof * i + c]`` for ``i < n``: de-interleave ``n`` points of ``dof`` components.

    The stride is a literal in each branch: with a run-time stride LLVM emits scalar code, 2x slower.
    """
    dof = dst.shape[0]
    if dof == 3:
        for c in range(3):
            d = dst[c]
            for i in range(n):
                d[offset + i] = src[3 * i + c]
    else:
        for c in range(4):
            d = dst[c]
            for i in range(n):
                d[offset + i] = src[4 * i + c]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _divergence(Fx, Fy_south, Fy_north, I, rdx, rdy):
    """``-div F`` at h-point ``I`` of a row from the x-fluxes of the row and the y-fluxes below and above it."""
    return -((Fx[I + 1] - Fx[I]) * rdx + (Fy_north[I] - Fy_south[I]) * rdy)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _du(qv_south, qv_north, B, u, I, rdx, drag, forcing):
    """``du/dt`` at u-point ``I``: ``avg_y(q avg_x(V)) - dB/dx - r u + A F``."""
    return 0.5 * (qv_south[I] + qv_north[I]) - (B[I] - B[I - 1]) * rdx - drag * u[I] + forcing


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _dv(qu, B, B_south, v, I, rdy, drag):
    """``dv/dt`` at v-point ``I``: ``-avg_x(q avg_y(U)) - dB/dy - r v``."""
    return -0.5 * (qu[I] + qu[I + 1]) - (B[I] - B_south[I]) * rdy - drag * v[I]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _load_row(row, r, x, south, north, west, east):
    """Ghosted row ``r`` (``-1 .. ny``) of ``h, u, v`` (and ``c = phi / h``) into ``row[:, :nx + 2]``."""
    ny, nx, dof = x.shape
    if r < 0:
        _split(south.reshape(-1), nx + 2, row, 0)
    elif r >= ny:
        _split(north.reshape(-1), nx + 2, row, 0)
    else:
        _split(x[r].reshape(-1), nx, row, 1)
        for c in range(dof):
            row[c, 0] = west[r, c]
            row[c, nx + 1] = east[r, c]
    if dof > 3:
        # the tracer enters only through its concentration: keep c = phi / h instead of phi
        for I in range(nx + 2):
            row[3, I] /= row[0, I]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def tendency_owned(x, south, north, west, east, topo, y_corner, forcing, k, out):
    """Tendencies of the owned block into ``out`` (shape ``(ny, nx, dof)``, interleaved like the state).

    Parameters
    ----------
    x : ndarray, shape (ny, nx, dof)
        The owned block of the state, interleaved ``h, u, v(, phi)`` per point (a view of the global vector).
    south, north : ndarray, shape (nx + 2, dof)
        Ghost rows below and above the block (corners included).
    west, east : ndarray, shape (ny, dof)
        Ghost columns left and right of the block.
    topo : ndarray, shape (ny + 2, nx + 2) or (0, 0)
        ``b`` on the ghosted block [m]; empty when there is no topography.
    y_corner : ndarray, shape (ny + 1,)
        ``y - y_mid`` at the corner rows [m].
    forcing : ndarray, shape (ny,)
        ``F(y)`` at the u-point rows [1].
    k : ndarray, shape (7,)
        ``1/dx, 1/dy, g, f0, beta, drag, A``.
    out : ndarray, shape (ny, nx, dof)
        Tendencies, interleaved like ``x``.
    """
    ny, nx, dof = x.shape
    M = nx + 2
    rdx, rdy, g, f0, beta = k[_RDX], k[_RDY], k[_G], k[_F0], k[_BETA]
    drag, amp = k[_DRAG], k[_AMP]
    has_topo = topo.shape[0] > 0
    tracer = dof > 3
    # All row buffers in one array whose row stride is an odd number of cache lines: with a stride near a multiple
    # of 4 KiB (nx a power of two) the ~30 streams of a row share L1 sets and evict each other (1.5x slower).
    stride = 8 * ((M + 7) // 8)
    if (stride // 8) % 2 == 0:
        stride += 8
    work = np.empty((3 * dof + 14, stride))
    ring = work[:3 * dof].reshape(3, dof, stride)  # ghosted rows r - 1, r, r + 1 at (r + 3) % 3
    w = 3 * dof
    # one-row buffers, two slots each (slot r & 1 holds row r): U, B on rows r; V, q, qv, cv between rows r-1, r
    U, B, V = work[w:w + 2], work[w + 2:w + 4], work[w + 4:w + 6]
    q, qv, cv = work[w + 6:w + 8], work[w + 8:w + 10], work[w + 10:w + 12]
    qu, cu = work[w + 12], work[w + 13]
    _load_row(ring[2], -1, x, south, north, west, east)
    _load_row(ring[0], 0, x, south, north, west, east)
    for r in range(-1, ny):
        # rows r and r + 1 are in the ring: quantities of row r (U, B) and between rows r, r + 1 (V, q, qv, cv)
        a = ring[(r + 3) % 3]
        n = ring[(r + 4) % 3]
        s = r & 1
        t = 1 - s
        h0, u0, v0 = a[0], a[1], a[2]
        h1, u1, v1 = n[0], n[1], n[2]
        Ur, Br = U[s], B[s]
        Vn, qn, qvn = V[t], q[t], qv[t]
        for I in range(1, M):
            Ur[I] = 0.5 * (h0[I - 1] + h0[I]) * u0[I]
        if has_topo:  # else one read stream less
            b = topo[r + 1]
            for I in range(M - 1):
                Br[I] = g * (h0[I] + b[I]) + 0.25 * (u0[I] * u0[I] + u0[I + 1] * u0[I + 1] + v0[I] * v0[I]
                                                     + v1[I] * v1[I])
        else:
            for I in range(M - 1):
                Br[I] = g * h0[I] + 0.25 * (u0[I] * u0[I] + u0[I + 1] * u0[I + 1] + v0[I] * v0[I] + v1[I] * v1[I])
        for I in range(M):
            Vn[I] = 0.5 * (h0[I] + h1[I]) * v1[I]
        fy = f0 + beta * y_corner[r + 1]
        for I in range(1, M):
            zeta = (v1[I] - v1[I - 1]) * rdx - (u1[I] - u0[I]) * rdy
            qn[I] = (fy + zeta) / (0.25 * (h1[I] + h1[I - 1] + h0[I] + h0[I - 1]))
        for I in range(1, M - 1):
            qvn[I] = qn[I] * (0.5 * (Vn[I - 1] + Vn[I]))
        if tracer:
            c0, c1 = a[3], n[3]
            cvn = cv[t]
            for I in range(M):
                cvn[I] = 0.5 * (c0[I] + c1[I]) * Vn[I]
        if r >= 0:
            # the tendencies of row j = r, written straight into the interleaved row of out: with the stride a
            # literal in each branch LLVM vectorises the stores (a contiguous buffer per component and a second
            # interleaving pass cost 1.3x)
            j = r
            Up, Bp = U[t], B[t]
            Vj, qj, qvj = V[s], q[s], qv[s]
            for I in range(1, M):
                qu[I] = qj[I] * (0.5 * (Up[I] + Ur[I]))
            fj = amp * forcing[j]
            o = out[j].reshape(-1)
            if tracer:
                cvj = cv[s]
                for I in range(1, M):
                    cu[I] = 0.5 * (c0[I - 1] + c0[I]) * Ur[I]
                for I in range(1, M - 1):
                    o[4 * I - 4] = _divergence(Ur, Vj, Vn, I, rdx, rdy)
                    o[4 * I - 3] = _du(qvj, qvn, Br, u0, I, rdx, drag, fj)
                    o[4 * I - 2] = _dv(qu, Br, Bp, v0, I, rdy, drag)
                    o[4 * I - 1] = _divergence(cu, cvj, cvn, I, rdx, rdy)
            else:
                for I in range(1, M - 1):
                    o[3 * I - 3] = _divergence(Ur, Vj, Vn, I, rdx, rdy)
                    o[3 * I - 2] = _du(qvj, qvn, Br, u0, I, rdx, drag, fj)
                    o[3 * I - 1] = _dv(qu, Br, Bp, v0, I, rdy, drag)
        # row r + 2 replaces row r - 1
        if r + 2 <= ny:
            _load_row(ring[(r + 5) % 3], r + 2, x, south, north, west, east)


class Halo:
    """The ghost layer of a shallow-water state: a PETSc scatter from the global vector into four strips.

    Parameters
    ----------
    grid : Grid
        The model's grid (periodic, box stencil of width 1).
    """

    def __init__(self, grid: Grid):
        ny, nx = grid.local_shape
        dof = grid.dof
        NY, NX = grid.ghosted_shape()
        if (NY, NX) != (ny + 2, nx + 2):
            raise ModelError(grid.name, f"the compiled shallow-water kernel needs a ghost layer of width 1 on every "
                                        f"side, got a ghosted block {(NY, NX)} around {(ny, nx)}")
        # global index of every ghosted point's first component, C order (the DMDA's local-to-global map)
        blocks = np.asarray(grid.da.getLGMap().getBlockIndices()).reshape(NY, NX)
        points = np.concatenate([blocks[0], blocks[-1], blocks[1:-1, 0], blocks[1:-1, -1]])
        index = (points[:, None] * dof + np.arange(dof)).ravel().astype(PETSc.IntType)
        self.vec = PETSc.Vec().createSeq(index.size, comm=PETSc.COMM_SELF)
        self._is = PETSc.IS().createGeneral(index, comm=PETSc.COMM_SELF)
        self._template = grid.create_global()
        self.scatter = PETSc.Scatter().create(self._template, self._is, self.vec, None)
        a = self.vec.getArray()
        row, col = (nx + 2) * dof, ny * dof
        self.south = a[:row].reshape(nx + 2, dof)
        self.north = a[row:2 * row].reshape(nx + 2, dof)
        self.west = a[2 * row:2 * row + col].reshape(ny, dof)
        self.east = a[2 * row + col:].reshape(ny, dof)

    def update(self, X: PETSc.Vec) -> None:
        """Fill the strips from ``X`` (collective)."""
        self.scatter.scatter(X, self.vec, addv=PETSc.InsertMode.INSERT_VALUES, mode=PETSc.ScatterMode.FORWARD)

    def destroy(self) -> None:
        for obj in (self.scatter, self.vec, self._is, self._template):
            obj.destroy()


class CompiledTendency:
    """The model's forward tendencies ``F(X)`` by :func:`tendency_owned`, with the ghost layer from :class:`Halo`.

    Parameters
    ----------
    grid : Grid
        The model's grid.
    geometry : Geometry
        The model's constant data; topography that is zero everywhere is skipped.
    """

    def __init__(self, grid: Grid, geometry: Geometry):
        self.shape = tuple(grid.local_shape) + (grid.dof,)
        self.halo = Halo(grid)
        self.rdx, self.rdy = 1.0 / geometry.dx, 1.0 / geometry.dy
        self.y_corner = np.ascontiguousarray(geometry.y_corner, dtype=float).ravel()
        self.forcing = np.ascontiguousarray(geometry.forcing_shape, dtype=float).ravel()
        topo = np.ascontiguousarray(geometry.topography, dtype=float)
        # zero topography would only add a read stream to the kernel
        self.topography = topo if np.any(topo) else np.zeros((0, 0))

    def __call__(self, X: PETSc.Vec, F: PETSc.Vec, params: dict) -> None:
        """``F = tendency(X)`` on the owned block (collective: the ghost exchange)."""
        self.halo.update(X)
        h = self.halo
        k = np.array([self.rdx, self.rdy, params["gravity"], params["f0"], params["beta"], params["drag"],
                      params["forcing_amplitude"]])
        x = X.getArray(readonly=True).reshape(self.shape)
        out = F.getArray().reshape(self.shape)
        tendency_owned(x, h.south, h.north, h.west, h.east, self.topography, self.y_corner, self.forcing, k, out)

    def destroy(self) -> None:
        self.halo.destroy()
