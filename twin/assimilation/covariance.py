"""Background-error covariance operators for variational assimilation: ``B`` applied, never stored dense.

4D-Var minimises over the control variable ``v`` of the transform ``x0 = xb + B^{1/2} v`` (Courtier et al. 1994), so
the background term ``1/2 |x0 - xb|^2_{B^-1}`` becomes ``1/2 |v|^2`` and the Hessian ``I + B^{T/2} H^T R^-1 H B^{1/2}``
is well conditioned. An operator therefore provides ``B^{1/2} v`` and its transpose ``B^{T/2} x``; ``B x`` is
``B^{1/2} B^{T/2} x``.

Two operators:

* :class:`DiagonalCovariance`: ``B = diag(sigma^2)``, uncorrelated errors of standard deviation ``sigma`` (per point or
  per state component).
* :class:`DiffusionCovariance`: spatially correlated errors from an implicit diffusion operator (Weaver & Courtier
  2001; Mirouze & Weaver 2010; the SPDE view of Lindgren et al. 2011)::

      K = I - l^2 Lap_h,      B^{1/2} = gamma sigma K^{-m},      B = gamma^2 sigma^2 K^{-2m}

  ``Lap_h`` is the 5-point (7-point in 3-D) Laplacian of the grid, periodic or zero-flux at the box walls, applied to
  each state component separately; ``l`` (grid length units) the length-scale parameter; ``m >= 1`` the order. ``K``
  is symmetric positive definite, so ``B^{1/2}`` is symmetric and ``B`` positive definite. In 1-D with ``m = 1`` the
  correlation is the SOAR function ``(1 + r/l) exp(-r/l)``; in 2-D it is the Matern-1 function ``(r/l) K_1(r/l)``.
  ``gamma`` normalises the variance to ``sigma^2`` at the centre of the box (exactly everywhere on periodic grids;
  next to a zero-flux wall the variance is larger: about 1.5 to 2 times at a wall and more in corners for ``m = 1``,
  see ``tests/unit/test_fourdvar_covariance.py``). ``K^{-1}`` is a KSP solve
  (CG + Jacobi by default, options under the operator's prefix, e.g. ``-fourdvar_B_ksp_type``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Sequence

import numpy as np
import scipy.sparse as sp
from petsc4py import PETSc

from twin.core.errors import AssimilationError, SolverError
from twin.core.grid import Grid
from twin.core.petsc import reason_name, set_from_options, set_options


class CovarianceOperator(ABC):
    """A symmetric positive-definite covariance on the vectors created by :meth:`create_vec`."""

    name: str = "B"

    @abstractmethod
    def create_vec(self) -> PETSc.Vec:
        """A new vector of the space ``B`` acts on (zeroed)."""

    @abstractmethod
    def sqrt_mult(self, v: PETSc.Vec, out: PETSc.Vec) -> None:
        """``out = B^{1/2} v``. Collective."""

    @abstractmethod
    def sqrt_mult_transpose(self, x: PETSc.Vec, out: PETSc.Vec) -> None:
        """``out = B^{T/2} x``. Collective."""

    @abstractmethod
    def inv_sqrt_mult(self, x: PETSc.Vec, out: PETSc.Vec) -> None:
        """``out = B^{-1/2} x`` (the control vector of an increment ``x``). Collective."""

    def mult(self, x: PETSc.Vec, out: PETSc.Vec) -> None:
        """``out = B x``. Collective."""
        tmp = self.create_vec()
        self.sqrt_mult_transpose(x, tmp)
        self.sqrt_mult(tmp, out)
        tmp.destroy()

    def destroy(self) -> None:
        """Free PETSc objects."""


def _check_std(std, ncomp: int, name: str) -> np.ndarray:
    arr = np.asarray(std, dtype=float)
    if arr.ndim > 1 or (arr.ndim == 1 and arr.size not in (1, ncomp)):
        raise AssimilationError(f"covariance '{name}': std must be a number or one number per state component "
                                f"({ncomp}), got {arr.tolist()}")
    s = np.broadcast_to(arr.ravel() if arr.ndim else arr, (ncomp,))
    if not np.all(np.isfinite(s)) or np.any(s <= 0):
        raise AssimilationError(f"covariance '{name}' is not positive definite: standard deviations must be positive "
                                f"and finite, got {np.asarray(std).tolist()}")
    return s.copy()


class DiagonalCovariance(CovarianceOperator):
    """``B = diag(sigma^2)``.

    Parameters
    ----------
    std : PETSc.Vec
        Pointwise standard deviations (positive), a vector of the space; copied.
    name : str
        Used in error messages.
    """

    def __init__(self, std: PETSc.Vec, name: str = "B"):
        self.name = name
        lo = std.min()[1]
        if not np.isfinite(std.norm(PETSc.NormType.NORM_INFINITY)) or lo <= 0:
            raise AssimilationError(f"covariance '{name}' is not positive definite: standard deviations must be "
                                    f"positive and finite (smallest given {lo:g})")
        self._std = std.copy()

    @classmethod
    def on_grid(cls, grid: Grid, std: float | Sequence[float], name: str = "B") -> "DiagonalCovariance":
        """Constant standard deviation per state component on ``grid`` (a number, or one per dof)."""
        s = _check_std(std, grid.dof, name)
        vec = grid.create_global()
        arr = grid.owned_array(vec)
        arr[...] = s if grid.dof > 1 else s[0]
        op = cls(vec, name)
        vec.destroy()
        return op

    def create_vec(self) -> PETSc.Vec:
        v = self._std.duplicate()
        v.set(0.0)
        return v

    def sqrt_mult(self, v: PETSc.Vec, out: PETSc.Vec) -> None:
        out.pointwiseMult(self._std, v)

    sqrt_mult_transpose = sqrt_mult

    def inv_sqrt_mult(self, x: PETSc.Vec, out: PETSc.Vec) -> None:
        out.pointwiseDivide(x, self._std)

    def mult(self, x: PETSc.Vec, out: PETSc.Vec) -> None:
        out.pointwiseMult(self._std, x)
        out.pointwiseMult(self._std, out)

    def variance(self) -> PETSc.Vec:
        """Pointwise variances (a new vector)."""
        v = self._std.copy()
        v.pointwiseMult(v, v)
        return v

    def destroy(self) -> None:
        self._std.destroy()


def _owned_points(grid: Grid) -> list[np.ndarray]:
    """Per-axis (PETSc order) indices of the owned points, flattened in local C order."""
    ranges = [np.arange(s, e) for s, e in reversed(grid.owned)]
    mesh = np.meshgrid(*ranges, indexing="ij")
    return [m.ravel() for m in reversed(mesh)]


def _natural(grid: Grid, idx: Sequence[np.ndarray]) -> np.ndarray:
    flat = np.zeros_like(idx[0], dtype=np.int64)
    for axis in reversed(range(grid.dim)):
        flat = flat * grid.shape[axis] + idx[axis]
    return flat


def diffusion_matrix(grid: Grid, length_scale: float) -> PETSc.Mat:
    """``K = I - l^2 Lap_h`` on ``grid`` (each dof separately; periodic or zero-flux walls), a parallel AIJ matrix.

    Assembled from vectorised CSR rows of this rank (column indices mapped to PETSc's ordering through the DMDA's AO).
    """
    pts = _owned_points(grid)
    npts = pts[0].size
    dof = grid.dof
    rows_nat, cols_nat, vals = [], [], []
    diag = np.ones(npts)
    for axis in range(grid.dim):
        n, h, periodic = grid.shape[axis], grid.spacing[axis], grid.periodic[axis]
        w = length_scale**2 / h**2
        for step in (-1, 1):
            nb = [p.copy() for p in pts]
            nb[axis] = pts[axis] + step
            if periodic:
                nb[axis] %= n
                ok = np.ones(npts, dtype=bool)
            else:
                ok = (nb[axis] >= 0) & (nb[axis] < n)
            diag += w * ok
            rows_nat.append(np.flatnonzero(ok))
            cols_nat.append(_natural(grid, [p[ok] for p in nb]))
            vals.append(np.full(ok.sum(), -w))
    rows_nat.append(np.arange(npts))
    cols_nat.append(_natural(grid, pts))
    vals.append(diag)
    prow = np.concatenate(rows_nat)
    pcol = np.concatenate(cols_nat)
    pval = np.concatenate(vals)
    # Expand points to unknowns (dof fastest); K is block diagonal over the components.
    comp = np.arange(dof)
    lrow = (prow[:, None] * dof + comp).ravel()
    gcol_nat = (pcol[:, None] * dof + comp).ravel()
    lval = np.repeat(pval, dof)
    gcol = grid.da.getAO().app2petsc(gcol_nat.astype(PETSc.IntType))
    nloc = npts * dof
    local = sp.csr_matrix((lval, (lrow, gcol)), shape=(nloc, grid.size * dof))
    local.sum_duplicates()
    local.sort_indices()
    K = PETSc.Mat().createAIJ(size=((nloc, grid.size * dof), (nloc, grid.size * dof)),
                              csr=(local.indptr.astype(PETSc.IntType), local.indices.astype(PETSc.IntType),
                                   local.data), comm=grid.da.getComm())
    K.assemble()
    K.setOption(PETSc.Mat.Option.SYMMETRIC, True)
    return K


class DiffusionCovariance(CovarianceOperator):
    """Spatially correlated ``B = gamma^2 sigma^2 K^{-2m}`` with ``K = I - l^2 Lap_h`` (see the module docstring).

    Parameters
    ----------
    grid : Grid
        The grid of the space (states or a parameter field).
    std : float or sequence of float
        ``sigma``, one number or one per state component (positive).
    length_scale : float
        ``l`` in the grid's length units (positive).
    order : int
        ``m >= 1``.
    prefix : str
        PETSc options prefix of the KSP (``-<prefix>ksp_type``).
    name : str
        Used in errors.
    """

    def __init__(self, grid: Grid, std: float | Sequence[float], length_scale: float, order: int = 1,
                 prefix: str = "B_", name: str = "B"):
        self.name = name
        self.grid = grid
        self.std = _check_std(std, grid.dof, name)
        if not (np.isfinite(length_scale) and length_scale > 0):
            raise AssimilationError(f"covariance '{name}' is not positive definite: length_scale must be positive "
                                    f"and finite, got {length_scale}")
        if int(order) != order or order < 1:
            raise AssimilationError(f"covariance '{name}': order must be an integer >= 1, got {order}")
        self.length_scale = float(length_scale)
        self.order = int(order)
        self.K = diffusion_matrix(grid, self.length_scale)
        self.ksp = PETSc.KSP().create(comm=grid.da.getComm())
        self.ksp.setOptionsPrefix(prefix)
        self.ksp.setOperators(self.K)
        set_options(prefix, {"ksp_type": "cg", "pc_type": "jacobi", "ksp_rtol": 1e-12, "ksp_atol": 1e-50})
        set_from_options(self.ksp)
        self._t1 = grid.create_global()
        self._t2 = grid.create_global()
        self._scale = grid.create_global()
        self.gamma = self._normalisation()
        arr = grid.owned_array(self._scale)
        arr[...] = self.gamma * (self.std if grid.dof > 1 else self.std[0])

    def _solve(self, b: PETSc.Vec, x: PETSc.Vec) -> None:
        self.ksp.solve(b, x)
        reason = self.ksp.getConvergedReason()
        if reason < 0:
            raise SolverError(self.name, 0.0, reason_name(PETSc.KSP.ConvergedReason, reason),
                              "covariance solve with K = I - l^2 Lap; try another -<prefix>pc_type")

    def _inv_power(self, x: PETSc.Vec, out: PETSc.Vec) -> None:
        """``out = K^{-m} x``."""
        x.copy(self._t1)
        for _ in range(self.order):
            self._solve(self._t1, out)
            out.copy(self._t1)

    def _normalisation(self) -> float:
        """``1 / sqrt((K^{-2m})_cc)`` at the centre point ``c`` of component 0: ``(K^{-2m})_cc = |K^{-m} e_c|^2``."""
        centre = [n // 2 for n in self.grid.shape]
        nat = int(_natural(self.grid, [np.array([c]) for c in centre])[0]) * self.grid.dof
        e = self.grid.create_global()
        e.set(0.0)
        petsc_index = int(self.grid.da.getAO().app2petsc(np.array([nat], dtype=PETSc.IntType))[0])
        lo, hi = e.getOwnershipRange()
        if lo <= petsc_index < hi:
            e.setValue(petsc_index, 1.0)
        e.assemble()
        z = self.grid.create_global()
        self._inv_power(e, z)
        norm = z.norm()
        e.destroy()
        z.destroy()
        return 1.0 / norm

    def create_vec(self) -> PETSc.Vec:
        v = self.grid.create_global()
        v.set(0.0)
        return v

    def sqrt_mult(self, v: PETSc.Vec, out: PETSc.Vec) -> None:
        self._inv_power(v, self._t2)
        out.pointwiseMult(self._scale, self._t2)

    # B^{1/2} is symmetric: the scaling is constant per component and K acts on each component alike, so they commute.
    sqrt_mult_transpose = sqrt_mult

    def inv_sqrt_mult(self, x: PETSc.Vec, out: PETSc.Vec) -> None:
        self._t2.pointwiseDivide(x, self._scale)
        for _ in range(self.order):
            self.K.mult(self._t2, out)
            out.copy(self._t2)

    def destroy(self) -> None:
        for obj in (self.K, self.ksp, self._t1, self._t2, self._scale):
            obj.destroy()


#: the diffusion covariance that stands for a squared-exponential one of length ``L`` (a ``gaussian_field`` prior):
#: order and ``l / L`` (see :func:`squared_exponential`)
SQUARED_EXPONENTIAL_ORDER = 3
SQUARED_EXPONENTIAL_LENGTH = 0.3233


def squared_exponential(grid: Grid, std, length: float, prefix: str = "B_", name: str = "B") -> DiffusionCovariance:
    """A :class:`DiffusionCovariance` close to the squared-exponential covariance ``std^2 exp(-r^2 / (2 L^2))`` of a
    ``gaussian_field`` prior (the covariance its samples and twin experiments' truths are drawn with,
    :func:`twin.models.priors.gaussian_field`), for a variational control of that field.

    ``K^{-m}`` tends to the Gaussian kernel as ``m`` grows (Weaver & Courtier 2001), but slowly for a fixed
    ``l = L / (2 sqrt(m))``; instead ``m = 3`` with ``l = 0.3233 L``, the least-squares fit of the 2-D Matern-5
    correlation ``(r/l)^5 K_5(r/l) / (16 Gamma(5) / 2)`` to ``exp(-r^2 / 2 L^2)`` over ``r <= 4 L`` (area-weighted),
    is within 0.032 of it everywhere (0.575 against 0.607 at ``r = L``, 0.147 against 0.135 at ``2 L``). The order-1
    operator with ``l = L`` that the field controls had before is the Matern-1 correlation ``(r/l) K_1(r/l)``: 0.60 at
    ``r = L`` but 0.28 at ``2 L`` and 0.12 at ``3 L`` (the prior: 0.135 and 0.011), rough at short range and with long
    tails, and over 8 oncology truths its 4D-Var put the patients' diffusivity D
    below the truth in all 8 (mean log error -0.22, 90 % coverage 4/8; with this one: -0.08, 7/8, k(x) coverage 0.84
    -> 0.90, TAO converged in 8/8 instead of 5/8). Costs ``m`` KSP solves per ``B^{1/2}`` product."""
    return DiffusionCovariance(grid, std, SQUARED_EXPONENTIAL_LENGTH * float(length),
                               order=SQUARED_EXPONENTIAL_ORDER, prefix=prefix, name=name)


def covariance_from_settings(grid: Grid, kind: str, std, length_scale: float | None = None, order: int = 1,
                             prefix: str = "B_", name: str = "B") -> CovarianceOperator:
    """Build a covariance operator by kind (``"diagonal"`` or ``"diffusion"``) with clear errors on bad settings."""
    if kind == "diagonal":
        return DiagonalCovariance.on_grid(grid, std, name=name)
    if kind == "diffusion":
        if length_scale is None:
            raise AssimilationError(f"covariance '{name}': kind 'diffusion' needs a length_scale")
        return DiffusionCovariance(grid, std, length_scale, order=order, prefix=prefix, name=name)
    raise AssimilationError(f"covariance '{name}': unknown kind {kind!r}; known: ['diagonal', 'diffusion']")


class DenseCovariance(CovarianceOperator):
    """A dense symmetric positive-definite ``B`` for small state spaces (toy models, reduced spaces, climatological
    covariances of Lorenz-96), with ``B^{1/2}`` the symmetric square root ``U diag(sqrt(s)) U^T``.

    Stored as two parallel PETSc dense matrices (``B^{1/2}`` and ``B^{-1/2}``), so it is only for a few thousand
    unknowns at most; larger states should use an operator (:class:`DiffusionCovariance`).

    Parameters
    ----------
    grid : Grid
        The grid of the space.
    matrix : ndarray, shape (N, N)
        ``B`` in the grid's natural ordering (C order, dof fastest), the same on every rank.
    name : str
    """

    MAX_SIZE = 5000

    def __init__(self, grid: Grid, matrix: np.ndarray, name: str = "B"):
        self.name = name
        self.grid = grid
        n = grid.size * grid.dof
        B = np.asarray(matrix, dtype=float)
        if B.shape != (n, n):
            raise AssimilationError(f"covariance '{name}': matrix has shape {B.shape}, the space has {n} unknowns")
        if n > self.MAX_SIZE:
            raise AssimilationError(f"covariance '{name}': a dense covariance of {n} unknowns is too large (at most "
                                    f"{self.MAX_SIZE}); use kind 'diffusion'")
        if not np.all(np.isfinite(B)) or not np.allclose(B, B.T, rtol=1e-10, atol=1e-12 * np.abs(B).max()):
            raise AssimilationError(f"covariance '{name}' is not symmetric (or not finite)")
        s, U = np.linalg.eigh(B)
        if s.min() <= 1e-12 * max(s.max(), 0.0) or s.max() <= 0:
            raise AssimilationError(f"covariance '{name}' is not positive definite: smallest eigenvalue {s.min():.3g} "
                                    f"(largest {s.max():.3g})")
        probe = grid.create_global()
        r0, r1 = probe.getOwnershipRange()
        probe.destroy()
        ao = grid.da.getAO()
        rows_nat = ao.petsc2app(np.arange(r0, r1, dtype=PETSc.IntType))
        cols_nat = ao.petsc2app(np.arange(n, dtype=PETSc.IntType))
        self._mats = []
        for power in (0.5, -0.5):
            full = (U * s**power) @ U.T
            M = PETSc.Mat().createDense(((r1 - r0, n), (r1 - r0, n)), comm=grid.da.getComm())
            M.setUp()
            M.setValues(np.arange(r0, r1, dtype=PETSc.IntType), np.arange(n, dtype=PETSc.IntType),
                        full[np.ix_(rows_nat, cols_nat)], addv=PETSc.InsertMode.INSERT_VALUES)
            M.assemble()
            self._mats.append(M)

    def create_vec(self) -> PETSc.Vec:
        v = self.grid.create_global()
        v.set(0.0)
        return v

    def sqrt_mult(self, v: PETSc.Vec, out: PETSc.Vec) -> None:
        self._mats[0].mult(v, out)

    sqrt_mult_transpose = sqrt_mult

    def inv_sqrt_mult(self, x: PETSc.Vec, out: PETSc.Vec) -> None:
        self._mats[1].mult(x, out)

    def destroy(self) -> None:
        for M in self._mats:
            M.destroy()
