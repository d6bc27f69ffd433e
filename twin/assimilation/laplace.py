"""Laplace approximation of the 4D-Var posterior at the MAP point, with a low-rank Hessian.

In the whitened control variables ``c`` of :mod:`twin.assimilation.fourdvar` the prior is ``N(0, I)``, so the Hessian
of ``J`` at the MAP point ``c*`` is ``H = I + H_m`` with ``H_m`` the Hessian of the observation misfit. Data inform
few directions, so ``H_m`` is close to low rank (Bui-Thanh et al. 2013, SIAM J. Sci. Comput. 35, A2494; Flath et al.
2011). Its leading eigenpairs ``H_m ~ V diag(lambda) V^T`` come from a randomised two-pass eigensolver (Halko,
Martinsson & Tropp 2011, Algorithm 5.3) that only needs Hessian-vector products (finite differences of adjoint
gradients, :meth:`FourDVar.hessian_mult`). Then, exactly for the retained directions::

    posterior covariance   H^{-1}  = I - V diag(lambda / (1 + lambda)) V^T
    posterior sample       c = c* + H^{-1/2} xi,   H^{-1/2} = I + V diag(1/sqrt(1 + lambda) - 1) V^T,  xi ~ N(0, I)

Samples are mapped to physical parameters (``T^{-1}(T(pb) + Bp^{1/2} w)``) and initial states (``xb + B^{1/2} v``);
pointwise credible intervals of scalars are exact Gaussian quantiles in transformed space, those of fields are sample
quantiles. The orthonormalisation of the sample block is a Gram-matrix (Cholesky-QR-type) one with ``allreduce``, so
every step runs on distributed vectors; random draws are made in the rank-independent order of the control space, so
the result does not depend on the number of ranks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from petsc4py import PETSc
from scipy.special import ndtri

from twin.core.errors import AssimilationError
from twin.core.log import get_logger

log = get_logger(__name__)


def _block(vecs: list[PETSc.Vec]) -> np.ndarray:
    return np.column_stack([v.getArray(readonly=True) for v in vecs]) if vecs else np.zeros((0, 0))


def _orthonormalise(Y: np.ndarray, comm, rtol: float = 1e-10) -> np.ndarray:
    """Orthonormal basis of the columns of the distributed block ``Y`` (local rows), dropping dependent columns.

    Two passes of ``Q = Y U S^{-1/2}`` with ``Y^T Y = U S U^T`` (the Gram matrix summed over ranks).
    """
    Q = Y
    for _ in range(2):
        G = comm.allreduce(Q.T @ Q)
        s, U = np.linalg.eigh(0.5 * (G + G.T))
        keep = s > rtol * max(s.max(initial=0.0), np.finfo(float).tiny)
        Q = Q @ (U[:, keep] / np.sqrt(s[keep]))
    return Q


@dataclass
class LowRankHessian:
    """``H ~ I + V diag(eigenvalues) V^T`` in control space.

    Attributes
    ----------
    eigenvalues : ndarray, shape (r,)
        Of the misfit Hessian, descending.
    vectors : ndarray, shape (n_local, r)
        This rank's rows of the orthonormal eigenvectors (control-vector layout).
    hessian_products : int
        Hessian-vector products spent.
    """

    eigenvalues: np.ndarray
    vectors: np.ndarray
    hessian_products: int


def low_rank_hessian(functional, c_map: PETSc.Vec, rank: int, oversampling: int = 10, seed: int = 0,
                     step: float = 1e-4) -> LowRankHessian:
    """Leading ``rank`` eigenpairs of the misfit Hessian at ``c_map`` by the randomised two-pass method.

    Parameters
    ----------
    functional : FourDVar
    c_map : PETSc.Vec
        The MAP control (minimiser of ``J``).
    rank : int
        Number of eigenpairs kept (>= 1).
    oversampling : int
        Extra random directions (>= 0); the sketch has ``rank + oversampling`` columns, at most the control size.
    seed : int
        Seed of the Gaussian test vectors.
    step : float
        Finite-difference step of the Hessian-vector products.
    """
    n = functional.space.size
    if rank < 1 or oversampling < 0:
        raise AssimilationError(f"low-rank Hessian needs rank >= 1 and oversampling >= 0, got {rank}, {oversampling}")
    k = min(rank + oversampling, n)
    comm = functional.comm.tompi4py()
    rng = np.random.default_rng(seed)
    omega = functional.create_control()
    y = functional.create_control()
    cols = []
    for _ in range(k):
        functional.space.from_natural(rng.standard_normal(n), omega)
        functional.hessian_mult(c_map, omega, y, step=step)
        y.axpy(-1.0, omega)
        cols.append(y.getArray(readonly=True).copy())
    Q = _orthonormalise(np.column_stack(cols), comm)
    products = k
    HQ = np.empty_like(Q)
    for j in range(Q.shape[1]):
        omega.getArray()[...] = Q[:, j]
        functional.hessian_mult(c_map, omega, y, step=step)
        y.axpy(-1.0, omega)
        HQ[:, j] = y.getArray(readonly=True)
        products += 1
    T = comm.allreduce(Q.T @ HQ)
    lam, U = np.linalg.eigh(0.5 * (T + T.T))
    order = np.argsort(lam)[::-1][:rank]
    lam, U = lam[order], U[:, order]
    # J's Hessian is I + H_m: at a minimum H_m's eigenvalues are >= -1, and a negative one above -1 only says that
    # the misfit bends down where the prior holds J up (a nonlinear model's misfit is not convex). Those directions
    # are clipped to the prior (eigenvalue 0, posterior variance 1 there instead of 1 / (1 + lambda)).
    low = float(lam.min(initial=0.0))
    if low <= -1.0:
        log.warning("%s: the Hessian of the 4D-Var cost at the MAP point has an eigenvalue 1 + (%.3g) <= 0: the point "
                    "is not a minimum (did the optimiser stop early?) or the finite-difference step %g is too large; "
                    "the posterior keeps the prior's variance in that direction", functional.name, low, step)
    elif low < 0.0:
        log.info("%s: misfit Hessian eigenvalues down to %.3g: the misfit is not convex in those directions but the "
                 "cost is (its Hessian adds the prior's 1); they keep the prior's variance, %.2g %% less than the "
                 "Laplace approximation's", functional.name, low, -100.0 * low)
    omega.destroy()
    y.destroy()
    return LowRankHessian(np.clip(lam, 0.0, None), Q @ U, products)


class LaplacePosterior:
    """Gaussian approximation ``N(c*, H^{-1})`` of the posterior in control space, and its physical marginals.

    Parameters
    ----------
    functional : FourDVar
    c_map : PETSc.Vec
        The MAP control (copied).
    hessian : LowRankHessian
    """

    def __init__(self, functional, c_map: PETSc.Vec, hessian: LowRankHessian):
        self.functional = functional
        self.space = functional.space
        self.c_map = c_map.copy()
        self.hessian = hessian
        self._comm = functional.comm.tompi4py()

    def _apply_low_rank(self, x: np.ndarray, diag: np.ndarray) -> np.ndarray:
        """``x + V diag V^T x`` on local rows (``x`` of shape (n_local,) or (n_local, m))."""
        V = self.hessian.vectors
        coef = self._comm.allreduce(V.T @ x)
        return x + V @ (diag[:, None] * coef if x.ndim == 2 else diag * coef)

    def control_variance(self) -> np.ndarray:
        """Posterior variance of each control entry (local rows): ``1 - sum_i lambda_i/(1+lambda_i) V_i^2``."""
        lam = self.hessian.eigenvalues
        return 1.0 - (self.hessian.vectors**2) @ (lam / (1.0 + lam))

    def covariance_mult(self, x: PETSc.Vec, out: PETSc.Vec) -> None:
        """``out = H^{-1} x`` (the low-rank posterior covariance in control space)."""
        lam = self.hessian.eigenvalues
        out.getArray()[...] = self._apply_low_rank(x.getArray(readonly=True).copy(), -lam / (1.0 + lam))

    def samples(self, n: int, seed: int = 0) -> list[PETSc.Vec]:
        """``n`` posterior samples of the control (new vectors), the same on any number of ranks."""
        if n < 1:
            raise AssimilationError(f"number of posterior samples must be >= 1, got {n}")
        lam = self.hessian.eigenvalues
        rng = np.random.default_rng(seed)
        out = []
        xi = self.functional.create_control()
        for _ in range(n):
            self.space.from_natural(rng.standard_normal(self.space.size), xi)
            c = self.c_map.copy()
            c.getArray()[...] += self._apply_low_rank(xi.getArray(readonly=True).copy(), 1.0 / np.sqrt(1.0 + lam) - 1)
            out.append(c)
        xi.destroy()
        return out

    def scalar_intervals(self, level: float = 0.9) -> dict[str, tuple[float, float, float]]:
        """``(low, MAP, high)`` of each scalar parameter: Gaussian quantiles in transformed space, mapped back."""
        _check_level(level)
        from twin.assimilation.transforms import inverse

        space = self.space
        var = self.control_variance()
        local = var[len(var) - space.n_scalar:] if space.rank == 0 else None
        var_w = self._comm.bcast(local, root=0)
        w_map = space.scalar_controls(self.c_map)
        z = float(ndtri(0.5 + 0.5 * level))
        out = {}
        for (name, transform, std, eta_b, _), w, vw in zip(space.scalars, w_map, var_w):
            eta = eta_b + std * w
            half = z * std * np.sqrt(max(vw, 0.0))
            out[name] = (float(inverse(eta - half, transform)), float(inverse(eta, transform)),
                         float(inverse(eta + half, transform)))
        return out

    def field_intervals(self, level: float = 0.9, n_samples: int = 200,
                        seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Pointwise ``(low, MAP, high)`` of each field parameter (natural order, every rank) from posterior samples,
        plus ``"initial_state"`` when the initial state is a control."""
        _check_level(level)
        space, f = self.space, self.functional
        grid = f.model.grid
        q = (0.5 - 0.5 * level, 0.5 + 0.5 * level)
        draws: dict[str, list[np.ndarray]] = {}
        at_map = {}
        for label, c in [("map", self.c_map)] + [(i, s) for i, s in enumerate(self.samples(n_samples, seed))]:
            values = {name: v for name, v in space.parameter_values(c).items() if isinstance(v, PETSc.Vec)}
            if space.B is not None:
                values["initial_state"] = f.initial_state(c)
            for name, vec in values.items():
                full = grid.allgather(vec).ravel()
                vec.destroy()
                if label == "map":
                    at_map[name] = full
                else:
                    draws.setdefault(name, []).append(full)
            if label != "map":
                c.destroy()
        return {name: (np.quantile(np.array(d), q[0], axis=0), at_map[name], np.quantile(np.array(d), q[1], axis=0))
                for name, d in draws.items()}

    def destroy(self) -> None:
        self.c_map.destroy()


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise AssimilationError(f"credible level must lie in (0, 1), got {level}")
