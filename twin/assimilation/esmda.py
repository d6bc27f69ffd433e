"""Ensemble smoother with multiple data assimilation (ES-MDA; Emerick & Reynolds 2013, Comput. Geosci. 55).

For calibrating parameters ``m`` (in transformed space, see :mod:`twin.assimilation.transforms`) from all the data
``y`` of a time window at once. With the forward map ``g(m)`` (run the model over the window, apply the observation
operators) and inflation coefficients ``alpha_1 .. alpha_K`` with ``sum 1/alpha_k = 1``::

    for k = 1 .. K:
        Y = g(M)                                         (m x N predicted data)
        D = y 1^T + sqrt(alpha_k) R^(1/2) Z              (perturbed data, Z ~ N(0, I), centred)
        M <- M + C_MY (C_YY + alpha_k R)^-1 (D - Y)

The update is the stochastic-EnKF analysis with ``R`` replaced by ``alpha_k R``
(:func:`twin.assimilation.ensemble.enkf_analysis`), a linear combination of members, so it applies to each rank's
block of a distributed parameter field without a gather. For a linear-Gaussian problem ES-MDA gives the same posterior as one ES update with ``R``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from twin.assimilation.ensemble import check_ensemble_size, enkf_analysis
from twin.core.errors import AssimilationError


#: iterations of a campaign without ``esmda_alphas`` (coefficients :func:`default_alphas`)
DEFAULT_ITERATIONS = 4


def default_alphas(n_iterations: int) -> np.ndarray:
    """``n_iterations`` equal coefficients ``alpha_k = K`` (sum of inverses 1)."""
    return np.full(int(n_iterations), float(n_iterations))


def check_alphas(alphas) -> np.ndarray:
    """Refuse coefficients that are not positive or whose inverses do not sum to one."""
    a = np.asarray(alphas, dtype=float).ravel()
    if a.size == 0 or np.any(~np.isfinite(a)) or np.any(a <= 0):
        raise AssimilationError(f"ES-MDA coefficients must be positive, got {a.tolist()}")
    if abs(np.sum(1.0 / a) - 1.0) > 1e-8:
        raise AssimilationError(f"ES-MDA coefficients must satisfy sum(1/alpha) = 1, got {np.sum(1.0 / a):.6g}")
    return a


def esmda_update(M: np.ndarray, Y: np.ndarray, y: np.ndarray, r: np.ndarray, alpha: float,
                 perturbations: np.ndarray) -> np.ndarray:
    """One ES-MDA update of the parameter block ``M`` (n_local, N) given predicted data ``Y`` (m, N)."""
    return enkf_analysis(M, Y, y, np.sqrt(alpha) * r, perturbations)


def esmda_local_update(M: np.ndarray, Y: np.ndarray, y: np.ndarray, r: np.ndarray, alpha: float, local,
                       radius: float) -> np.ndarray:
    """One localised ES-MDA update: every entry attached to a grid point (state, field parameters) is updated from
    the data near it, tapered by Gaspari-Cohn, with the LETKF's deterministic square-root transform and ``R``
    replaced by ``alpha R`` (``local``: a :class:`twin.assimilation.letkf.LocalContext` with one location per row
    of ``Y``); scalar parameters get the global transform.

    Why this form: the ensemble's sample covariance between a field value and data far from it is noise at
    campaign ensemble sizes (32-64 members for thousands of field values), and the stochastic update of
    :func:`esmda_update` applies that noise everywhere, collapsing the spread. Localising the update to each point's
    neighbourhood is what the LETKF does for filters; its square-root transform needs no perturbed data, and for a
    linear-Gaussian problem the sequence of updates with ``alpha_k R`` (``sum 1/alpha_k = 1``) still gives the
    posterior of one update with ``R`` (without localisation: the global ETKF, exact).
    """
    return local.analyse(M, Y, y, np.sqrt(alpha) * np.asarray(r, dtype=float), radius, None, "esmda")


def data_misfit(Y: np.ndarray, y: np.ndarray, r: np.ndarray) -> float:
    """``mean_j |R^-1/2 (y - Y_j)|^2 / m``: the normalised data misfit of the predicted data ``Y`` (m, N), about 1
    for members that fit the data to their noise."""
    y, r = np.asarray(y, dtype=float), np.asarray(r, dtype=float)
    return float(np.mean(np.sum(((y[:, None] - Y) / r[:, None]) ** 2, axis=0)) / y.size)


@dataclass
class ESMDAResult:
    """Posterior parameter ensemble (owned block, control space) and the data misfit of each iteration."""

    ensemble: np.ndarray
    misfit: list[float] = field(default_factory=list)


@dataclass
class ESMDA:
    """ES-MDA parameter class; :meth:`update` is the iteration every ES-MDA in twin runs (the campaign's
    :func:`twin.campaign.smoother.update` and :func:`twin.assimilation.calibration.esmda_calibrate`, through
    :meth:`run`).

    Attributes
    ----------
    N : int
        Ensemble size (>= 2).
    alphas : sequence of float
        Inflation coefficients (default four iterations of ``alpha = 4``).
    radius : float, optional
        Gaspari-Cohn half-width of the localised update (:func:`esmda_local_update`), used when :meth:`update` is
        given a localisation context.
    """

    N: int
    alphas: tuple[float, ...] = (4.0, 4.0, 4.0, 4.0)
    name: str = "esmda"
    radius: float | None = None

    def __post_init__(self):
        self.N = check_ensemble_size(self.N, self.name)
        self.alphas = tuple(check_alphas(self.alphas))
        if self.radius is not None and not (np.isfinite(self.radius) and self.radius > 0):
            raise AssimilationError(f"{self.name}: localisation radius must be positive, got {self.radius}")

    def update(self, M: np.ndarray, Y: np.ndarray, y: np.ndarray, r: np.ndarray, iteration: int,
               rng: np.random.Generator, local=None) -> np.ndarray:
        """Update ``iteration`` (0-based) of the ensemble block ``M`` (n_local, N) from its predicted data ``Y``
        (m, N): stochastic with perturbations from ``rng`` (seeded identically on every rank), or localised with
        ``local`` (a :class:`~twin.assimilation.letkf.LocalContext` with one location per row of ``Y``; needs
        :attr:`radius`).

        Raises
        ------
        AssimilationError
            When the update has non-finite values.
        """
        if not 0 <= iteration < len(self.alphas):
            raise AssimilationError(f"{self.name}: iteration {iteration} outside 0..{len(self.alphas) - 1}")
        alpha = float(self.alphas[iteration])
        y, r = np.asarray(y, dtype=float), np.asarray(r, dtype=float)
        if local is None:
            Ma = esmda_update(M, Y, y, r, alpha, rng.standard_normal(Y.shape))
        else:
            if self.radius is None:
                raise AssimilationError(f"{self.name}: a localised update needs a localisation radius")
            Ma = esmda_local_update(M, Y, y, r, alpha, local, self.radius)
        if not np.all(np.isfinite(Ma)):
            raise AssimilationError(f"{self.name}: ES-MDA iteration {iteration} produced non-finite values")
        return Ma

    def run(self, M0: np.ndarray, forward: Callable[[np.ndarray], np.ndarray], y: np.ndarray, r: np.ndarray,
            rng: np.random.Generator) -> ESMDAResult:
        """Calibrate: ``forward(M)`` maps the (block of the) parameter ensemble to predicted data (m, N), the same on
        every rank; ``rng`` must be seeded identically on every rank (one stream for all the iterations).

        Returns
        -------
        ESMDAResult
            ``misfit`` holds :func:`data_misfit` before each iteration and after the last.
        """
        if M0.shape[1] != self.N:
            raise AssimilationError(f"{self.name}: ensemble has {M0.shape[1]} members, configured N={self.N}")
        y, r = np.asarray(y, dtype=float), np.asarray(r, dtype=float)
        if np.any(r <= 0) or not np.all(np.isfinite(r)):
            raise AssimilationError(f"{self.name}: observation errors must be positive and finite")
        M = np.array(M0, dtype=float, copy=True)
        misfit = []
        for i in range(len(self.alphas)):
            Y = np.asarray(forward(M), dtype=float)
            misfit.append(data_misfit(Y, y, r))
            M = self.update(M, Y, y, r, i, rng)
        misfit.append(data_misfit(np.asarray(forward(M), dtype=float), y, r))
        return ESMDAResult(M, misfit)
