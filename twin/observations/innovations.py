"""How well an analysis fits its observations when there is no truth: observation-space diagnostics of a cycle.

A twin of a real system cannot compute an RMSE against the truth. What it can check is whether the innovations
``d_ob = y - H x_b`` (observation minus background) and residuals ``d_oa = y - H x_a`` behave as the statistics the
analysis assumed say they should:

* the mean and standard deviation of O-B and O-A per network (a bias shows in the mean);
* the normalised innovation chi-square per degree of freedom,
  ``chi2/m = d_ob^T (HBH^T + R)^-1 d_ob / m`` with ``HBH^T`` the forecast ensemble's covariance in observation space
  (here its diagonal, as the observation errors are uncorrelated): about 1 when ``B`` and ``R`` are right, about 4
  when ``R`` (and the spread) are a factor 4 too small in variance;
* Desroziers et al. (2005) estimates: ``E[d_oa d_ob^T] = R`` and ``E[d_ab d_ob^T] = HBH^T`` (with
  ``d_ab = H x_a - H x_b``), per network as the mean of the elementwise products, compared with the assumed ``R``
  and the ensemble's ``HBH^T``;
* the rank of each observation among the perturbed forecast members (observation rank histogram; flat when the
  ensemble is calibrated): members are perturbed with the observation error first (Hamill 2001), with the caller's
  generator.

Every function takes the arrays of one cycle; sums over cycles are the caller's (``diagnostics.nc`` keeps the
per-cycle values and the report averages them). Written by hand: each is a line of NumPy on arrays the analysis has.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class NetworkFit:
    """Observation-space statistics of one network in one cycle (observation units)."""

    n: int
    omb_mean: float
    omb_std: float
    oma_mean: float
    oma_std: float
    chi2_per_dof: float
    desroziers_r: float
    assumed_r: float
    desroziers_hbht: float
    ensemble_hbht: float

    def as_dict(self, prefix: str = "") -> dict[str, float]:
        return {f"{prefix}{k}": float(v) for k, v in self.__dict__.items()}


def fit(y, hxb_members, hxa_members, error_std) -> NetworkFit:
    """The statistics of one network: ``y`` (m,), the forecast and analysis members in observation space (m, N) and
    the observation error standard deviations (m,) or one."""
    y = np.asarray(y, dtype=float)
    Yb, Ya = np.asarray(hxb_members, dtype=float), np.asarray(hxa_members, dtype=float)
    r = np.broadcast_to(np.asarray(error_std, dtype=float) ** 2, y.shape)
    hb, ha = Yb.mean(axis=1), Ya.mean(axis=1)
    hbht = Yb.var(axis=1, ddof=1) if Yb.shape[1] > 1 else np.zeros_like(y)
    d_ob, d_oa, d_ab = y - hb, y - ha, ha - hb
    m = y.size
    return NetworkFit(n=m, omb_mean=float(d_ob.mean()), omb_std=float(d_ob.std(ddof=1)) if m > 1 else 0.0,
                      oma_mean=float(d_oa.mean()), oma_std=float(d_oa.std(ddof=1)) if m > 1 else 0.0,
                      chi2_per_dof=float(np.sum(d_ob ** 2 / (hbht + r)) / m),
                      desroziers_r=float(np.mean(d_oa * d_ob)), assumed_r=float(np.mean(r)),
                      desroziers_hbht=float(np.mean(d_ab * d_ob)), ensemble_hbht=float(np.mean(hbht)))


def fit_record(y, hxb_members, hxa_members, error_std) -> dict[str, float]:
    """:func:`fit` as the entries of a diagnostics record (every statistic but the count ``n``), the keys a filter
    analysis without truth records: ES-MDA and 4D-Var campaigns fed by files record the same."""
    out = fit(y, hxb_members, hxa_members, error_std).as_dict()
    out.pop("n")
    return out


def observation_ranks(y, hxb_members, error_std, rng: np.random.Generator) -> np.ndarray:
    """The rank (0..N) of every observation among the forecast members perturbed with the observation error."""
    Yb = np.asarray(hxb_members, dtype=float)
    e = np.broadcast_to(np.asarray(error_std, dtype=float), (Yb.shape[0],))
    perturbed = Yb + rng.standard_normal(Yb.shape) * e[:, None]
    y = np.asarray(y, dtype=float)
    below = np.sum(perturbed < y[:, None], axis=1)
    ties = np.sum(perturbed == y[:, None], axis=1)
    return below + (rng.integers(0, ties + 1) if np.any(ties) else 0)


def rank_histogram(ranks, n_members: int) -> np.ndarray:
    """Counts of each rank 0..N."""
    return np.bincount(np.asarray(ranks, dtype=np.int64), minlength=n_members + 1)
