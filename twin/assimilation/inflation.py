"""Covariance inflation: multiplicative prior inflation, relaxation to prior perturbations (RTPP) and spread (RTPS),
and adaptive multiplicative inflation from innovation statistics.

Symbols: ``E`` an ensemble block (``n x N``, members as columns), ``X = E - mean`` its anomalies, ``lambda`` the
multiplicative factor (> 0, 1 = none), ``alpha`` in [0, 1] the relaxation weight, ``sigma`` the ensemble standard
deviation of each entry.

* multiplicative (Anderson & Anderson 1999): ``X_f <- lambda X_f`` before the analysis;
* RTPP (Zhang et al. 2004): ``X_a <- (1 - alpha) X_a + alpha X_f``;
* RTPS (Whitaker & Hamill 2012): ``X_a <- X_a (alpha (sigma_f - sigma_a) / sigma_a + 1)``, entry by entry; the
  parameter entries of a joint state-parameter control may have a weight of their own (``parameter_rtps``): a static
  parameter has no model error to keep its spread, and a global one is updated from every observation, whose
  sampling correlations with it a small ensemble takes for information, so its spread collapses while the state's
  does not (Ruiz, Pulido & Miyoshi 2013 review such parameter-spread treatments);
* adaptive (Li, Kalnay & Miyoshi 2009): with innovations ``d = y - H xbar_f`` scaled by ``R^-1/2``, the observed
  variance ratio ``lambda_o^2 = (d^T d - m) / tr(R^-1/2 H P_f H^T R^-1/2)`` (``P_f`` before inflation) is smoothed in
  time, ``lambda^2 <- (1 - kappa) lambda^2 + kappa lambda_o^2``, and ``lambda`` is kept within ``[lower, upper]``.

All operations are entry-local or use observation-space quantities that are identical on every rank, so they work on
each rank's owned block without communication.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twin.core.errors import AssimilationError


def inflate(E: np.ndarray, factor: float) -> np.ndarray:
    """Multiplicative inflation of the anomalies of ``E`` (n, N) by ``factor``; the mean is unchanged."""
    mean = E.mean(axis=1, keepdims=True)
    return mean + factor * (E - mean)


def rtpp(Ea: np.ndarray, Ef: np.ndarray, alpha: float) -> np.ndarray:
    """Relaxation to prior perturbations: ``X_a <- (1 - alpha) X_a + alpha X_f`` (the analysis mean is kept)."""
    ma, mf = Ea.mean(axis=1, keepdims=True), Ef.mean(axis=1, keepdims=True)
    return ma + (1.0 - alpha) * (Ea - ma) + alpha * (Ef - mf)


def rtps(Ea: np.ndarray, Ef: np.ndarray, alpha: float) -> np.ndarray:
    """Relaxation to prior spread, entry by entry; entries with zero analysis spread are left as they are."""
    ma = Ea.mean(axis=1, keepdims=True)
    sa = Ea.std(axis=1, ddof=1, keepdims=True)
    sf = Ef.std(axis=1, ddof=1, keepdims=True)
    ratio = np.divide(sf - sa, sa, out=np.zeros_like(sa), where=sa > 0)
    return ma + (Ea - ma) * (alpha * ratio + 1.0)


@dataclass
class Inflation:
    """Inflation settings of an analysis method.

    Attributes
    ----------
    multiplicative : float
        Prior inflation factor ``lambda`` (1 = none); the starting value when ``adaptive``.
    rtps, rtpp : float
        Relaxation weights in [0, 1] (0 = none).
    adaptive : bool
        Update ``multiplicative`` each cycle from innovation statistics (Li et al. 2009).
    smoothing : float
        ``kappa`` of the adaptive update, in (0, 1].
    bounds : (float, float)
        Limits of the adaptive factor.
    """

    multiplicative: float = 1.0
    rtps: float = 0.0
    rtpp: float = 0.0
    adaptive: bool = False
    #: RTPS weight of the parameter entries instead of ``rtps``/``rtpp`` (0: they are treated like the state)
    parameter_rtps: float = 0.0
    smoothing: float = 0.05
    bounds: tuple[float, float] = (1.0, 2.0)

    def __post_init__(self):
        if not (np.isfinite(self.multiplicative) and self.multiplicative > 0):
            raise AssimilationError(f"inflation factor must be positive, got {self.multiplicative}")
        for name in ("rtps", "rtpp", "parameter_rtps"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise AssimilationError(f"{name} weight must lie in [0, 1], got {v}")
        if self.rtps and self.rtpp:
            raise AssimilationError("choose one of rtps and rtpp, not both")
        if not 0.0 < self.smoothing <= 1.0:
            raise AssimilationError(f"adaptive inflation smoothing must lie in (0, 1], got {self.smoothing}")
        lo, hi = self.bounds
        if not 0 < lo <= hi:
            raise AssimilationError(f"adaptive inflation bounds must satisfy 0 < lower <= upper, got {self.bounds}")

    def prior(self, E: np.ndarray, Y: np.ndarray, factor: float) -> tuple[np.ndarray, np.ndarray]:
        """Inflate the forecast block and its observed ensemble (exact for linear ``H``) by ``factor``."""
        return self.inflated(E, factor), self.inflated(Y, factor)

    @staticmethod
    def inflated(A: np.ndarray, factor: float) -> np.ndarray:
        """``A`` (a forecast block or an observed ensemble) with its anomalies multiplied by ``factor``; each row on
        its own, so a rank inflates its block before ``H E`` is summed."""
        return A if factor == 1.0 else inflate(A, factor)

    def posterior(self, Ea: np.ndarray, Ef: np.ndarray) -> np.ndarray:
        """Apply RTPS or RTPP to the analysis block (``Ef`` is the forecast block, after prior inflation)."""
        if self.rtps:
            return rtps(Ea, Ef, self.rtps)
        if self.rtpp:
            return rtpp(Ea, Ef, self.rtpp)
        return Ea

    def parameter_posterior(self, Ea: np.ndarray, Ea_raw: np.ndarray, Ef: np.ndarray, rows: slice) -> np.ndarray:
        """With ``parameter_rtps``, the parameter ``rows`` of the relaxed analysis ``Ea`` replaced by the RTPS of
        the unrelaxed analysis ``Ea_raw`` with that weight (the forecast ``Ef`` after prior inflation)."""
        if not self.parameter_rtps or rows.stop <= rows.start:
            return Ea
        out = np.array(Ea, copy=True)
        out[rows] = rtps(Ea_raw[rows], Ef[rows], self.parameter_rtps)
        return out

    def updated_factor(self, factor: float, Y: np.ndarray, y: np.ndarray, r: np.ndarray) -> float:
        """The next adaptive factor from this cycle's (uninflated) observed ensemble and observations."""
        if not self.adaptive:
            return factor
        N = Y.shape[1]
        ybar = Y.mean(axis=1)
        d = (y - ybar) / r
        hph = np.sum(((Y - ybar[:, None]) / r[:, None]) ** 2) / (N - 1)
        if hph <= 0:
            return factor
        observed = (d @ d - d.size) / hph
        lo, hi = self.bounds
        new = (1.0 - self.smoothing) * factor ** 2 + self.smoothing * observed
        return float(np.clip(np.sqrt(max(new, 0.0)), lo, hi))
