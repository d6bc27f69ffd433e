"""Structured grids on a PETSc DMDA: physical extent, spacing, coordinates, owned ranges and gathering for output.

Conventions
-----------
* ``shape`` and ``extent`` follow PETSc's axis order ``(x, y[, z])``.
* NumPy views of vectors follow C order, the reverse: a 2-D field is an array ``a[j, i]`` of shape ``(ny, nx)``
  (``a[k, j, i]`` in 3-D), with a trailing axis of length ``dof`` when ``dof > 1``. This is the memory layout of a
  DMDA vector, so the views are free and kernels can be vectorised NumPy over them.
* ``centering="cell"``: ``n`` cells of width ``h = L / n`` with centres ``lo + (i + 1/2) h`` (finite volumes).
  ``centering="node"``: ``n`` nodes with spacing ``h = L / (n - 1)`` including both ends (finite elements); on a
  periodic axis nodes are ``lo + i h`` with ``h = L / n``.

:func:`multilinear_weights` gives the weights of multilinear interpolation between a grid's points, the one
computation behind the observation operators' point interpolation and the coupling's consistent maps.
"""

from __future__ import annotations

from itertools import product
from typing import Callable, Sequence

import numpy as np
from petsc4py import PETSc

from twin.core.box import outside_box
from twin.core.errors import ModelError


class Grid:
    """A box ``prod [lo_a, hi_a]`` discretised by a PETSc DMDA.

    Parameters
    ----------
    comm : mpi4py or petsc4py communicator
        The communicator the grid (and every vector on it) lives on.
    shape : sequence of int
        Number of cells (``centering="cell"``) or nodes (``"node"``) along each axis, PETSc order ``(nx, ny[, nz])``.
    extent : sequence of (float, float)
        ``(lo, hi)`` of each axis, in metres unless the owner says otherwise.
    dof : int
        Unknowns per grid point (e.g. 3 for shallow water ``h, u, v``).
    stencil_width : int
        Ghost-layer width for local (ghosted) vectors.
    periodic : bool or sequence of bool
        Periodicity per axis.
    stencil : {"star", "box"}
        DMDA stencil type; ``box`` is needed for Q1 elements and corner-coupled stencils.
    centering : {"cell", "node"}
        Where the unknowns sit.
    name : str
        Used in error messages.
    """

    def __init__(
        self,
        comm,
        shape: Sequence[int],
        extent: Sequence[Sequence[float]],
        *,
        dof: int = 1,
        stencil_width: int = 1,
        periodic: bool | Sequence[bool] = False,
        stencil: str = "star",
        centering: str = "cell",
        proc_sizes: Sequence[int] | None = None,
        name: str = "grid",
    ):
        shape = tuple(int(n) for n in shape)
        extent = tuple((float(lo), float(hi)) for lo, hi in extent)
        if not 1 <= len(shape) <= 3:
            raise ModelError(name, f"grid must be 1-, 2- or 3-dimensional, got shape {shape}")
        if len(extent) != len(shape):
            raise ModelError(name, f"grid shape {shape} has {len(shape)} axes but extent has {len(extent)}")
        if isinstance(periodic, bool):
            periodic = (periodic,) * len(shape)
        periodic = tuple(bool(p) for p in periodic)
        if len(periodic) != len(shape):
            raise ModelError(name, f"periodic has {len(periodic)} entries for a {len(shape)}-D grid")
        minimum = 2 if centering == "node" else 1
        for axis, (n, (lo, hi)) in enumerate(zip(shape, extent)):
            if n < minimum:
                raise ModelError(name, f"axis {'xyz'[axis]} needs at least {minimum} points, got {n}")
            if not (np.isfinite(lo) and np.isfinite(hi)) or hi <= lo:
                raise ModelError(name, f"axis {'xyz'[axis]} extent ({lo}, {hi}) must be finite with hi > lo")
        if centering not in ("cell", "node"):
            raise ModelError(name, f"centering must be 'cell' or 'node', got {centering!r}")
        if stencil not in ("star", "box"):
            raise ModelError(name, f"stencil must be 'star' or 'box', got {stencil!r}")

        self.name = name
        self.comm = comm
        self.shape = shape
        self.extent = extent
        self.dof = int(dof)
        self.periodic = periodic
        self.centering = centering
        self.stencil_width = int(stencil_width)
        btype = [PETSc.DM.BoundaryType.PERIODIC if p else PETSc.DM.BoundaryType.NONE for p in periodic]
        stype = PETSc.DMDA.StencilType.STAR if stencil == "star" else PETSc.DMDA.StencilType.BOX
        ranks = comm.Get_size() if hasattr(comm, "Get_size") else comm.getSize()
        if len(shape) == 1 and not proc_sizes and ranks > 1 and shape[0] // ranks < max(1, self.stencil_width):
            # PETSc checks each rank's block on that rank alone: the ranks whose block is too small fail while the
            # others wait in the next collective call (a probe saw a 60 s hang, then MPI_Abort). Said here, before
            # PETSc is asked, on every rank alike.
            most = shape[0] // max(1, self.stencil_width)
            raise ModelError(name, f"{shape[0]} points cannot be split over {ranks} MPI ranks: each rank needs a "
                                   f"block of at least {max(1, self.stencil_width)} (the stencil's width); run it on "
                                   f"at most {most} rank(s) (mpiexec -n {most}) or on a larger grid")
        if len(shape) > 1 and not proc_sizes and ranks > 1 and any(n // ranks < max(1, self.stencil_width)
                                                                    for n in shape):
            self._check_split(comm, btype, ranks)
        try:
            self.da = PETSc.DMDA().create(
                dim=len(shape),
                dof=self.dof,
                sizes=shape,
                proc_sizes=tuple(proc_sizes) if proc_sizes else None,
                boundary_type=tuple(btype),
                stencil_type=stype,
                stencil_width=self.stencil_width,
                comm=comm,
            )
            self.da.setUp()
        except PETSc.Error as exc:  # a grid PETSc cannot split over these ranks ("Partition ... is too fine")
            if exc.ierr != 63:  # not PETSC_ERR_ARG_OUTOFRANGE (memory, 55, has its own one line where it is caught)
                raise
            from twin.core.petsc import petsc_reason

            raise ModelError(name, f"a grid of shape {shape} cannot be laid out on {ranks} MPI rank(s): PETSc says "
                                   f"{petsc_reason(exc)}; run it on fewer ranks (mpiexec -n ...) or on a larger "
                                   "grid") from None
        self._natural = None
        self._to_zero = None

    def _check_split(self, comm, btype, ranks: int) -> None:
        """Refuse, on every rank alike, a 2-D/3-D grid whose PETSc layout over ``ranks`` gives some rank a block
        narrower than the stencil along a split (or periodic) axis.

        PETSc checks each rank's block on that rank alone, so with uneven blocks (3 points split 2 + 1) the ranks with
        the narrow block fail and the others wait for ever in the next collective call (a probe's hang). PETSc's own
        layout is asked, not recomputed: a DMDA of the same sizes and boundaries with stencil width 0 (which no block
        fails) is set up, its ownership ranges read and their narrowest widths agreed over the ranks, then it is
        destroyed. Only grids that could be split that fine pay for it (some axis with fewer than ``ranks`` x width
        points)."""
        width = max(1, self.stencil_width)
        try:
            probe = PETSc.DMDA().create(dim=len(self.shape), dof=1, sizes=self.shape, boundary_type=tuple(btype),
                                        stencil_width=0, comm=comm)
            probe.setUp()
        except PETSc.Error as exc:  # fewer points than ranks along an axis: PETSc says so on every rank alike
            if exc.ierr != 63:
                raise
            from twin.core.petsc import petsc_reason

            raise ModelError(self.name, f"a grid of shape {self.shape} cannot be laid out on {ranks} MPI rank(s): "
                                        f"PETSc says {petsc_reason(exc)}; run it on fewer ranks (mpiexec -n ...) or on "
                                        "a larger grid") from None
        try:
            procs = probe.getProcSizes()
            from mpi4py import MPI

            local = np.array([hi - lo for lo, hi in probe.getRanges()], dtype=np.int64)
            narrowest = np.empty_like(local)
            (comm if hasattr(comm, "Allreduce") else comm.tompi4py()).Allreduce(local, narrowest, op=MPI.MIN)
        finally:
            probe.destroy()
        for axis, (n, p) in enumerate(zip(narrowest, procs)):
            if n < width and (p > 1 or self.periodic[axis]):
                layout = " x ".join(str(int(q)) for q in procs)
                raise ModelError(self.name, f"a grid of shape {self.shape} cannot be laid out on {ranks} MPI rank(s): "
                                            f"PETSc splits it {layout}, which leaves a rank a block {n} point(s) wide "
                                            f"along {'xyz'[axis]}, less than the stencil's width {width}; run it on "
                                            "fewer ranks (mpiexec -n ...) or on a larger grid")

    # -- geometry --------------------------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        """Number of grid points (not unknowns)."""
        return int(np.prod(self.shape))

    @property
    def spacing(self) -> tuple[float, ...]:
        h = []
        for n, (lo, hi), p in zip(self.shape, self.extent, self.periodic):
            h.append((hi - lo) / (n if (self.centering == "cell" or p) else n - 1))
        return tuple(h)

    @property
    def cell_volume(self) -> float:
        return float(np.prod(self.spacing))

    def axis_coordinates(self, axis: int) -> np.ndarray:
        """All coordinates along ``axis`` (PETSc order: 0 is x)."""
        n, (lo, _), h = self.shape[axis], self.extent[axis], self.spacing[axis]
        offset = 0.5 if self.centering == "cell" else 0.0
        return lo + (np.arange(n) + offset) * h

    @property
    def owned(self) -> tuple[tuple[int, int], ...]:
        """Owned index ranges ``((xs, xe), (ys, ye)[, (zs, ze)])`` of this rank, PETSc order."""
        return tuple(tuple(r) for r in self.da.getRanges())

    @property
    def owned_slices(self) -> tuple[slice, ...]:
        """Slices into a global C-ordered array (``a[j, i]``) selecting this rank's owned block."""
        return tuple(slice(s, e) for s, e in reversed(self.owned))

    @property
    def local_shape(self) -> tuple[int, ...]:
        """Shape of this rank's owned block in C order, without the dof axis."""
        return tuple(e - s for s, e in reversed(self.owned))

    def owned_mesh(self) -> tuple[np.ndarray, ...]:
        """Coordinates of the owned points as arrays of ``local_shape``, returned in PETSc order ``(X, Y[, Z])``."""
        axes = [self.axis_coordinates(a)[s:e] for a, (s, e) in enumerate(self.owned)]
        grids = np.meshgrid(*reversed(axes), indexing="ij")
        return tuple(reversed(grids))

    def mesh(self) -> tuple[np.ndarray, ...]:
        """Coordinates of every point (all ranks), arrays of the global C-order shape, PETSc order ``(X, Y[, Z])``."""
        axes = [self.axis_coordinates(a) for a in range(self.dim)]
        return tuple(reversed(np.meshgrid(*reversed(axes), indexing="ij")))

    def contains(self, points: np.ndarray) -> np.ndarray:
        """Boolean mask: which of the points (shape ``(m, dim)``) lie inside the box (:func:`outside_box`)."""
        return ~outside_box(points, self.extent)

    # -- vectors and views -----------------------------------------------------------------------------------------
    def create_global(self) -> PETSc.Vec:
        return self.da.createGlobalVec()

    def create_local(self) -> PETSc.Vec:
        return self.da.createLocalVec()

    def _view_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return shape + ((self.dof,) if self.dof > 1 else ())

    def owned_array(self, vec: PETSc.Vec, readonly: bool = False) -> np.ndarray:
        """A NumPy view of the owned block of a global vector, shape ``local_shape`` (+ ``(dof,)``)."""
        arr = vec.getArray(readonly=readonly)
        return arr.reshape(self._view_shape(self.local_shape))

    def ghosted_shape(self) -> tuple[int, ...]:
        return tuple(e - s for s, e in reversed(self.da.getGhostRanges()))

    def ghosted_array(self, local_vec: PETSc.Vec, readonly: bool = True) -> np.ndarray:
        """A NumPy view of a local (ghosted) vector, C order, ghost layers included."""
        return local_vec.getArray(readonly=readonly).reshape(self._view_shape(self.ghosted_shape()))

    def ghost_offsets(self) -> tuple[int, ...]:
        """Offset of the owned block inside the ghosted block, C order (for slicing ghosted arrays)."""
        return tuple(o - g for (o, _), (g, _) in zip(reversed(self.owned), reversed(self.da.getGhostRanges())))

    def global_to_local(self, gvec: PETSc.Vec, lvec: PETSc.Vec) -> None:
        self.da.globalToLocal(gvec, lvec, addv=PETSc.InsertMode.INSERT_VALUES)

    def from_function(self, f: Callable[..., np.ndarray], vec: PETSc.Vec | None = None) -> PETSc.Vec:
        """Fill a global vector with ``f(X, Y[, Z])`` evaluated at the owned points (vectorised)."""
        vec = vec if vec is not None else self.create_global()
        values = np.asarray(f(*self.owned_mesh()), dtype=PETSc.ScalarType)
        self.owned_array(vec)[...] = values.reshape(self._view_shape(self.local_shape))
        return vec

    def integrate(self, vec: PETSc.Vec) -> float | np.ndarray:
        """Midpoint-rule integral over the box (per dof when ``dof > 1``); collective."""
        a = self.owned_array(vec, readonly=True)
        local = a.reshape(-1, self.dof).sum(axis=0) * self.cell_volume
        total = self.comm_mpi().allreduce(local)
        return float(total[0]) if self.dof == 1 else np.asarray(total)

    def comm_mpi(self):
        """The grid's communicator as an mpi4py communicator."""
        return self.da.getComm().tompi4py()

    # -- gathering ------------------------------------------------------------------------------------------------
    def _zero_scatter(self):
        if self._to_zero is None:
            self._natural = self.da.createNaturalVec()
            self._to_zero = PETSc.Scatter.toZero(self._natural)
        return self._natural, self._to_zero

    def gather(self, vec: PETSc.Vec) -> np.ndarray | None:
        """The whole field on rank 0 in natural C order (shape ``shape[::-1]`` + dof); ``None`` on other ranks."""
        natural, (scatter, zero) = self._zero_scatter()
        self.da.globalToNatural(vec, natural)
        scatter.scatter(natural, zero, addv=PETSc.InsertMode.INSERT_VALUES, mode=PETSc.ScatterMode.FORWARD)
        if self.da.getComm().getRank() != 0:
            return None
        return zero.getArray(readonly=True).copy().reshape(self._view_shape(self.shape[::-1]))

    def allgather(self, vec: PETSc.Vec) -> np.ndarray:
        """The whole field on every rank, natural C order."""
        full = self.gather(vec)
        return self.comm_mpi().bcast(full, root=0)

    def scatter(self, array: np.ndarray | None, vec: PETSc.Vec) -> PETSc.Vec:
        """Distribute a whole field given on rank 0 (natural C order) into the global vector ``vec``."""
        natural, (scatter, zero) = self._zero_scatter()
        if self.da.getComm().getRank() == 0:
            zero.getArray()[...] = np.asarray(array, dtype=PETSc.ScalarType).ravel()
        scatter.scatter(zero, natural, addv=PETSc.InsertMode.INSERT_VALUES, mode=PETSc.ScatterMode.REVERSE)
        self.da.naturalToGlobal(natural, vec)
        return vec

    def set_global(self, array: np.ndarray, vec: PETSc.Vec) -> PETSc.Vec:
        """Fill ``vec`` from a whole field known on every rank (natural C order): each rank copies its block."""
        full = np.asarray(array).reshape(self._view_shape(self.shape[::-1]))
        self.owned_array(vec)[...] = full[self.owned_slices]
        return vec

    def destroy(self) -> None:
        for obj in (self._natural, self._to_zero[0] if self._to_zero else None,
                    self._to_zero[1] if self._to_zero else None, self.da):
            if obj is not None:
                obj.destroy()
        self._natural = self._to_zero = None

    def __repr__(self) -> str:
        return (f"Grid(shape={self.shape}, extent={self.extent}, dof={self.dof}, periodic={self.periodic}, "
                f"centering={self.centering!r})")


def multilinear_weights(grid: Grid, points: np.ndarray, extrapolate: str = "constant") -> tuple[np.ndarray, np.ndarray]:
    """Multilinear (linear, bilinear, trilinear) interpolation between the points of ``grid`` at physical ``points``.

    The value at a point ``x`` is ``sum_c weights[c] * values[index[c]]`` over the ``2**dim`` corners ``c`` of the
    grid cell around ``x``. Along axis ``a``, with ``s = (x_a - lo_a) / h_a`` (less 1/2 on a cell-centred grid: the
    lattice of cell centres) and ``i = floor(s)``, the lower neighbour ``i`` has weight ``1 - w`` and the upper one
    ``i + 1`` weight ``w = s - i``; a corner's weight is the product of its axes' weights, so the weights of a point
    sum to one and linear functions are interpolated exactly. Corner ``c`` is the ``c``-th of
    ``itertools.product((0, 1), repeat=dim)`` (1: the upper neighbour; axis 0 varies slowest).

    Periodic axes wrap. On a non-periodic axis a point beyond the outermost grid points (in the half cells at the
    boundary of a cell-centred grid, or outside the box) takes the first or last pair of points and the value is
    extrapolated: ``extrapolate="constant"`` clips ``w`` to ``[0, 1]`` (the nearest point's value), ``"linear"``
    keeps it (linear fields stay exact up to the boundary). An axis with a single point takes that point.

    Parameters
    ----------
    grid : Grid
        Only its geometry is used (shape, extent, spacing, periodicity, centering).
    points : array, shape (m, dim)
        Coordinates in the grid's length units; containment is the caller's to check.
    extrapolate : {"constant", "linear"}

    Returns
    -------
    index : int64 array, shape (2**dim, dim, m)
        The per-axis indices (PETSc axis order) of each corner's grid point.
    weights : array, shape (2**dim, m)
    """
    if extrapolate not in ("constant", "linear"):
        raise ValueError(f"extrapolate must be 'constant' or 'linear', got {extrapolate!r}")
    points = np.atleast_2d(np.asarray(points, dtype=float))
    m = points.shape[0]
    offset = 0.5 if grid.centering == "cell" else 0.0
    lower, upper, weight = [], [], []
    for a in range(grid.dim):
        n, (lo, _), h = grid.shape[a], grid.extent[a], grid.spacing[a]
        s = (points[:, a] - lo) / h - offset
        if grid.periodic[a]:
            i0 = np.floor(s).astype(np.int64)
            w = s - i0
            lower.append(np.mod(i0, n))
            upper.append(np.mod(i0 + 1, n))
        elif n == 1:
            i0 = np.zeros(m, dtype=np.int64)
            w = np.zeros(m)
            lower.append(i0)
            upper.append(i0)
        else:
            i0 = np.clip(np.floor(s).astype(np.int64), 0, n - 2)
            w = s - i0
            if extrapolate == "constant":
                w = np.clip(w, 0.0, 1.0)
            lower.append(i0)
            upper.append(i0 + 1)
        weight.append(w)
    corners = list(product((0, 1), repeat=grid.dim))
    index = np.empty((len(corners), grid.dim, m), dtype=np.int64)
    weights = np.empty((len(corners), m))
    for c, ups in enumerate(corners):
        wt = np.ones(m)
        for a, up in enumerate(ups):
            index[c, a] = upper[a] if up else lower[a]
            wt = wt * (weight[a] if up else 1.0 - weight[a])
        weights[c] = wt
    return index, weights
