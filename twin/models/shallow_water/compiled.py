"""The forward shallow-water tendencies in one compiled pass over the owned block (the float64 path of the model).

Same equations, grid and discretisation as :func:`~twin.models.shallow_water.kernel.tendency` (see its module
docstring); this is the path :meth:`ShallowWater._rhs <twin.models.shallow_water.model.ShallowWater._rhs>` runs.
:func:`~twin.models.shallow_water.kernel.tendency` stays the reference, and the only path for
:class:`~twin.models.shallow_water.kernel.Dual` numbers (tangent-linear model, assembled Jacobians); a test checks
that both give the same tendencies to round-off on 1 and 2 ranks, with and without tracer, topography and sources.

Why compiled, and why Numba (measured, 1024^2 block, 1 rank, best of 5, side by side in one run; the goal is the
bandwidth of reading the state and writing the tendency, ``2 * 3 * 8`` bytes per point, against the STREAM triad):

TODO numbers

Why no ghosted copy: the ghost exchange of the DMDA (``DMGlobalToLocal``) copies the whole state into a local
vector, which then is read again: twice the traffic of the kernel itself. Here only the ghost layer travels: a
PETSc scatter (:class:`Halo`) fills a small vector with the four ghost strips (rows below and above, columns left
and right, corners included), and the kernel reads the owned block straight from the global vector's memory. It
walks up the block row by row, de-interleaves each ghosted row ``(h, u, v[, c])`` into a ring of three rows that
stays in L1 cache, computes the face and corner quantities of the new row (mass fluxes ``U, V``, potential
vorticity ``q``, Bernoulli function ``B``) into one-row buffers, and writes the tendencies of the row below. Every
value of the state is read from memory once and every tendency written once; the loops over a row are simple enough
for LLVM to vectorise.
"""

from __future__ import annotations

import numba
import numpy as np
from petsc4py import PETSc

from twin.core.grid import Grid
from twin.models.shallow_water.kernel import Geometry

#: positions in the constants array passed to the compiled kernel
_RDX, _RDY, _G, _F0, _BETA, _DRAG, _AMP = range(7)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _load_row(ring, r, x, south, north, west, east, i0, i1):
    """Ghosted row ``r`` (``-1 .. ny``), owned columns ``i0 - 1 .. i1``, of ``h, u, v`` (and ``c = phi / h``) into
    ``ring[(r + 3) % 3, :, :i1 - i0 + 2]``."""
    ny, nx, dof = x.shape
    w = i1 - i0
    k = (r + 3) % 3
    if r < 0 or r >= ny:
        src = south if r < 0 else north
        for c in range(dof):
            for I in range(w + 2):
                ring[k, c, I] = src[i0 + I, c]
    else:
        for c in range(dof):
            ring[k, c, 0] = x[r, i0 - 1, c] if i0 > 0 else west[r, c]
            ring[k, c, w + 1] = x[r, i1, c] if i1 < nx else east[r, c]
            for I in range(1, w + 1):
                ring[k, c, I] = x[r, i0 + I - 1, c]
    if dof > 3:
        # the tracer enters only through its concentration: keep c = phi / h instead of phi
        for I in range(w + 2):
            ring[k, 3, I] /= ring[k, 0, I]


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _tile(x, south, north, west, east, topo, y_corner, forcing, k, out, i0, i1, work):
    """The tendencies of owned columns ``i0 .. i1 - 1``, all rows (see :func:`tendency_owned`)."""
    ny, nx, dof = x.shape
    M = i1 - i0 + 2
    rdx, rdy, g, f0, beta = k[_RDX], k[_RDY], k[_G], k[_F0], k[_BETA]
    drag, amp = k[_DRAG], k[_AMP]
    has_topo = topo.shape[0] > 0
    tracer = dof > 3
    ring = work[:3 * dof].reshape(3, dof, work.shape[1])
    # one-row buffers, two slots each (slot r & 1 holds row r): U, B on rows r; V, q, qv, cv between rows r-1, r
    U = work[3 * dof:3 * dof + 2]
    B = work[3 * dof + 2:3 * dof + 4]
    V = work[3 * dof + 4:3 * dof + 6]
    q = work[3 * dof + 6:3 * dof + 8]
    qv = work[3 * dof + 8:3 * dof + 10]
    cv = work[3 * dof + 10:3 * dof + 12]
    qu = work[3 * dof + 12]
    cu = work[3 * dof + 13]
    _load_row(ring, -1, x, south, north, west, east, i0, i1)
    _load_row(ring, 0, x, south, north, west, east, i0, i1)
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
        if has_topo:
            b = topo[r + 1, i0:i0 + M]
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
        if r < 0:
            _load_row(ring, 1, x, south, north, west, east, i0, i1)
            continue
        # tendencies of row j = r; then row r + 2 replaces row r - 1 in the ring
        j = r
        Up, Bp = U[t], B[t]
        Vj, qj, qvj = V[s], q[s], qv[s]
        for I in range(1, M):
            qu[I] = qj[I] * (0.5 * (Up[I] + Ur[I]))
        o = out[j, i0:i1]
        fj = amp * forcing[j]
        for I in range(1, M - 1):
            i = I - 1
            o[i, 0] = -((Ur[I + 1] - Ur[I]) * rdx + (Vn[I] - Vj[I]) * rdy)
            o[i, 1] = 0.5 * (qvj[I] + qvn[I]) - (Br[I] - Br[I - 1]) * rdx - drag * u0[I] + fj
            o[i, 2] = -0.5 * (qu[I] + qu[I + 1]) - (Br[I] - Bp[I]) * rdy - drag * v0[I]
        if tracer:
            c0 = a[3]
            cvj, cvn = cv[s], cv[t]
            for I in range(1, M):
                cu[I] = 0.5 * (c0[I - 1] + c0[I]) * Ur[I]
            for I in range(1, M - 1):
                o[I - 1, 3] = -((cu[I + 1] - cu[I]) * rdx + (cvn[I] - cvj[I]) * rdy)
        if r + 2 <= ny:
            _load_row(ring, r + 2, x, south, north, west, east, i0, i1)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def tendency_owned(x, south, north, west, east, topo, y_corner, forcing, k, out, tile=128):
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
    tile : int
        Columns per tile.
    """
    ny, nx, dof = x.shape
    # All row buffers in one array whose row stride is an odd number of cache lines: with a stride near a multiple
    # of 4 KiB the ~25 streams of a row would share L1 sets and evict each other.
    stride = 8 * ((min(tile, nx) + 2 + 7) // 8)
    if (stride // 8) % 2 == 0:
        stride += 8
    work = np.empty((3 * dof + 14, stride))
    for i0 in range(0, nx, tile):
        _tile(x, south, north, west, east, topo, y_corner, forcing, k, out, i0, min(nx, i0 + tile), work)


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
            raise ValueError(f"the compiled kernel needs one ghost layer on every side, got {(NY, NX)} around "
                             f"{(ny, nx)}")
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
        self.grid = grid
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
        x = self.grid.owned_array(X, readonly=True)
        out = self.grid.owned_array(F)
        tendency_owned(x, h.south, h.north, h.west, h.east, self.topography, self.y_corner, self.forcing, k, out)

    def destroy(self) -> None:
        self.halo.destroy()
