"""The analysis of one filter cycle, as every cycle in twin runs it.

The campaign's analysis step (:func:`twin.campaign.steps.analyse`, online and workflow mode) and the in-memory cycle
driver that the verification tests run (:class:`twin.assimilation.cycle.EnsembleCycle`) both call
:meth:`EnsembleAnalysis.analyse`: the analysis the literature and Kalman-limit tests verify is the one users run.

``E`` is the forecast ensemble: ``N`` control vectors as columns (the state in natural order, then every estimable
parameter in its transform's space, :class:`~twin.assimilation.transforms.ControlVector`), ``H`` the linear
observation operator of the state part, ``y`` the observations, ``r`` their error standard deviations, ``lambda``
the multiplicative inflation factor of this cycle. One analysis:

1. ``Y = H E`` and the innovation statistics of ``Y`` (before inflation);
2. prior inflation ``E_f = inflate(E, lambda)``, ``Y_f = inflate(Y, lambda)``
   (:class:`~twin.assimilation.inflation.Inflation`);
3. optionally the *background check* (``background_check = k``): an observation whose innovation
   ``|y - mean(Y_f)|`` exceeds ``k sqrt(var(Y_f) + r^2)`` (the inflated forecast's variance in observation space
   plus its error variance, :func:`twin.observations.qc.background`) is rejected like a silent site: left out of the
   statistics and the analysis, counted in ``n_rejected_background`` and listed in the result's ``rejected``; then
   optionally a *screen* (the guardrails of a campaign) looks at ``Y_f``, ``y``, ``r`` and the inflated forecast
   and returns the observation rows to assimilate;
4. ``E_a = method.analysis(E_f, Y_f, y, r, rng, local)`` (ETKF, EnKF or LETKF) over those rows;
5. posterior relaxation of ``E_a`` to ``E_f`` (RTPS or RTPP);
6. the next factor ``lambda`` (adaptive inflation, from the uninflated ``Y`` of the assimilated rows);
7. the cycle's diagnostics record (the variables of ``diagnostics.nc``): forecast and analysis RMSE and spread
   against the truth, CRPS, 90 % coverage, innovation statistics, the factor used, ensemble means of the
   parameters; and the rank histogram of the truth in the analysis. Without a truth (observations of a real system)
   the record holds what can be checked in observation space instead: O-B and O-A mean and standard deviation, the
   innovation chi-square per degree of freedom and the Desroziers estimates of R and HBH^T
   (:func:`twin.observations.innovations.fit`).

Missing observations (NaN in ``y``: a site of an observation file that did not report in this cycle) are left out of
the statistics and the analysis; a screen sees them as zero innovations.

Checks, each an :class:`~twin.core.errors.AssimilationError` naming the cycle and what to change: an inflated
forecast with non-finite values (an overflowing factor, or a member whose forecast "succeeded" with NaN), linear
algebra that fails (it would otherwise surface as a bare ``LinAlgError``), a non-finite analysis.

Distribution: a rank may hold a contiguous block of rows of ``E`` (entries ``start .. stop-1`` of every member,
:mod:`twin.assimilation.layout`); ``H E`` and every diagnostic are sums over the blocks, reduced over ``comm`` in
two reductions per cycle, and the checks are reduced too, so every rank raises together. The random numbers (random
rotation, perturbed observations) come from the generator the caller passes, seeded identically on every rank: the
same seeds give the same analysis on any number of ranks (to round-off: ``H E`` is a sum over blocks). With no
``comm`` one process holds whole control vectors (the campaign's analysis).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from twin.assimilation import diagnostics as diag
from twin.assimilation.transforms import ControlVector, inverse
from twin.core.errors import AssimilationError, ObservationError
from twin.observations import qc
from twin.observations.base import LinearObservations

#: ``screen(cycle, time, Y_f, y, r, forecast, truth) -> (rows, record)``: the observation rows to assimilate and the
#: screen's statistics for the diagnostics record, given the inflated observed forecast ``Y_f`` of every row and the
#: inflated forecast state (whole states).
Screen = Callable[..., tuple[np.ndarray, dict[str, float]]]


@dataclass
class AnalysisResult:
    """The result of one :meth:`EnsembleAnalysis.analyse`.

    Attributes
    ----------
    ensemble : ndarray (n_block, N)
        The analysis (this rank's block).
    factor : float
        The inflation factor of the next cycle.
    record : dict
        The cycle's diagnostics (see the module docstring); the same on every rank.
    rank_counts : ndarray (N + 1,) or None
        Rank histogram of the truth in the analysis ensemble over the state entries (with a truth).
    rejected : ndarray of int
        The observation rows the background check rejected (empty without one).
    """

    ensemble: np.ndarray
    factor: float
    record: dict[str, float]
    rank_counts: np.ndarray | None = None
    rejected: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))


class EnsembleAnalysis:
    """One filter analysis (module docstring) of a configured method on a control vector.

    Parameters
    ----------
    method : ETKF, EnKF or LETKF
        The analysis with its ensemble size ``N`` and :class:`~twin.assimilation.inflation.Inflation`.
    observations : LinearObservations
        ``H`` (acting on the state part of the control vector).
    control : ControlVector
    local : LocalContext or CoupledContext, optional
        Localisation of this block's rows (LETKF; localised methods need it).
    comm : mpi4py communicator, optional
        The ranks over which the rows are spread (``None``: this process holds whole control vectors).
    rows : (int, int), optional
        The control entries ``start, stop`` this rank holds (default: all).
    background_check : float, optional
        ``k`` of the background check (module docstring); ``None``: every present observation is assimilated.
    """

    def __init__(self, method, observations: LinearObservations, control: ControlVector, *, local=None, comm=None,
                 rows: tuple[int, int] | None = None, background_check: float | None = None):
        if background_check is not None and not (np.isfinite(background_check) and background_check > 0):
            raise AssimilationError(f"background check: k must be positive, got {background_check}")
        self.background_check = background_check
        self.method = method
        self.obs = observations
        self.control = control
        self.local = local
        self.comm = comm if comm is not None and comm.Get_size() > 1 else None
        self.start, self.stop = (0, control.size) if rows is None else (int(rows[0]), int(rows[1]))
        n = control.n_state
        if observations.matrix.shape[1] != n:
            raise ObservationError(f"observations '{observations.name}' act on {observations.matrix.shape[1]} state "
                                   f"entries, the control vector has {n}")
        #: this block's state rows (local indices) and the matching columns of H
        self.state_rows = slice(0, max(0, min(self.stop, n) - self.start))
        #: this block's parameter rows (local indices; a joint state-parameter control puts them after the state)
        self.parameter_rows = slice(self.state_rows.stop, self.stop - self.start)
        if rows is None:
            self._H = observations.matrix
        elif self.start < n:
            self._H = observations.matrix[:, self.start:min(self.stop, n)]
        else:
            self._H = None

    def _reduce(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Sums of several arrays over ``comm`` in one reduction (as they are without one)."""
        if self.comm is None:
            return arrays
        flat = np.concatenate([np.ravel(np.asarray(a, dtype=float)) for a in arrays])
        total = np.empty_like(flat)
        self.comm.Allreduce(flat, total)
        out, off = [], 0
        for a in arrays:
            out.append(total[off:off + np.size(a)].reshape(np.shape(a)))
            off += np.size(a)
        return out

    def observe(self, E: np.ndarray) -> np.ndarray:
        """This block's part of ``H E`` (a sum over the blocks gives ``H E``)."""
        if self._H is None:
            return np.zeros((self.obs.n_obs, E.shape[1]))
        return np.asarray(self._H @ E[self.state_rows])

    def _fit(self, Ea: np.ndarray, Yf: np.ndarray, y: np.ndarray, r: np.ndarray, rows) -> dict[str, float]:
        """Observation-space statistics of the assimilated rows (:func:`twin.observations.innovations.fit`)."""
        from twin.observations.innovations import fit

        (Ya,) = self._reduce([self.observe(Ea)])
        k = slice(None) if rows is None else rows
        f = fit(y[k], Yf[k], Ya[k], r[k]).as_dict()
        return {key: f[key] for key in _fit_keys()}

    def _parameter_sums(self, E: np.ndarray) -> np.ndarray:
        """Per estimable parameter: the sum of its physical values over this block's entries and members, and their
        count."""
        out = np.zeros((len(self.control.parameters), 2))
        for i, p in enumerate(self.control.parameters):
            lo, hi = self.control.offsets[p.name]
            a, b = max(lo, self.start), min(hi, self.stop)
            if a < b:
                vals = inverse(E[a - self.start:b - self.start], p.transform, p.name)
                out[i] = np.sum(vals), vals.size
        return out

    def analyse(self, E: np.ndarray, y: np.ndarray, r, factor: float, rng: np.random.Generator, *, cycle: int,
                time: float = 0.0, truth: np.ndarray | None = None, screen: Screen | None = None) -> AnalysisResult:
        """Analyse the forecast block ``E`` (n_block x N) with the observations ``y`` (m,) of error standard
        deviations ``r`` (m, or a scalar) and this cycle's inflation ``factor``. Collective over ``comm``.

        Parameters
        ----------
        rng : numpy.random.Generator
            This cycle's analysis stream, seeded identically on every rank.
        cycle, time :
            For messages, the screen and its flags.
        truth : ndarray, optional
            The true state of this block's state rows (twin experiments): RMSE, CRPS, coverage, rank histogram.
        screen : callable, optional
            ``screen(cycle, time, Y_f, y, r, forecast, truth) -> (rows, record)`` run on the inflated forecast
            before the analysis (the campaign's guardrails): only ``rows`` are assimilated, ``record`` joins the
            diagnostics. Needs whole states (no ``comm``).

        Raises
        ------
        AssimilationError
            A non-finite inflated forecast, failed linear algebra or a non-finite analysis (every rank).
        """
        infl = self.method.inflation
        N = E.shape[1]
        y = np.asarray(y, dtype=float)
        r = np.broadcast_to(np.asarray(r, dtype=float), y.shape)
        present = np.isfinite(y) & np.isfinite(r)
        state = self.state_rows
        Ef = infl.inflated(E, factor)
        Y, fsum, ef_bad = self._reduce([self.observe(E), diag.block_sums(E[state], truth),
                                        (~np.all(np.isfinite(Ef), axis=0)).astype(float)])
        Yf = infl.inflated(Y, factor)
        bad = [m for m in range(N) if ef_bad[m] or not np.all(np.isfinite(Yf[:, m]))]
        if bad:
            raise AssimilationError(f"cycle {cycle}: the inflated forecast of member(s) {bad[:10]} holds non-finite "
                                    f"values (inflation factor {factor:g}); lower the inflation or check the model")
        rejected = np.zeros(0, dtype=np.int64)
        if self.background_check is not None:
            with np.errstate(invalid="ignore"):
                far = qc.background(y - Yf.mean(axis=1), Yf.var(axis=1, ddof=1), r, self.background_check)
            rejected = np.flatnonzero(present & far)
            present &= ~far
        given = np.flatnonzero(present) if not present.all() else None
        p = slice(None) if given is None else given
        if given is not None and given.size == 0:
            if rejected.size == 0:  # nothing observed: the file has no reading at this cycle's time
                raise AssimilationError(f"cycle {cycle} (t = {time:g}): no observation to assimilate in this cycle "
                                        "(every site was silent): give observations at the cycle's time (an "
                                        "observation file's times must fall on the cycles) or a longer cycle")
            raise AssimilationError(f"cycle {cycle}: no observation to assimilate in this cycle ({rejected.size} "
                                    "rejected by the background check): give a larger background_check, or check "
                                    "the observations and the forecast")
        inn = diag.innovation_stats(Y[p], y[p], r[p])
        rec: dict[str, float] = diag.scores(fsum, truth is not None, forecast=True)
        rec.update(innovation_mean=inn.mean, innovation_std=float(np.sqrt(inn.variance)),
                   innovation_expected_std=float(np.sqrt(inn.expected_variance)), inflation=factor,
                   n_obs=int(np.size(y[p])), members=int(N))
        if self.background_check is not None:
            rec["n_rejected_background"] = int(rejected.size)
        local, rows = self.local, given
        if screen is not None:
            if self.comm is not None:
                raise AssimilationError("a screen (guardrails) needs whole states: the analysis holds a block of "
                                        f"rows {self.start}..{self.stop} on {self.comm.Get_size()} ranks")
            ys, rs = y, r
            if given is not None:  # a silent site is a zero innovation to the screen
                ys, rs = np.where(present, y, Yf.mean(axis=1)), np.where(present, r, 1.0)
            rows, stats = screen(cycle, time, Yf, ys, rs, Ef[state], truth)
            rows = np.asarray(rows) if given is None else np.intersect1d(np.asarray(rows), given)
            rec.update(stats)
        if local is not None and rows is not None:
            local = local.observed(rows)
        failure = ""
        try:
            if rows is None:
                raw = self.method.analysis(Ef, Yf, y, r, rng, local)
                new_factor = infl.updated_factor(factor, Y, y, r)
            else:
                raw = self.method.analysis(Ef, Yf[rows], y[rows], r[rows], rng, local)
                new_factor = infl.updated_factor(factor, Y[rows], y[rows], r[rows])
            Ea = infl.parameter_posterior(infl.posterior(raw, Ef), raw, Ef, self.parameter_rows)
        except np.linalg.LinAlgError as exc:
            # the linear algebra of a local analysis may fail on one rank only: every rank learns of it below
            failure, Ea, new_factor = str(exc) or type(exc).__name__, Ef, factor
        with np.errstate(invalid="ignore"):
            counts = (diag.rank_histogram(Ea[state], truth).astype(float) if truth is not None
                      else np.zeros(N + 1))
            asum, counts, psum, flags = self._reduce([
                diag.block_sums(Ea[state], truth), counts, self._parameter_sums(Ea),
                np.array([float(bool(failure)), float(not np.all(np.isfinite(Ea)))])])
        if flags[0]:
            if self.comm is not None:
                failure = next(f for f in self.comm.allgather(failure) if f)
            raise AssimilationError(f"cycle {cycle}: the analysis' linear algebra failed ({failure}) with inflation "
                                    f"factor {factor:g} and {N} members; lower the inflation or check the "
                                    "observation errors")
        if flags[1]:
            raise AssimilationError(f"analysis of cycle {cycle} produced non-finite values; check inflation and "
                                    "observation errors")
        rec.update(diag.scores(asum, truth is not None))
        if truth is None:
            rec.update(self._fit(Ea, Yf, y, r, rows))
        for i, par in enumerate(self.control.parameters):
            rec[f"parameter_{par.name}"] = float(psum[i, 0] / psum[i, 1])
        return AnalysisResult(Ea, float(new_factor), rec, counts.astype(np.int64) if truth is not None else None,
                              rejected)


def _fit_keys() -> tuple[str, ...]:
    return ("omb_mean", "omb_std", "oma_mean", "oma_std", "chi2_per_dof", "desroziers_r", "assumed_r",
            "desroziers_hbht", "ensemble_hbht")


