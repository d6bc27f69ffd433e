"""Optimal sensor placement for a decision QoI: greedy selection under a linearised-Gaussian model.

Model (units: those of the state ``x``, the observations ``y`` and the QoI ``q``): prior ``x ~ N(m, P)``, candidate
observations ``y_i = h_i^T x + e_i``, ``e_i ~ N(0, r_i^2)`` independent, ``i = 1..M``, and a decision QoI linearised
as ``q ~ g^T x`` (``g`` the QoI's gradient, or from an ensemble the regression of ``q`` on ``x``). Observing a set
``S`` gives the Gaussian posterior variance of ``q``

    Var(q | y_S) = g^T P g - z_S^T (C_SS + R_S)^-1 z_S,     C = H P H^T,  z = H P g,

and the expected information about ``q`` is ``1/2 log(Var(q) / Var(q | y_S))``, so maximising information about the
QoI is minimising its posterior variance. Only ``C``, ``z`` and ``v = g^T P g`` enter: they come either from an
explicit covariance (:meth:`PlacementProblem.from_covariance`) or, for nonlinear models and QoIs (peak stress of a
damaged structure), from an ensemble of predicted candidate observations ``Y`` (M x N) and QoI values ``q`` (N) as
their sample covariances (:meth:`PlacementProblem.from_ensemble`; the ensemble-sensitivity linearisation).

Greedy algorithm: choose the candidate that reduces ``Var(q)`` most, condition on it, repeat ``K`` times. After
choosing ``k`` with ``c_k = C[:, k]``, ``s = C_kk + r_k^2``, the conditional quantities are rank-1 updates
``v <- v - z_k^2 / s``, ``z <- z - c_k z_k / s``, ``C <- C - c_k c_k^T / s``, so a step costs ``O(M^2)`` and the gain
of every candidate, ``z_i^2 / (C_ii + r_i^2)``, is one vectorised expression. Greedy selection is not guaranteed
optimal for this criterion (variance reduction is not submodular in general), but is the standard practical method
(Krause et al. 2008, JMLR 9; Alexanderian 2021 review of OED) and is checked here against the exact formula above and
against random placements. Hand-written because it is a few lines of linear algebra on small matrices.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twin.core.errors import ObservationError


@dataclass
class PlacementProblem:
    """Second moments of the candidate observations and the decision QoI.

    Attributes
    ----------
    cov_obs : ndarray (M, M)
        ``H P H^T`` (observation units squared).
    cov_obs_qoi : ndarray (M,)
        ``H P g`` (observation units x QoI units).
    var_qoi : float
        ``g^T P g`` (QoI units squared).
    noise_var : ndarray (M,)
        Observation error variances ``r_i^2`` (> 0).
    """

    cov_obs: np.ndarray
    cov_obs_qoi: np.ndarray
    var_qoi: float
    noise_var: np.ndarray

    def __post_init__(self):
        self.cov_obs = np.asarray(self.cov_obs, dtype=float)
        m = self.cov_obs.shape[0]
        self.cov_obs_qoi = np.asarray(self.cov_obs_qoi, dtype=float).reshape(m)
        self.noise_var = np.broadcast_to(np.asarray(self.noise_var, dtype=float), (m,)).copy()
        self.var_qoi = float(self.var_qoi)
        if self.cov_obs.shape != (m, m):
            raise ObservationError(f"sensor placement: candidate covariance must be square, got {self.cov_obs.shape}")
        if not np.all(np.isfinite(self.noise_var)) or np.any(self.noise_var <= 0):
            raise ObservationError("sensor placement: observation error variances must be positive and finite")
        if not (np.all(np.isfinite(self.cov_obs)) and np.all(np.isfinite(self.cov_obs_qoi))
                and np.isfinite(self.var_qoi) and self.var_qoi >= 0):
            raise ObservationError("sensor placement: covariances must be finite and the QoI variance >= 0")

    @property
    def n_candidates(self) -> int:
        return self.cov_obs.shape[0]

    @classmethod
    def from_covariance(cls, H, P: np.ndarray, g: np.ndarray, error_std) -> "PlacementProblem":
        """From an explicit prior covariance ``P`` (n x n), candidate rows ``H`` (M x n, dense or sparse) and the
        QoI gradient ``g`` (n)."""
        HP = np.asarray(H @ P)
        g = np.asarray(g, dtype=float)
        # (H P) H^T as H (H P)^T: works for dense and scipy-sparse H alike (P is symmetric)
        C = np.asarray(H @ HP.T)
        return cls(0.5 * (C + C.T), HP @ g, float(g @ P @ g), np.asarray(error_std, dtype=float) ** 2)

    @classmethod
    def from_ensemble(cls, Y: np.ndarray, q: np.ndarray, error_std) -> "PlacementProblem":
        """From an ensemble: predicted candidate observations ``Y`` (M x N, noise-free) and QoI values ``q`` (N)."""
        Y = np.asarray(Y, dtype=float)
        q = np.asarray(q, dtype=float).ravel()
        if Y.ndim != 2 or Y.shape[1] != q.size or q.size < 2:
            raise ObservationError(f"sensor placement: need Y of shape (M, N) and N >= 2 QoI values, got {Y.shape} "
                                   f"and {q.size}")
        N = q.size
        A = Y - Y.mean(axis=1, keepdims=True)
        b = q - q.mean()
        return cls(A @ A.T / (N - 1), A @ b / (N - 1), float(b @ b / (N - 1)), np.asarray(error_std, float) ** 2)

    def posterior_variance(self, selected) -> float:
        """Exact ``Var(q | y_S)`` for the candidate indices ``selected`` (the formula of the module docstring)."""
        S = np.asarray(selected, dtype=int)
        if S.size == 0:
            return self.var_qoi
        A = self.cov_obs[np.ix_(S, S)] + np.diag(self.noise_var[S])
        z = self.cov_obs_qoi[S]
        return float(self.var_qoi - z @ np.linalg.solve(A, z))


@dataclass
class Placement:
    """A chosen sensor set: candidate ``indices`` in order of choice, and ``variance[k]`` = ``Var(q)`` after the
    first ``k`` sensors (``variance[0]`` the prior variance)."""

    indices: np.ndarray
    variance: np.ndarray

    @property
    def information(self) -> float:
        """Expected information gain about the QoI, ``1/2 log(prior / posterior variance)`` (nats)."""
        return float(0.5 * np.log(self.variance[0] / max(self.variance[-1], np.finfo(float).tiny)))


def greedy_placement(problem: PlacementProblem, K: int, exclude=()) -> Placement:
    """Choose ``K`` sensors greedily, each the one that most reduces the QoI's posterior variance.

    Parameters
    ----------
    problem : PlacementProblem
    K : int
        Number of sensors (1 <= K <= number of candidates).
    exclude : sequence of int
        Candidates that may not be chosen (e.g. inaccessible positions, sensors flagged faulty).
    """
    M = problem.n_candidates
    allowed = np.ones(M, dtype=bool)
    allowed[np.asarray(exclude, dtype=int)] = False
    if not 1 <= K <= int(allowed.sum()):
        raise ObservationError(f"sensor placement: K must lie in [1, {int(allowed.sum())}] (available candidates), "
                               f"got {K}")
    C = problem.cov_obs.copy()
    z = problem.cov_obs_qoi.copy()
    v = problem.var_qoi
    r2 = problem.noise_var
    chosen, variance = [], [v]
    for _ in range(K):
        gain = np.where(allowed, z ** 2 / (np.diag(C) + r2), -np.inf)
        k = int(np.argmax(gain))
        s = C[k, k] + r2[k]
        ck = C[:, k].copy()
        zk = z[k]
        v -= zk * zk / s
        z -= ck * (zk / s)
        C -= np.outer(ck, ck / s)
        allowed[k] = False
        chosen.append(k)
        variance.append(max(v, 0.0))
    return Placement(np.array(chosen), np.array(variance))


def random_placement_variances(problem: PlacementProblem, K: int, n: int, rng: np.random.Generator,
                               exclude=()) -> np.ndarray:
    """``Var(q | y_S)`` of ``n`` placements of ``K`` sensors drawn uniformly without replacement (the baseline)."""
    pool = np.setdiff1d(np.arange(problem.n_candidates), np.asarray(exclude, dtype=int))
    return np.array([problem.posterior_variance(rng.choice(pool, size=K, replace=False)) for _ in range(n)])
