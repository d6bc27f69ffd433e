"""Observation operators: the map H from a model state to what an instrument records, with its adjoint.

An operator returns the whole observation vector on every rank of the model's communicator (observation counts are
small next to state sizes), and applies the transpose of its linearisation for adjoint methods (4D-Var). Errors are
Gaussian with a diagonal covariance ``R = diag(error_std**2)`` unless an operator says otherwise.

Linear operators (point interpolation, gridded subsets, averages over a region) are stored as a parallel PETSc AIJ
matrix with one row per observation, so apply and transpose are a MatMult / MatMultTranspose.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import scipy.sparse as sp
from petsc4py import PETSc

from twin.core.errors import ObservationError
from twin.core.grid import Grid, multilinear_weights


class ObservationOperator(ABC):
    """Maps a state vector to ``n_obs`` observations.

    Attributes
    ----------
    name : str
        Used in diagnostics and errors (e.g. ``stations``).
    error_std : ndarray, shape (n_obs,)
        Observation error standard deviations (must be positive).
    locations : ndarray, shape (n_obs, dim), optional
        Physical positions (used by localisation); ``None`` when observations are not local.
    """

    name: str = "obs"

    def __init__(self, error_std: Sequence[float] | float, n_obs: int, locations: np.ndarray | None = None,
                 name: str | None = None):
        if name is not None:
            self.name = name
        err = np.broadcast_to(np.asarray(error_std, dtype=float), (n_obs,)).copy()
        if n_obs < 1:
            raise ObservationError(f"observation operator '{self.name}': no observations")
        if not np.all(np.isfinite(err)) or np.any(err <= 0):
            raise ObservationError(f"observation operator '{self.name}': observation errors must be positive and "
                                   f"finite (min given {err.min():g})")
        self.error_std = err
        self.n_obs = int(n_obs)
        self.locations = None if locations is None else np.asarray(locations, dtype=float)

    @abstractmethod
    def apply(self, state: PETSc.Vec) -> np.ndarray:
        """``H(x)``: the observation vector, on every rank. Collective."""

    @abstractmethod
    def apply_adjoint(self, state: PETSc.Vec, dy: np.ndarray, out: PETSc.Vec) -> None:
        """Add ``H'(x)^T dy`` to ``out`` (a state-shaped vector). Collective."""

    def destroy(self) -> None:
        """Free PETSc objects."""


class LinearObservationOperator(ObservationOperator):
    """``H x`` with ``H`` a sparse matrix given in the grid's *natural* ordering (C order, dof fastest).

    Parameters
    ----------
    grid : Grid
        The state's grid.
    matrix : scipy.sparse matrix, shape (n_obs, grid.size * grid.dof)
        Same on every rank.
    error_std, locations, name :
        See :class:`ObservationOperator`.
    """

    def __init__(self, grid: Grid, matrix: sp.spmatrix, error_std, locations=None, name: str | None = None):
        matrix = sp.csr_matrix(matrix)
        super().__init__(error_std, matrix.shape[0], locations, name)
        n_state = grid.size * grid.dof
        if matrix.shape[1] != n_state:
            raise ObservationError(f"observation operator '{self.name}': matrix has {matrix.shape[1]} columns, "
                                   f"state has {n_state}")
        self.grid = grid
        self.matrix = matrix
        comm = grid.da.getComm()
        # Columns: natural (C-order, dof-fastest) index -> PETSc global index via the DMDA's application ordering.
        ao = grid.da.getAO()
        cols = ao.app2petsc(np.asarray(matrix.indices, dtype=PETSc.IntType).copy())
        # CSR input to PETSc wants each row's columns sorted; the PETSc ordering scrambles the natural order.
        row_of = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
        order = np.lexsort((cols, row_of))
        cols, data = cols[order], matrix.data[order]
        probe = grid.create_global()
        # Rows split as PETSc would (PETSC_DECIDE); each rank hands its block of rows over as CSR in one call.
        size, rank = comm.getSize(), comm.getRank()
        counts = [self.n_obs // size + (1 if r < self.n_obs % size else 0) for r in range(size)]
        r0 = sum(counts[:rank])
        r1 = r0 + counts[rank]
        indptr = (matrix.indptr[r0:r1 + 1] - matrix.indptr[r0]).astype(PETSc.IntType)
        lo, hi = matrix.indptr[r0], matrix.indptr[r1]
        H = PETSc.Mat().createAIJ(size=((counts[rank], self.n_obs), (probe.getLocalSize(), n_state)),
                                  csr=(indptr, cols[lo:hi], data[lo:hi]), comm=comm)
        H.assemble()
        self.H = H
        self._y = H.createVecLeft()
        self._to_all, self._y_all = PETSc.Scatter.toAll(self._y)
        probe.destroy()

    def apply(self, state: PETSc.Vec) -> np.ndarray:
        self.H.mult(state, self._y)
        self._to_all.scatter(self._y, self._y_all, addv=PETSc.InsertMode.INSERT_VALUES,
                             mode=PETSc.ScatterMode.FORWARD)
        return self._y_all.getArray(readonly=True).copy()

    def apply_adjoint(self, state: PETSc.Vec, dy: np.ndarray, out: PETSc.Vec) -> None:
        r0, r1 = self._y.getOwnershipRange()
        self._y.getArray()[...] = np.asarray(dy, dtype=float)[r0:r1]
        self.H.multTransposeAdd(self._y, out, out)

    def destroy(self) -> None:
        for obj in (self.H, self._y, self._to_all, self._y_all):
            obj.destroy()


def natural_index(grid: Grid, index: Sequence[np.ndarray], component: int = 0) -> np.ndarray:
    """Natural (C-order, dof-fastest) global index of grid points given per-axis indices in PETSc order (i, j, k)."""
    flat = np.zeros_like(np.asarray(index[0]), dtype=np.int64)
    for axis in reversed(range(grid.dim)):
        flat = flat * grid.shape[axis] + np.asarray(index[axis], dtype=np.int64)
    return flat * grid.dof + component


def interpolation_matrix(grid: Grid, points: np.ndarray, component: int = 0) -> sp.csr_matrix:
    """Multilinear interpolation of one state component at physical points, as a sparse matrix (natural ordering).

    Points must lie inside the grid's box; periodic axes wrap. Near a non-periodic boundary of a cell-centred grid the
    value is extrapolated as a constant from the nearest cell centre (:func:`~twin.core.grid.multilinear_weights`
    with ``extrapolate="constant"``).

    Raises
    ------
    ObservationError
        If a point lies outside the box (names the first such point).
    """
    points = np.atleast_2d(np.asarray(points, dtype=float))
    if points.shape[1] != grid.dim:
        raise ObservationError(f"points have {points.shape[1]} coordinates, grid is {grid.dim}-D")
    inside = grid.contains(points)
    if not inside.all():
        bad = int(np.flatnonzero(~inside)[0])
        raise ObservationError(f"observation point {points[bad].tolist()} lies outside the model domain "
                               f"{[list(e) for e in grid.extent]}")
    index, weights = multilinear_weights(grid, points, extrapolate="constant")
    rows = np.tile(np.arange(points.shape[0]), len(weights))
    cols = np.concatenate([natural_index(grid, corner, component) for corner in index])
    H = sp.csr_matrix((weights.ravel(), (rows, cols)), shape=(points.shape[0], grid.size * grid.dof))
    H.sum_duplicates()
    H.eliminate_zeros()
    return H


def point_matrix(model, points: np.ndarray, component: int) -> sp.csr_matrix:
    """The rows observing state ``component`` of ``model`` at physical ``points``: the model's own
    ``point_matrix(points, component)`` when it has one (a staggered grid, whose variables do not all sit at the cell
    centres), else :func:`interpolation_matrix` on ``model.grid``. What a file network's operator does
    (:mod:`twin.observations.file_network`) and what ``observations.nc`` checks a row against
    (:mod:`twin.observations.export`).

    Raises
    ------
    ObservationError
        If a point lies outside the model's domain.
    """
    own = getattr(model, "point_matrix", None)
    if callable(own):
        return own(points, component)
    return interpolation_matrix(model.grid, points, component)


@dataclass
class LinearObservations:
    """A linear observation network: ``y = H x + e``, ``e ~ N(0, diag(error_std^2))``, ``H`` in natural ordering.

    Attributes
    ----------
    matrix : scipy sparse (m, n_state)
    error_std : ndarray (m,)
    locations : ndarray (m, dim) or None
        Positions (needed by localisation).
    """

    matrix: sp.csr_matrix
    error_std: np.ndarray
    locations: np.ndarray | None = None
    name: str = "obs"
    #: rows of each named network when several are stacked (:func:`twin.observations.networks.build`)
    network_slices: dict | None = None

    def __post_init__(self):
        self.matrix = sp.csr_matrix(self.matrix)
        m = self.matrix.shape[0]
        err = np.broadcast_to(np.asarray(self.error_std, dtype=float), (m,)).copy()
        if m < 1:
            raise ObservationError(f"observations '{self.name}': no observations")
        if not np.all(np.isfinite(err)) or np.any(err <= 0):
            raise ObservationError(f"observations '{self.name}': observation errors must be positive and finite "
                                   f"(min given {err.min():g})")
        self.error_std = err
        if self.locations is not None:
            self.locations = np.atleast_2d(np.asarray(self.locations, dtype=float))
            if self.locations.shape[0] != m:
                raise ObservationError(f"observations '{self.name}': {self.locations.shape[0]} locations for "
                                       f"{m} observations")

    @property
    def n_obs(self) -> int:
        return self.matrix.shape[0]

    @classmethod
    def at_points(cls, grid, points, error_std, component: int = 0, name: str = "points") -> "LinearObservations":
        """Point observations of one state component interpolated on ``grid``; refuses points outside the domain."""
        points = np.atleast_2d(np.asarray(points, dtype=float))
        return cls(interpolation_matrix(grid, points, component), error_std, points, name)

    @classmethod
    def from_operator(cls, op) -> "LinearObservations":
        """From a :class:`~twin.observations.base.LinearObservationOperator`."""
        return cls(op.matrix, op.error_std, op.locations, op.name)

    def perturbed(self, truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Synthetic observations ``H x_t + e`` of a true state (twin experiments)."""
        return self.matrix @ truth + self.error_std * rng.standard_normal(self.n_obs)


def grid_points(grid: Grid) -> np.ndarray:
    """Coordinates of the points of ``grid`` in natural (C) order, shape ``(n_points, dim)`` (where a network's
    observations of whole fields sit, for localisation)."""
    return np.stack([c.ravel() for c in grid.mesh()], axis=1)
