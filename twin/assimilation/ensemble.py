"""Global ensemble Kalman analyses as ensemble transforms: stochastic EnKF (perturbed observations) and ETKF.

Notation (Hunt et al. 2007, Physica D 230; Evensen 2009): ``E`` is an ensemble of ``N`` members as columns (``n x N``;
here the *owned block* of the state entries of this rank, any unit), ``Y = H E`` the observed ensemble (``m x N``,
identical on every rank), ``y`` the observations and ``r`` their error standard deviations (``R = diag(r^2)``).
Anomalies are unnormalised: ``X = E - mean(E) 1^T = E Pi`` with ``Pi = I - 1 1^T / N``.

Both analyses are written as a right-multiplication ``E_a = E T`` by an ``N x N`` transform ``T`` computed from
observation-space quantities only. ``T`` is therefore the same on every rank, and each rank applies it to its own
block of the state: no gather of the state is ever needed (the reason for this formulation).

* ETKF (symmetric square root): ``C = (N-1) I + Ya^T R^-1 Ya``, ``w = C^-1 Ya^T R^-1 (y - ybar)``,
  ``W = [(N-1) C^-1]^(1/2)`` (symmetric, optionally times a mean-preserving random rotation), and
  ``T = 1 1^T / N + Pi (w 1^T + W)``.
* Stochastic EnKF (Burgers et al. 1998): ``D = y 1^T + R^(1/2) Z`` with centred perturbations ``Z``; the gain in
  ensemble space by the Woodbury identity, ``T = I + Pi C^-1 Ya^T R^-1 (D - Y)``.

The classes are small parameter holders (DAPPER style); the linear algebra is in free functions tested on tiny arrays.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from twin.assimilation.inflation import Inflation
from twin.core.errors import AssimilationError


def check_ensemble_size(N: int, where: str = "ensemble") -> int:
    """Refuse ensembles that cannot form anomalies (``N < 2``)."""
    if int(N) != N or N < 2:
        raise AssimilationError(f"{where}: ensemble size must be an integer of at least 2, got {N}")
    return int(N)


def centering(N: int) -> np.ndarray:
    """``Pi = I - 1 1^T / N``: multiplying ``E`` on the right gives the (unnormalised) anomalies."""
    return np.eye(N) - 1.0 / N


def helmert_basis(N: int) -> np.ndarray:
    """Orthonormal basis (``N x (N-1)``) of the vectors orthogonal to ``1``: column ``k`` is
    ``(1, .., 1, -k, 0, ..) / sqrt(k (k + 1))`` with ``k`` ones."""
    k = np.arange(1, N)
    i = np.arange(N)[:, None]
    B = np.where(i < k, 1.0, np.where(i == k, -k.astype(float), 0.0))
    return B / np.sqrt(k * (k + 1.0))


def random_rotation(N: int, rng: np.random.Generator) -> np.ndarray:
    """A random orthogonal ``N x N`` matrix ``Q`` with ``Q 1 = 1`` (keeps the ensemble mean; Sakov & Oke 2008b).

    Built as ``Q = 1 1^T / N + B O B^T`` with ``B`` the Helmert basis of the complement of ``1`` and ``O`` a Haar
    orthogonal matrix of size ``N-1``.
    """
    B = helmert_basis(N)
    Z = rng.standard_normal((N - 1, N - 1))
    Qz, Rz = np.linalg.qr(Z)
    O = Qz * np.sign(np.diag(Rz))
    return np.full((N, N), 1.0 / N) + B @ O @ B.T


def _obs_space(Y: np.ndarray, y: np.ndarray, r: np.ndarray):
    """Scaled anomalies ``S = R^-1/2 Ya`` and scaled innovation ``d = R^-1/2 (y - ybar)``."""
    ybar = Y.mean(axis=1)
    S = (Y - ybar[:, None]) / r[:, None]
    d = (y - ybar) / r
    return S, d


def etkf_transform(Y: np.ndarray, y: np.ndarray, r: np.ndarray, rotation: np.ndarray | None = None) -> np.ndarray:
    """The ``N x N`` ETKF transform ``T`` (``E_a = E T``); see the module docstring.

    Parameters
    ----------
    Y : ndarray (m, N)
        Observed ensemble ``H E``.
    y : ndarray (m,)
        Observations.
    r : ndarray (m,)
        Observation error standard deviations (positive).
    rotation : ndarray (N, N), optional
        Mean-preserving orthogonal matrix applied on the right of ``W`` (random rotation).
    """
    N = Y.shape[1]
    S, d = _obs_space(Y, y, r)
    s, V = np.linalg.eigh((N - 1) * np.eye(N) + S.T @ S)
    w = V @ ((V.T @ (S.T @ d)) / s)
    W = (V * np.sqrt((N - 1) / s)) @ V.T
    if rotation is not None:
        W = W @ rotation
    return np.full((N, N), 1.0 / N) + centering(N) @ (w[:, None] + W)


def enkf_transform(Y: np.ndarray, y: np.ndarray, r: np.ndarray, perturbations: np.ndarray) -> np.ndarray:
    """The ``N x N`` stochastic-EnKF transform for given standard-normal ``perturbations`` (m, N).

    The perturbations are centred over members first, so the analysis mean is the Kalman update of the mean.
    """
    N = Y.shape[1]
    Z = perturbations - perturbations.mean(axis=1, keepdims=True)
    S, _ = _obs_space(Y, y, r)
    innov = (y[:, None] + r[:, None] * Z - Y) / r[:, None]
    C = (N - 1) * np.eye(N) + S.T @ S
    return np.eye(N) + centering(N) @ np.linalg.solve(C, S.T @ innov)


def enkf_analysis(E: np.ndarray, Y: np.ndarray, y: np.ndarray, r: np.ndarray, perturbations: np.ndarray) -> np.ndarray:
    """Stochastic-EnKF analysis of the block ``E``: ``E T`` with ``T`` of :func:`enkf_transform`, computed in
    observation space when there are fewer observations than members (``m < N``).

    With ``S = R^-1/2 Ya``, ``C^-1 S^T = S^T (S S^T + (N-1) I_m)^-1`` (Woodbury), so
    ``E_a = E + X S^T (S S^T + (N-1) I_m)^-1 R^-1/2 (D - Y)`` costs ``O(n N m + m^3)`` instead of ``O(N^3)``: large
    ensembles on few data (ES-MDA calibrations) never form an ``N x N`` matrix.
    """
    m, N = Y.shape
    if m >= N:
        return apply_transform(E, enkf_transform(Y, y, r, perturbations))
    Z = perturbations - perturbations.mean(axis=1, keepdims=True)
    S, _ = _obs_space(Y, y, r)
    innov = (y[:, None] + r[:, None] * Z - Y) / r[:, None]
    X = E - E.mean(axis=1, keepdims=True)
    return E + (X @ S.T) @ np.linalg.solve(S @ S.T + (N - 1) * np.eye(m), innov)


def apply_transform(E: np.ndarray, T: np.ndarray) -> np.ndarray:
    """``E T`` for the owned block ``E`` (n_local, N)."""
    return E @ T


@dataclass
class ETKF:
    """Ensemble transform Kalman filter (symmetric square root), optionally with random rotations.

    Attributes
    ----------
    N : int
        Ensemble size (>= 2).
    inflation : Inflation
        Prior multiplicative inflation and posterior relaxation (RTPS/RTPP).
    rotate : bool
        Apply a mean-preserving random rotation to the transform each analysis.
    """

    N: int
    inflation: Inflation = field(default_factory=Inflation)
    rotate: bool = False
    name: str = "etkf"

    def __post_init__(self):
        self.N = check_ensemble_size(self.N, self.name)

    def analysis(self, E: np.ndarray, Y: np.ndarray, y: np.ndarray, r: np.ndarray, rng: np.random.Generator,
                 local=None) -> np.ndarray:
        """Analysis of the owned block ``E`` (n_local, N); ``rng`` must be seeded identically on every rank."""
        rot = random_rotation(self.N, rng) if self.rotate else None
        return apply_transform(E, etkf_transform(Y, y, r, rot))


@dataclass
class EnKF:
    """Stochastic ensemble Kalman filter with perturbed observations (Burgers et al. 1998).

    Attributes
    ----------
    N : int
        Ensemble size (>= 2).
    inflation : Inflation
        Prior multiplicative inflation and posterior relaxation.
    """

    N: int
    inflation: Inflation = field(default_factory=Inflation)
    name: str = "enkf"

    def __post_init__(self):
        self.N = check_ensemble_size(self.N, self.name)

    def analysis(self, E: np.ndarray, Y: np.ndarray, y: np.ndarray, r: np.ndarray, rng: np.random.Generator,
                 local=None) -> np.ndarray:
        """Analysis of the owned block; the perturbations come from ``rng`` (same on every rank)."""
        return enkf_analysis(E, Y, y, r, rng.standard_normal(Y.shape))
