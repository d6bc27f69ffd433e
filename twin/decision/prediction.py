"""Posterior prediction: forecast every posterior member under a control and summarise quantities of interest.

Given posterior samples ``(x_j, p_j)``, ``j = 1..N`` (an analysis ensemble or Laplace samples; states ``x`` in the
model's state units, parameters ``p`` in their physical units), a control ``u`` (a treatment plan, a load scenario)
and output times ``t_1 < .. < t_T``, each member is advanced with the model's own solver and the QoIs
``q_j(t) = Q(x_j(t), p_j)`` are recorded. The predictive distribution of a scalar QoI ``q`` is summarised by

* credible intervals from sample quantiles ``q_a`` (default ``a`` = 5, 50, 95 %; linear interpolation between order
  statistics, ``numpy.quantile``);
* exceedance probabilities ``P(q > limit)``, the fraction of members above;
* risk measures: the mean, and the superquantile (conditional value at risk) at level ``alpha`` (Rockafellar &
  Uryasev 2000; Rockafellar & Royset 2010),

      CVaR_alpha(q) = min_t { t + E[(q - t)^+] / (1 - alpha) },

  the mean of the worst ``1 - alpha`` fraction of outcomes. For the empirical distribution of ``N`` equally weighted
  samples the minimiser is the ``alpha``-quantile (value at risk), and the formula is evaluated exactly with
  ``t = q_(ceil(alpha N))`` (order statistic), including the fractional weight of the atom at ``t``. For a Gaussian
  ``N(mu, sigma^2)``, ``CVaR_alpha = mu + sigma phi(Phi^-1(alpha)) / (1 - alpha)`` (:func:`gaussian_superquantile`),
  which the unit tests compare against.

These are hand-written because they are a few lines over sorted samples; ``numpy.quantile`` provides the quantiles.
QoIs are whatever the model's :meth:`~twin.models.base.Model.qoi` returns (units from it), plus optional extra
functions of the member state (e.g. time to progression).

Parallel use: :func:`forecast_members` calls collective model methods in the same order on every rank of the model's
communicator; the returned arrays are identical on every rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from scipy.special import ndtri

from twin.core.errors import ModelError
from twin.core.log import get_logger
from twin.models import contract

log = get_logger("twin.decision.prediction")

#: default credible levels of the summaries (5 / 50 / 95 %)
LEVELS = (0.05, 0.5, 0.95)


# -- statistics of samples -------------------------------------------------------------------------------------------
def _samples(values, axis: int = 0) -> np.ndarray:
    s = np.asarray(values, dtype=float)
    if s.size == 0 or s.shape[axis] == 0:
        raise ValueError("need at least one sample")
    return s


def credible_interval(samples, levels: Sequence[float] = LEVELS, axis: int = 0) -> np.ndarray:
    """Sample quantiles at ``levels`` along ``axis`` (the member axis); shape ``(len(levels),) + rest``."""
    s = _samples(samples, axis)
    lv = np.asarray(levels, dtype=float)
    if np.any((lv < 0) | (lv > 1)):
        raise ValueError(f"credible levels must lie in [0, 1], got {list(levels)}")
    return np.quantile(s, lv, axis=axis)


def exceedance_probability(samples, limit: float, axis: int = 0) -> np.ndarray | float:
    """``P(q > limit)``: the fraction of samples above ``limit`` along ``axis``."""
    s = _samples(samples, axis)
    p = np.mean(s > limit, axis=axis)
    return float(p) if np.ndim(p) == 0 else p


def superquantile(samples, alpha: float, axis: int = 0) -> np.ndarray | float:
    """Superquantile / CVaR at level ``alpha`` in [0, 1) of equally weighted samples (exact for the empirical law).

    With the samples sorted, ``k = ceil(alpha N)`` and ``t = q_(k)`` (1-based order statistic, the value at risk),
    ``CVaR = t + sum_j (q_j - t)^+ / ((1 - alpha) N)``. ``alpha = 0`` gives the mean.
    """
    if not 0.0 <= alpha < 1.0:
        raise ValueError(f"superquantile level must lie in [0, 1), got {alpha}")
    s = np.moveaxis(_samples(samples, axis), axis, 0)
    n = s.shape[0]
    srt = np.sort(s, axis=0)
    k = max(int(math.ceil(alpha * n - 1e-12)), 1)
    t = srt[k - 1]
    out = t + np.sum(np.maximum(srt - t, 0.0), axis=0) / ((1.0 - alpha) * n)
    return float(out) if np.ndim(out) == 0 else out


def gaussian_superquantile(mean: float, std: float, alpha: float) -> float:
    """CVaR at level ``alpha`` of ``N(mean, std^2)``: ``mean + std phi(z) / (1 - alpha)``, ``z = Phi^-1(alpha)``."""
    z = float(ndtri(alpha))
    return float(mean + std * math.exp(-0.5 * z * z) / math.sqrt(2.0 * math.pi) / (1.0 - alpha))


def risk(samples, measure: str = "mean", alpha: float = 0.9, axis: int = 0):
    """The risk of ``samples`` under ``measure``: ``"mean"`` or ``"cvar"`` (superquantile at ``alpha``)."""
    if measure == "mean":
        m = np.mean(_samples(samples, axis), axis=axis)
        return float(m) if np.ndim(m) == 0 else m
    if measure == "cvar":
        return superquantile(samples, alpha, axis)
    raise ValueError(f"unknown risk measure {measure!r}; use 'mean' or 'cvar'")


@dataclass
class QoISummary:
    """Summary of a scalar QoI's predictive distribution at one time (units those of the QoI)."""

    name: str
    units: str
    mean: float
    std: float
    quantiles: dict[float, float]
    cvar: float
    cvar_level: float
    exceedance: dict[float, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "units": self.units, "mean": self.mean, "std": self.std,
                "quantiles": {f"{k:g}": v for k, v in self.quantiles.items()}, "cvar": self.cvar,
                "cvar_level": self.cvar_level, "exceedance": {f"{k:g}": v for k, v in self.exceedance.items()}}


def summarise(samples, name: str = "q", units: str = "1", levels: Sequence[float] = LEVELS, cvar_level: float = 0.9,
              limits: Sequence[float] = ()) -> QoISummary:
    """Mean, standard deviation, credible quantiles, CVaR and exceedance probabilities of one QoI's samples."""
    s = _samples(samples).ravel()
    q = credible_interval(s, levels)
    return QoISummary(name, units, float(s.mean()), float(s.std(ddof=1)) if s.size > 1 else 0.0,
                      {float(a): float(v) for a, v in zip(levels, q)}, float(superquantile(s, cvar_level)),
                      float(cvar_level), {float(lim): float(exceedance_probability(s, lim)) for lim in limits})


# -- posterior ensembles ---------------------------------------------------------------------------------------------
@dataclass
class PosteriorEnsemble:
    """Posterior samples of a model: whole states and physical parameter values.

    Attributes
    ----------
    states : ndarray (N, n_state)
        Member states in natural order (``grid.set_global`` layout), the model's state units.
    parameters : dict of ndarray
        ``name -> (N,)`` scalars or ``(N, field size)`` fields, physical values.
    time : float
        Model time of the states.
    """

    states: np.ndarray
    parameters: dict[str, np.ndarray] = field(default_factory=dict)
    time: float = 0.0

    def __post_init__(self):
        self.states = np.atleast_2d(np.asarray(self.states, dtype=float))
        n = self.states.shape[0]
        self.parameters = {k: np.asarray(v, dtype=float) for k, v in self.parameters.items()}
        for k, v in self.parameters.items():
            if v.shape[0] != n:
                raise ModelError("decision", f"posterior parameter '{k}' has {v.shape[0]} samples, states have {n}")

    @property
    def size(self) -> int:
        return self.states.shape[0]

    @classmethod
    def from_checkpoint(cls, path, component: str, comm=None) -> "PosteriorEnsemble":
        """The analysis ensemble of a campaign checkpoint (``checkpoint/cycle_NNNN.h5``): live members only."""
        from twin.io.checkpoint import CheckpointReader

        with CheckpointReader(Path(path), comm) as r:
            states = r.read_field(component)
            alive = (r.read_array("alive").astype(bool) if "alive" in r.array_names
                     else np.ones(states.shape[0], bool))
            params = {k: np.asarray(v)[alive] for k, v in r.scalar_parameters.items() if np.ndim(v) == 1}
            for name in r.parameter_fields:
                params[name] = r.read_field(name, "parameters")[alive].reshape(int(alive.sum()), -1)
            t = r.time
        return cls(states[alive].reshape(int(alive.sum()), -1), params, t)


@dataclass
class FieldMoments:
    """Ensemble mean and spread of the whole state (natural order) at some output times of a forecast.

    Attributes
    ----------
    times : ndarray (T,)
        Model times of the snapshots (a subset of the forecast's output times).
    mean, spread : ndarray (T, n_state)
        Member mean and standard deviation (``ddof=1``; 0 for one member), the model's state units.
    """

    times: np.ndarray
    mean: np.ndarray
    spread: np.ndarray


class _Moments:
    """Welford's running mean and sum of squared deviations of one vector per snapshot, member after member: the
    memory is two states per snapshot whatever the ensemble size."""

    def __init__(self, count: int):
        self.count, self.n = count, 0
        self.mean: np.ndarray | None = None
        self.m2: np.ndarray | None = None

    def add(self, index: int, x: np.ndarray, first: bool) -> None:
        if self.mean is None:
            self.mean = np.zeros((self.count, x.size))
            self.m2 = np.zeros((self.count, x.size))
        if first:
            self.n += 1
        delta = x - self.mean[index]
        self.mean[index] += delta / self.n
        self.m2[index] += delta * (x - self.mean[index])

    def result(self, times: np.ndarray) -> FieldMoments:
        spread = np.sqrt(self.m2 / (self.n - 1)) if self.n > 1 else np.zeros_like(self.m2)
        return FieldMoments(times, self.mean, spread)


@dataclass
class QoIForecast:
    """QoI samples along a forecast: ``values[name]`` has shape ``(N, len(times))``; ``fields``: the ensemble mean
    and spread of the state at the snapshot times asked for (:func:`forecast_members`), else ``None``."""

    times: np.ndarray
    values: dict[str, np.ndarray]
    units: dict[str, str] = field(default_factory=dict)
    fields: FieldMoments | None = None
    #: what each QoI is (:attr:`twin.models.base.QoI.long_name`), where the model says
    long_names: dict[str, str] = field(default_factory=dict)

    def summary(self, name: str, index: int = -1, levels: Sequence[float] = LEVELS, cvar_level: float = 0.9,
                limits: Sequence[float] = ()) -> QoISummary:
        """Summary of QoI ``name`` at time index ``index`` (default: the horizon)."""
        if name not in self.values:
            raise ModelError("decision", f"no QoI '{name}' in the forecast; have {sorted(self.values)}")
        return summarise(self.values[name][:, index], name, self.units.get(name, "1"), levels, cvar_level, limits)

    def fan(self, name: str, levels: Sequence[float] = LEVELS) -> np.ndarray:
        """Quantiles of QoI ``name`` at every time, shape ``(len(levels), len(times))`` (a fan chart)."""
        return credible_interval(self.values[name], levels, axis=0)

    def running_max(self, name: str) -> np.ndarray:
        """``max_{s <= t} q(s)`` per member (e.g. the peak stress reached within the horizon)."""
        return np.maximum.accumulate(self.values[name], axis=1)


def forecast_members(model, ensemble: PosteriorEnsemble, times: Sequence[float], *,
                     control: Callable[[Any], None] | None = None, qois: Sequence[str] | None = None,
                     extra: Mapping[str, Callable[[Any, Any, float], float]] | None = None,
                     snapshots: Sequence[int] = ()) -> QoIForecast:
    """Advance every posterior member through ``times`` under ``control`` and record its QoIs. Collective.

    Parameters
    ----------
    model : twin.models.base.Model
        The model (its parameters are changed member by member and left at the last member's values).
    ensemble : PosteriorEnsemble
        States at ``ensemble.time``.
    times : sequence of float
        Output times (model time units), increasing, all ``>= ensemble.time``.
    control : callable, optional
        ``control(model)`` applies the decision (e.g. sets a treatment plan) before the members run.
    qois : sequence of str, optional
        Names of :meth:`Model.qoi` to keep (default: all; an empty list skips :meth:`Model.qoi`).
    extra : mapping, optional
        ``name -> f(model, state, t)``: additional QoIs evaluated at every output time on the member's state (the
        function must not modify it).
    snapshots : sequence of int, optional
        Indices into ``times`` at which the ensemble mean and spread of the whole state (natural order) are
        accumulated (``QoIForecast.fields``), member by member: two states per snapshot in memory.

    Raises
    ------
    ModelError
        For decreasing times or a requested QoI the model does not provide.
    """
    times = np.asarray(times, dtype=float)
    if times.ndim != 1 or times.size == 0 or np.any(np.diff(times) < 0) or times[0] < ensemble.time:
        raise ModelError(model.name, f"forecast times must be increasing and start at or after the posterior time "
                                     f"{ensemble.time:g}, got {times.tolist()}")
    from twin.assimilation.cycle import set_parameter_natural

    if control is not None:
        control(model)
    extra = dict(extra or {})
    keep = sorted({int(i) % times.size for i in snapshots})
    moments = _Moments(len(keep)) if keep else None
    vec = model.create_state()
    values: dict[str, np.ndarray] = {}
    units: dict[str, str] = {}
    long_names: dict[str, str] = {}
    try:
        for j in range(ensemble.size):
            for name, v in ensemble.parameters.items():
                set_parameter_natural(model, name, v[j] if v.ndim > 1 else float(v[j]))
            model.grid.set_global(ensemble.states[j], vec)
            t = ensemble.time
            for i, t_out in enumerate(times):
                model.advance(vec, t, float(t_out))
                t = float(t_out)
                # qois=[] skips Model.qoi, which may be costly (e.g. an eigenvalue solve for a frequency)
                q = contract.qoi(model, vec, t) if qois is None or len(qois) else {}  # checked: name -> QoI
                wanted = list(q) if qois is None else list(qois)
                missing = [n for n in wanted if n not in q]
                if missing:
                    raise ModelError(model.name, f"no QoI {missing}; the model provides {sorted(q)}")
                for n in wanted:
                    values.setdefault(n, np.full((ensemble.size, times.size), np.nan))[j, i] = q[n].value
                    units[n] = q[n].units
                    if q[n].long_name:
                        long_names[n] = q[n].long_name
                for n, f in extra.items():
                    values.setdefault(n, np.full((ensemble.size, times.size), np.nan))[j, i] = float(f(model, vec, t))
                if moments is not None and i in keep:
                    moments.add(keep.index(i), model.grid.allgather(vec).ravel(), first=i == keep[0])
    finally:
        vec.destroy()
    log.debug("%s: forecast %d posterior members to t=%g", model.name, ensemble.size, float(times[-1]))
    fields = moments.result(times[keep]) if moments is not None and ensemble.size else None
    return QoIForecast(times, values, units, fields, long_names)


def interval_coverage(lower: np.ndarray, upper: np.ndarray, truth: np.ndarray) -> float:
    """Fraction of experiments whose interval ``[lower, upper]`` contains the truth (calibration check)."""
    lower, upper, truth = (np.asarray(a, dtype=float) for a in (lower, upper, truth))
    return float(np.mean((truth >= lower) & (truth <= upper)))
