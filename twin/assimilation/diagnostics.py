"""Ensemble diagnostics of a cycle: error against the truth, spread, rank histogram, CRPS, innovation statistics.

Definitions (``E`` an ensemble of ``N`` members as columns, ``xbar`` its mean, ``x_t`` the truth, ``n`` state entries;
units those of the state):

* RMSE: ``sqrt(mean_i (xbar_i - x_t,i)^2)``;
* spread: ``sqrt(mean_i var_i)`` with the unbiased member variance (``ddof = 1``); spread/skill is spread / RMSE,
  near 1 for a reliable ensemble (up to the factor ``sqrt((N+1)/N)``);
* rank histogram (Anderson 1996; Hamill 2001): counts, over entries, of the rank of the truth among the sorted
  members (``N + 1`` bins; flat for a reliable ensemble);
* CRPS of an ensemble (Hersbach 2000; Gneiting & Raftery 2007): ``mean_j |x_j - x_t| - 1/(2 N^2) sum_jk |x_j - x_k|``,
  averaged over entries;
* innovations ``d = y - H xbar_f``: their mean (bias) and variance, to compare with the expected variance
  ``mean(r^2) + mean(diag(H P_f H^T))`` (Desroziers et al. 2005).

Functions take the *owned block* of each rank and an mpi4py communicator for the sums (``None`` for serial use).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _sum(value, comm):
    return value if comm is None else comm.allreduce(value)


def rmse(E: np.ndarray, truth: np.ndarray, comm=None) -> float:
    """Root-mean-square error of the ensemble mean over all entries of all ranks."""
    err = E.mean(axis=1) - truth
    total, count = _sum(float(err @ err), comm), _sum(err.size, comm)
    return float(np.sqrt(total / count))


def spread(E: np.ndarray, comm=None) -> float:
    """Square root of the mean (over entries) unbiased ensemble variance."""
    var = E.var(axis=1, ddof=1)
    total, count = _sum(float(var.sum()), comm), _sum(var.size, comm)
    return float(np.sqrt(total / count))


def rank_histogram(E: np.ndarray, truth: np.ndarray, comm=None) -> np.ndarray:
    """Counts of the truth's rank among the members (``N + 1`` bins), over all entries."""
    ranks = np.sum(E < truth[:, None], axis=1)
    counts = np.bincount(ranks, minlength=E.shape[1] + 1)
    return counts if comm is None else comm.allreduce(counts)


def crps(E: np.ndarray, truth: np.ndarray, comm=None) -> float:
    """Mean continuous ranked probability score of the ensemble, over all entries.

    The pair term uses the sorted members: ``sum_jk |x_j - x_k| = 2 sum_j (2 j - N - 1) x_(j)`` (1-based ``j``),
    which costs ``O(N log N)`` per entry instead of ``O(N^2)``.
    """
    N = E.shape[1]
    first = np.mean(np.abs(E - truth[:, None]), axis=1)
    xs = np.sort(E, axis=1)
    pair = 2.0 * (xs @ (2.0 * np.arange(1, N + 1) - N - 1))
    per_entry = first - pair / (2.0 * N ** 2)
    total, count = _sum(float(per_entry.sum()), comm), _sum(per_entry.size, comm)
    return float(total / count)


def coverage(E: np.ndarray, truth: np.ndarray, level: float = 0.9, comm=None) -> float:
    """Fraction of entries whose truth lies inside the ensemble's central ``level`` interval (its empirical
    ``(1 - level) / 2`` and ``(1 + level) / 2`` quantiles): ``level`` for a calibrated ensemble, less for an
    over-confident one."""
    lo, hi = np.quantile(E, [(1 - level) / 2, (1 + level) / 2], axis=1)
    inside = float(np.count_nonzero((truth >= lo) & (truth <= hi)))
    return _sum(inside, comm) / _sum(truth.size, comm)


def block_sums(E: np.ndarray, truth: np.ndarray | None, level: float = 0.9) -> np.ndarray:
    """Sums over this block that the diagnostics above are made of, for one reduction of many diagnostics:
    ``[count, sum var, sum squared error of the mean, sum CRPS, entries inside the central level interval]`` (the
    last three 0 without a truth). Divided by the count they are exactly :func:`spread` squared, :func:`rmse`
    squared, :func:`crps` and :func:`coverage` of a block that is the whole state."""
    out = np.zeros(5)
    out[0] = E.shape[0]
    if E.shape[0] == 0:
        return out
    out[1] = E.var(axis=1, ddof=1).sum()
    if truth is not None:
        err = E.mean(axis=1) - truth
        out[2] = err @ err
        N = E.shape[1]
        xs = np.sort(E, axis=1)
        pair = 2.0 * (xs @ (2.0 * np.arange(1, N + 1) - N - 1))
        out[3] = np.sum(np.mean(np.abs(E - truth[:, None]), axis=1) - pair / (2.0 * N ** 2))
        lo, hi = np.quantile(E, [(1 - level) / 2, (1 + level) / 2], axis=1)
        out[4] = np.count_nonzero((truth >= lo) & (truth <= hi))
    return out


def scores(sums: np.ndarray, truth: bool, forecast: bool = False) -> dict[str, float]:
    """A diagnostics record's scores from reduced :func:`block_sums` of the forecast (``rmse_forecast``,
    ``spread_forecast``) or the analysis (``rmse``, ``spread``, ``crps``, ``coverage_90``); without a truth only the
    spread."""
    count, suffix = sums[0], "_forecast" if forecast else ""
    out = {f"rmse{suffix}": float(np.sqrt(sums[2] / count))} if truth else {}
    out[f"spread{suffix}"] = float(np.sqrt(sums[1] / count))
    if truth and not forecast:
        out.update(crps=float(sums[3] / count), coverage_90=float(sums[4] / count))
    return out


@dataclass
class InnovationStats:
    """Innovation mean, variance and the variance expected from ``R`` and the forecast spread."""

    mean: float
    variance: float
    expected_variance: float


def innovation_stats(Y: np.ndarray, y: np.ndarray, r: np.ndarray) -> InnovationStats:
    """Statistics of ``d = y - mean(Y)`` for the observed forecast ensemble ``Y`` (m, N)."""
    d = y - Y.mean(axis=1)
    expected = float(np.mean(r ** 2) + np.mean(Y.var(axis=1, ddof=1)))
    return InnovationStats(float(d.mean()), float(np.mean(d ** 2)), expected)
