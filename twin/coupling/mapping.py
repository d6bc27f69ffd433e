"""Maps between fields on different grids, stored as parallel PETSc AIJ matrices ``y = M x``.

A map goes from a *source* layout (a :class:`~twin.core.grid.Grid` or a :class:`PointSet`) to a *target* layout, both
on the same communicator but with any resolution, extent and parallel decomposition: each rank builds the rows of the
target points it owns, with columns in the source's PETSc global ordering (the DMDA's application ordering converts
natural indices), so applying a map is one ``MatMult`` whose communication PETSc plans once.

Kinds
-----
consistent
    Multilinear interpolation (linear / bilinear / trilinear) of the source at the target points (cell centres or
    nodes). Rows sum to one; linear fields are reproduced exactly, also in the half cell between the last cell centre
    and the boundary (linear extrapolation there), and smooth fields converge at second order.
conservative
    Cell-overlap averaging between cell-centred grids: ``y_t = sum_s |C_t cap C_s| x_s / |C_t|`` for target cells
    ``C_t`` and source cells ``C_s``. Preserves the integral ``sum_t |C_t| y_t = sum_s |C_s cap B_t| x_s`` exactly,
    which is the source integral whenever the target box ``B_t`` covers the source box. Target cells partly outside
    the source box average the covered part with zero.
nearest
    Value of the nearest source point (for point sets; on a grid source the per-axis nearest index is the Euclidean
    nearest point).
site (:func:`site_map`)
    The source sampled at one point (consistent or nearest) and given to every target point: a *uniform* field,
    e.g. the wind at a structure's site from an atmosphere whose coordinates have nothing to do with the structure's.

Fields with ``dof > 1`` are mapped component by component (both layouts must have the same ``dof``).

Length units
------------
Coordinates are compared as numbers, so both layouts must use the same length unit. Components with different
``length_units`` (a tumour grid in mm, a structure in m) are reconciled by :func:`rescaled`, which gives a copy of the
target layout with its coordinates in the source's unit and the same parallel layout, to build the map on.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import scipy.sparse as sp
from petsc4py import PETSc

from twin.core.errors import CouplingError
from twin.core.grid import Grid, multilinear_weights
from twin.core.log import get_logger

log = get_logger("twin.coupling")


class PointSet:
    """Scattered points owned by the ranks of a communicator (e.g. sensor sites, structure nodes).

    Parameters
    ----------
    comm : mpi4py communicator
    points : ndarray, shape (m_local, dim)
        The points this rank owns; the global ordering is by rank, then local order.
    dof : int
        Values per point.
    name : str
    """

    def __init__(self, comm, points: np.ndarray, dof: int = 1, name: str = "points"):
        self.comm = comm
        self.points = np.atleast_2d(np.asarray(points, dtype=float))
        if self.points.size == 0:
            self.points = self.points.reshape(0, self.points.shape[-1] if self.points.ndim == 2 else 1)
        self.dof = int(dof)
        self.name = name
        self.dim = self.points.shape[1]
        counts = comm.allgather(self.points.shape[0])
        self.offset = int(sum(counts[: comm.Get_rank()]))
        self.size = int(sum(counts))

    def create_global(self) -> PETSc.Vec:
        return PETSc.Vec().createMPI((self.points.shape[0] * self.dof, self.size * self.dof), comm=self.comm)

    def all_points(self) -> np.ndarray:
        """Every point, in global order, on every rank."""
        return np.concatenate(self.comm.allgather(self.points)).reshape(-1, self.dim)


Layout = Grid | PointSet


def _comm(layout: Layout):
    return layout.comm_mpi() if isinstance(layout, Grid) else layout.comm


def _target_points(target: Layout) -> np.ndarray:
    """Owned target points in the target's local (C) order, shape (m_local, dim)."""
    if isinstance(target, Grid):
        return np.stack([m.ravel() for m in target.owned_mesh()], axis=1)
    return target.points


class GridMap:
    """``y = M x`` from vectors on ``source`` to vectors on ``target``; owns the PETSc matrix.

    Attributes
    ----------
    kind : str
        ``consistent``, ``conservative`` or ``nearest``.
    matrix : PETSc.Mat
        Rows laid out like target vectors, columns like source vectors.
    """

    def __init__(self, source: Layout, target: Layout, matrix: PETSc.Mat, kind: str, name: str):
        self.source, self.target, self.matrix, self.kind, self.name = source, target, matrix, kind, name

    def apply(self, x: PETSc.Vec, y: PETSc.Vec | None = None) -> PETSc.Vec:
        """Map ``x`` (a source vector) into ``y`` (a new target vector when not given). Collective."""
        ncols = self.matrix.getLocalSize()[1]
        if x.getLocalSize() != ncols:
            raise CouplingError(f"mapping '{self.name}': source vector has {x.getLocalSize()} local values, the map "
                                f"expects {ncols} (a vector on a different grid or decomposition?)")
        y = y if y is not None else self.matrix.createVecLeft()
        self.matrix.mult(x, y)
        return y

    def apply_transpose(self, y: PETSc.Vec, x: PETSc.Vec | None = None) -> PETSc.Vec:
        """``x = M^T y`` (the adjoint of the map). Collective."""
        x = x if x is not None else self.matrix.createVecRight()
        self.matrix.multTranspose(y, x)
        return x

    def destroy(self) -> None:
        self.matrix.destroy()

    def __repr__(self) -> str:
        return f"GridMap({self.name!r}, kind={self.kind!r}, size={self.matrix.getSize()})"


def _check_pair(source: Layout, target: Layout, name: str) -> None:
    if source.dof != target.dof:
        raise CouplingError(f"mapping '{name}': source has dof={source.dof}, target dof={target.dof}")
    sdim = source.dim
    tdim = target.dim
    if sdim != tdim:
        raise CouplingError(f"mapping '{name}': source is {sdim}-D, target is {tdim}-D")
    if _comm(source).Get_size() != _comm(target).Get_size():
        raise CouplingError(f"mapping '{name}': source and target live on communicators of different sizes")


def _to_petsc(source: Layout, natural_points: np.ndarray) -> np.ndarray:
    """PETSc global column indices for (natural point index, component) pairs, flattened as point*dof + c."""
    nat = natural_points.astype(np.int64)
    if isinstance(source, Grid):
        ao = source.da.getAO()
        return np.asarray(ao.app2petsc(nat.astype(PETSc.IntType)), dtype=np.int64)
    return nat


def _assemble(source: Layout, target: Layout, rows: np.ndarray, points: np.ndarray, weights: np.ndarray,
              n_rows_local: int) -> PETSc.Mat:
    """AIJ matrix from (local target row, natural source point, weight) triplets; expands over dof."""
    dof = source.dof
    rows = np.concatenate([rows * dof + c for c in range(dof)])
    cols_nat = np.concatenate([points * dof + c for c in range(dof)])
    weights = np.tile(weights, dof)
    keep = weights != 0.0
    rows, cols_nat, weights = rows[keep], cols_nat[keep], weights[keep]
    cols = _to_petsc(source, cols_nat)
    m_local = n_rows_local * dof
    local = sp.csr_matrix((weights, (rows, cols)), shape=(m_local, _global_size(source)))
    local.sum_duplicates()
    local.sort_indices()
    probe_t, probe_s = target.create_global(), source.create_global()
    sizes = ((probe_t.getLocalSize(), probe_t.getSize()), (probe_s.getLocalSize(), probe_s.getSize()))
    probe_t.destroy()
    probe_s.destroy()
    M = PETSc.Mat().createAIJ(size=sizes, csr=(local.indptr.astype(PETSc.IntType),
                                               local.indices.astype(PETSc.IntType), local.data),
                              comm=_comm(target))
    return M


def _global_size(layout: Layout) -> int:
    return (layout.size if isinstance(layout, PointSet) else int(np.prod(layout.shape))) * layout.dof


def _natural_flat(grid: Grid, index: Sequence[np.ndarray]) -> np.ndarray:
    flat = np.zeros_like(np.asarray(index[0]), dtype=np.int64)
    for axis in reversed(range(grid.dim)):
        flat = flat * grid.shape[axis] + np.asarray(index[axis], dtype=np.int64)
    return flat


def _outside(grid: Grid, points: np.ndarray, name: str, outside: str) -> np.ndarray:
    """Mask of points outside the grid box (beyond round-off); raises unless ``outside`` allows them."""
    tol = 1e-10 * np.asarray([hi - lo for lo, hi in grid.extent])
    lo = np.asarray([e[0] for e in grid.extent]) - tol
    hi = np.asarray([e[1] for e in grid.extent]) + tol
    periodic = np.asarray(grid.periodic)
    bad = np.any(((points < lo) | (points > hi)) & ~periodic, axis=1)
    if outside == "error":
        n_bad = int(_comm(grid).allreduce(int(bad.sum())))
        if n_bad:
            first = points[bad][0].tolist() if bad.any() else None
            raise CouplingError(f"mapping '{name}': {n_bad} target point(s) lie outside the source box "
                                f"{[list(e) for e in grid.extent]}" + (f", e.g. {first}" if first else "") +
                                "; make the grids overlap, or set outside: zero in the route (those points get 0)")
    return bad


def consistent_map(source: Grid, target: Layout, *, name: str = "consistent", outside: str = "error") -> GridMap:
    """Multilinear interpolation of ``source`` at the target points (see module docstring).

    Parameters
    ----------
    outside : {"error", "zero"}
        What to do with target points outside the source box: raise :class:`CouplingError`, or give them 0.
    """
    if not isinstance(source, Grid):
        raise CouplingError(f"mapping '{name}': consistent interpolation needs a grid source; use nearest for "
                            f"point sets")
    _check_pair(source, target, name)
    pts = _target_points(target)
    m = pts.shape[0]
    bad = _outside(source, pts, name, outside)
    # linear extrapolation in the boundary half cells keeps linear fields exact
    index, weights = multilinear_weights(source, pts, extrapolate="linear")
    weights[:, bad] = 0.0
    rows = np.tile(np.arange(m), len(weights))
    cols = np.concatenate([_natural_flat(source, corner) for corner in index])
    M = _assemble(source, target, rows, cols, weights.ravel(), m)
    return GridMap(source, target, M, "consistent", name)


def _overlap_1d(t_edges_lo: np.ndarray, t_edges_hi: np.ndarray, s_lo: float, hs: float, ns: int):
    """Overlap lengths of target intervals with the source cells ``[s_lo + j hs, s_lo + (j+1) hs]``.

    Returns (target index, source index, overlap length) triplets with positive overlap.
    """
    width = float(np.max(t_edges_hi - t_edges_lo)) if t_edges_lo.size else 0.0
    k = int(np.ceil(width / hs)) + 2
    j0 = np.floor((t_edges_lo - s_lo) / hs).astype(np.int64)
    cand = j0[:, None] + np.arange(k)[None, :]
    valid = (cand >= 0) & (cand < ns)
    cj = np.clip(cand, 0, ns - 1)
    left = np.maximum(t_edges_lo[:, None], s_lo + cj * hs)
    right = np.minimum(t_edges_hi[:, None], s_lo + (cj + 1) * hs)
    length = np.where(valid, right - left, 0.0)
    ti, kk = np.nonzero(length > 0)
    return ti, cj[ti, kk], length[ti, kk]


def conservative_map(source: Grid, target: Grid, *, name: str = "conservative") -> GridMap:
    """Cell-overlap averaging between cell-centred, non-periodic grids (see module docstring)."""
    if not (isinstance(source, Grid) and isinstance(target, Grid)):
        raise CouplingError(f"mapping '{name}': conservative mapping needs grids on both sides")
    _check_pair(source, target, name)
    if source.centering != "cell" or target.centering != "cell":
        raise CouplingError(f"mapping '{name}': conservative mapping needs cell-centred grids (finite volumes); "
                            f"use consistent for node-centred fields")
    if any(source.periodic) or any(target.periodic):
        raise CouplingError(f"mapping '{name}': conservative mapping of periodic grids is not supported")
    factors = []
    for a in range(source.dim):
        (tlo, _), ht = target.extent[a], target.spacing[a]
        i = np.arange(*target.owned[a])
        ti, sj, length = _overlap_1d(tlo + i * ht, tlo + (i + 1) * ht, source.extent[a][0], source.spacing[a],
                                     source.shape[a])
        factors.append(sp.csr_matrix((length / ht, (ti, sj)), shape=(len(i), source.shape[a])))
    # C order: the x axis varies fastest, so the tensor product is kron(z, y, x)
    W = factors[0]
    for f in factors[1:]:
        W = sp.kron(f, W, format="csr")
    W = W.tocoo()
    M = _assemble(source, target, W.row.astype(np.int64), W.col.astype(np.int64), W.data, W.shape[0])
    return GridMap(source, target, M, "conservative", name)


def nearest_map(source: Layout, target: Layout, *, name: str = "nearest") -> GridMap:
    """Value of the nearest source point at each target point (grids or point sets on either side)."""
    _check_pair(source, target, name)
    pts = _target_points(target)
    if isinstance(source, Grid):
        beyond = int(_comm(source).allreduce(int(_outside(source, pts, name, "zero").sum())))
        if beyond:  # the nearest edge value, far from where it was computed: allowed (a site, a small margin), said
            log.warning("mapping '%s': %d target point(s) lie outside the source box %s and take the value at its "
                        "nearest edge", name, beyond, [list(e) for e in source.extent])
        offset = 0.5 if source.centering == "cell" else 0.0
        idx = []
        for a in range(source.dim):
            n, (lo, _), h = source.shape[a], source.extent[a], source.spacing[a]
            i = np.rint((pts[:, a] - lo) / h - offset).astype(np.int64)
            idx.append(np.mod(i, n) if source.periodic[a] else np.clip(i, 0, n - 1))
        cols = _natural_flat(source, idx)
    else:
        from scipy.spatial import cKDTree

        everything = source.all_points()
        if everything.shape[0] == 0:
            raise CouplingError(f"mapping '{name}': the source point set is empty")
        cols = cKDTree(everything).query(pts)[1].astype(np.int64) if pts.shape[0] else np.zeros(0, np.int64)
    m = pts.shape[0]
    M = _assemble(source, target, np.arange(m), cols, np.ones(m), m)
    return GridMap(source, target, M, "nearest", name)


def rescaled(layout: Layout, factor: float) -> Layout:
    """A copy of ``layout`` with every coordinate multiplied by ``factor`` and the same parallel layout. Collective.

    Used to build a map between components whose coordinates are in different length units: ``factor`` converts the
    target's unit into the source's. The caller destroys a returned :class:`Grid` once the map is built.
    """
    if isinstance(layout, PointSet):
        return PointSet(layout.comm, layout.points * factor, layout.dof, layout.name)
    copy = Grid(layout.comm_mpi(), layout.shape, [(lo * factor, hi * factor) for lo, hi in layout.extent],
                dof=layout.dof, stencil_width=layout.stencil_width, periodic=layout.periodic,
                centering=layout.centering, proc_sizes=layout.da.getProcSizes(), name=layout.name)
    if copy.owned != layout.owned:
        copy.destroy()
        raise CouplingError(f"grid '{layout.name}': cannot rebuild its parallel layout in other length units")
    return copy


def site_map(kind: str, source: Layout, target: Layout, point, *, name: str = "site") -> GridMap:
    """``y_t = (M_kind x)(point)`` for every target point ``t``: the source sampled at ``point`` (source coordinates),
    broadcast. Built as the product of a ``kind`` map onto a one-point set (owned by rank 0) and the map giving that
    one value to every target point, so its rows hold the few interpolation weights of the site. The target's
    geometry plays no part, so it may have another dimension than the source (a face of a 2-D grid, a scalar).
    Collective."""
    if kind not in ("consistent", "nearest"):
        raise CouplingError(f"mapping '{name}': a site is sampled by consistent or nearest mapping, not {kind!r}")
    comm = _comm(source)
    point = np.asarray(point, dtype=float).reshape(1, -1)
    if point.shape[1] != source.dim:
        raise CouplingError(f"mapping '{name}': site {point[0].tolist()} has {point.shape[1]} coordinates, the "
                            f"source is {source.dim}-D")
    site = PointSet(comm, point if comm.Get_rank() == 0 else np.zeros((0, source.dim)), dof=source.dof,
                    name=f"{name} site")
    sample = build_map(kind, source, site, f"{name} (at the site)")
    try:
        if site.dof != target.dof or comm.Get_size() != _comm(target).Get_size():
            raise CouplingError(f"mapping '{name}': source has dof={site.dof} on {comm.Get_size()} ranks, target "
                                f"dof={target.dof} on {_comm(target).Get_size()}")
        m = _target_points(target).shape[0]
        spread = GridMap(site, target, _assemble(site, target, np.arange(m), np.zeros(m, dtype=np.int64),
                                                 np.ones(m), m), "spread", f"{name} (to every target point)")
        try:
            M = spread.matrix.matMult(sample.matrix)
        finally:
            spread.destroy()
    finally:
        sample.destroy()
    return GridMap(source, target, M, f"site/{kind}", name)


#: mapping kinds by name (the ``mapping:`` key of a coupling route)
MAPPINGS: dict[str, Callable[..., GridMap]] = {
    "consistent": consistent_map,
    "conservative": conservative_map,
    "nearest": nearest_map,
}


def build_map(kind: str, source: Layout, target: Layout, name: str, outside: str = "error") -> GridMap:
    """The map of ``kind`` from ``source`` to ``target``; :class:`CouplingError` for an unknown kind. ``outside``:
    what a consistent map does with target points outside the source's box (``error`` or ``zero``)."""
    try:
        factory = MAPPINGS[kind]
    except KeyError:
        raise CouplingError(f"mapping '{name}': unknown kind {kind!r}; known: {sorted(MAPPINGS)}") from None
    if kind == "consistent":
        return factory(source, target, name=name, outside=outside)
    return factory(source, target, name=name)
