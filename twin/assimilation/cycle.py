"""The ensemble cycle: forecast every member to the next observation time, analyse, record diagnostics, repeat.

Layout ("online" mode): the job's ranks are split into groups (:func:`twin.core.comm.split_ensemble`); each group
forecasts its members with a *forecast* callable, then the ensemble is transposed to blocks of control entries
(:mod:`twin.assimilation.layout`), analysed block by block with observation-space quantities known on every rank, and
transposed back. Random numbers (initial perturbations, perturbed observations, rotations) are drawn from generators
seeded by ``(seed, purpose, member or cycle)``, the same on every rank, so the same seed gives the same analysis on
any number of ranks (to round-off: the observed ensemble ``H E`` is a sum over blocks).

Time is integers: cycle ``k`` forecasts from ``t0 + k * every * dt`` to ``t0 + (k + 1) * every * dt`` and assimilates
the observations of its end time.

A *forecast* is any callable ``forecast(states, params, t0, t1) -> states`` on full member states (natural order,
``n_state x k``) and physical parameter values (``params[name]`` of shape ``(k,)`` or ``(size, k)``), e.g.
:class:`ModelForecast` (any model, through :meth:`~twin.models.base.Model.advance`) or the batched Lorenz-96 RK4.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from twin.assimilation import diagnostics as diag
from twin.assimilation.layout import EnsembleDistribution
from twin.assimilation.letkf import LETKF, Geometry, LocalContext
from twin.assimilation.transforms import ControlVector, inverse
from twin.core.comm import split_ensemble
from twin.core.errors import AssimilationError, ObservationError
from twin.core.log import get_logger
from twin.observations.base import LinearObservations

log = get_logger("twin.assimilation.cycle")

_INITIAL, _ANALYSIS = 1, 2


@dataclass
class ObservationSchedule:
    """Observations every ``every`` model steps of ``dt``, for ``n_cycles`` cycles; the first ``burn_in`` cycles are
    left out of time averages."""

    dt: float
    every: int
    n_cycles: int
    burn_in: int = 0
    t0: float = 0.0

    def __post_init__(self):
        if not (np.isfinite(self.dt) and self.dt > 0):
            raise AssimilationError(f"observation schedule: model step dt must be positive, got {self.dt}")
        if self.every < 1 or self.n_cycles < 1:
            raise AssimilationError(f"observation schedule: need every >= 1 and n_cycles >= 1, got every="
                                    f"{self.every}, n_cycles={self.n_cycles}")
        if not 0 <= self.burn_in < self.n_cycles:
            raise AssimilationError(f"observation schedule: burn_in={self.burn_in} must lie in [0, n_cycles)")

    def window(self, k: int) -> tuple[float, float]:
        """Start and end (observation) time of cycle ``k``."""
        return self.t0 + k * self.every * self.dt, self.t0 + (k + 1) * self.every * self.dt


class ModelForecast:
    """Forecast members one after another with a model's own :meth:`advance` (PETSc TS) on its communicator.

    Every rank of the model's communicator holds the full member states (natural order); each rank copies in its
    owned block, and the advanced state is gathered back. Parameters go through :meth:`Model.set_parameter`: scalars
    on any communicator, fields given whole (natural order) on any communicator.
    """

    def __init__(self, model):
        self.model = model
        self._vec = model.create_state()

    def __call__(self, states: np.ndarray, params: dict[str, np.ndarray], t0: float, t1: float) -> np.ndarray:
        out = np.empty_like(states)
        grid = self.model.grid
        for j in range(states.shape[1]):
            for name, values in params.items():
                set_parameter_natural(self.model, name, values[..., j])
            grid.set_global(states[:, j], self._vec)
            self.model.advance(self._vec, t0, t1)
            out[:, j] = grid.allgather(self._vec).ravel()
        return out

    def destroy(self) -> None:
        self._vec.destroy()


def set_parameter_natural(model, name: str, value) -> None:
    """Give ``model`` a parameter value: a scalar, or a whole field in natural order on
    :meth:`~twin.models.base.Model.parameter_grid` (each rank takes its block)."""
    p = model.parameters.get(name)
    if p is not None and p.is_field:
        model.parameter_grid(name).set_global(np.asarray(value, dtype=float).ravel(), p.value)
        model.parameters_changed([name])
    else:
        model.set_parameter(name, float(np.asarray(value).reshape(())) if np.ndim(value) else value)


@dataclass
class CycleResult:
    """Per-cycle diagnostics (arrays over cycles), time averages after burn-in, and the final analysis.

    ``final_members`` are this group's members (control vectors as columns); ``final_ensemble`` is the whole
    analysis ensemble on every rank when the run was asked to gather it.
    """

    diagnostics: dict[str, np.ndarray]
    averages: dict[str, float]
    rank_histogram: np.ndarray | None
    parameter_mean: dict[str, np.ndarray] = field(default_factory=dict)
    final_members: np.ndarray | None = None
    members: list[int] = field(default_factory=list)
    final_ensemble: np.ndarray | None = None


class EnsembleCycle:
    """Runs a sequential ensemble DA experiment.

    Parameters
    ----------
    method : ETKF, EnKF or LETKF
        The analysis (with its ``N`` and ``inflation``).
    forecast : callable
        ``forecast(states, params, t0, t1)``, see the module docstring.
    observations : LinearObservations
    schedule : ObservationSchedule
    comm : mpi4py communicator
        The job's ranks; members are spread over groups of ``ranks_per_member``.
    n_state : int
        State entries per member.
    geometry : Geometry, optional
        Needed by LETKF.
    control : ControlVector, optional
        Estimable parameters joining the control vector (default: state only). With LETKF, a parameter with one
        value per grid point (natural order) is a field and localised at its points; the others get the global
        transform.
    seed : int
    ranks_per_member : int
    """

    def __init__(self, method, forecast: Callable, observations: LinearObservations, schedule: ObservationSchedule,
                 comm, n_state: int, *, geometry: Geometry | None = None, control: ControlVector | None = None,
                 seed: int = 0, ranks_per_member: int = 1):
        self.method = method
        self.forecast = forecast
        self.obs = observations
        self.schedule = schedule
        self.comm = comm
        self.n_state = int(n_state)
        self.control = control or ControlVector(self.n_state)
        self.seed = int(seed)
        if self.control.n_state != self.n_state:
            raise AssimilationError(f"control vector has {self.control.n_state} state entries, model {self.n_state}")
        if observations.matrix.shape[1] != self.n_state:
            raise ObservationError(f"observations '{observations.name}' act on {observations.matrix.shape[1]} state "
                                   f"entries, the model state has {self.n_state}")
        if isinstance(method, LETKF):
            if geometry is None or observations.locations is None:
                raise AssimilationError("LETKF needs the state geometry and observation locations for localisation")
            if geometry.n_entries != self.n_state:
                raise AssimilationError(f"geometry describes {geometry.n_entries} entries, state has {self.n_state}")
        self.geometry = geometry
        self.layout = split_ensemble(comm, method.N, ranks_per_member)
        self.dist = EnsembleDistribution(comm, self.layout, method.N, self.control.size)
        start, stop = self.dist.start, self.dist.stop
        self._state_rows = slice(0, max(0, min(stop, self.n_state) - start))
        self._H = self.obs.matrix[:, start:min(stop, self.n_state)] if start < self.n_state else None
        self._local = None
        if geometry is not None:
            # a parameter with one value per grid point is a field there, localised like the state
            fields = [self.control.offsets[p.name] for p in self.control.parameters
                      if p.size > 1 and p.size == geometry.points.shape[0]]
            self._local = LocalContext(geometry.entry_points(start, stop, fields), geometry, observations.locations)

    def _reduce(self, arrays: list[np.ndarray]) -> list[np.ndarray]:
        """Sum several arrays over the job's ranks in one reduction (each cycle needs a few small sums)."""
        flat = np.concatenate([np.ravel(a) for a in arrays])
        if self.comm.Get_size() > 1:
            total = np.empty_like(flat)
            self.comm.Allreduce(flat, total)
            flat = total
        out, off = [], 0
        for a in arrays:
            out.append(flat[off:off + np.size(a)].reshape(np.shape(a)))
            off += np.size(a)
        return out

    def _parameter_sums(self, block: np.ndarray) -> np.ndarray:
        """Per estimable parameter: sum over its owned entries of the member mean (physical), and the entry count."""
        out = np.zeros((len(self.control.parameters), 2))
        for i, p in enumerate(self.control.parameters):
            lo, hi = self.control.offsets[p.name]
            a, b = max(lo, self.dist.start), min(hi, self.dist.stop)
            if a < b:
                vals = inverse(block[a - self.dist.start:b - self.dist.start], p.transform, p.name)
                out[i] = vals.mean(axis=1).sum(), b - a
        return out

    def run(self, initial: Callable[[int, np.random.Generator], tuple[np.ndarray, dict]], observations: np.ndarray,
            truth: np.ndarray | None = None, gather_final: bool = False) -> CycleResult:
        """Cycle through the schedule.

        Parameters
        ----------
        initial : callable
            ``initial(member, rng) -> (state (n_state,), {name: physical value})``; called only for this group's
            members, with a generator seeded by ``(seed, member)``.
        observations : ndarray (n_cycles, m)
            ``y`` at the end of each cycle.
        truth : ndarray (n_cycles + 1, n_state), optional
            The true state at ``t0`` and at each observation time (twin experiments): enables RMSE, CRPS, rank
            histogram.
        gather_final : bool
            Also return the whole final analysis ensemble on every rank.
        """
        sch, obs = self.schedule, self.obs
        y_all = np.asarray(observations, dtype=float)
        if y_all.shape != (sch.n_cycles, obs.n_obs):
            raise ObservationError(f"expected observations of shape {(sch.n_cycles, obs.n_obs)}, got {y_all.shape}")
        if not np.all(np.isfinite(y_all)):
            raise ObservationError("observations contain non-finite values")
        if truth is not None and truth.shape != (sch.n_cycles + 1, self.n_state):
            raise AssimilationError(f"truth must have shape {(sch.n_cycles + 1, self.n_state)}, got {truth.shape}")
        mine = self.layout.members
        states, params = [], {p.name: [] for p in self.control.parameters}
        for member in mine:
            x, p = initial(member, np.random.default_rng([self.seed, _INITIAL, member]))
            states.append(np.asarray(x, dtype=float))
            for name in params:
                params[name].append(np.asarray(p[name], dtype=float))
        states = np.array(states).T.reshape(self.n_state, len(mine))
        params = {k: np.array(v).T if v else np.empty(0) for k, v in params.items()}
        infl = self.method.inflation
        factor = infl.multiplicative
        keys = ["rmse_f", "rmse_a", "spread_f", "spread_a", "crps_a", "innovation_mean", "innovation_var",
                "innovation_expected_var", "inflation"]
        rec = {k: np.full(sch.n_cycles, np.nan) for k in keys}
        pmean = {p.name: np.full(sch.n_cycles, np.nan) for p in self.control.parameters}
        hist = None
        r = obs.error_std
        rows = slice(self._state_rows.start, self._state_rows.stop)
        t_lo = truth[:, self.dist.start:min(self.dist.stop, self.n_state)] if truth is not None else None
        block = None
        rng = np.random.default_rng([self.seed, _ANALYSIS])
        N = self.method.N
        for k in range(sch.n_cycles):
            t0, t1 = sch.window(k)
            if mine:
                states = self.forecast(states, params, t0, t1)
            block = self.dist.to_blocks(self.control.pack(states, params) if mine else np.empty((0, 0)))
            truth_k = t_lo[k + 1] if t_lo is not None else None
            HE = np.asarray(self._H @ block[rows]) if self._H is not None else np.zeros((obs.n_obs, N))
            Y, fsum = self._reduce([HE, diag.block_sums(block[rows], truth_k)])
            inn = diag.innovation_stats(Y, y_all[k], r)
            rec["innovation_mean"][k], rec["innovation_var"][k] = inn.mean, inn.variance
            rec["innovation_expected_var"][k] = inn.expected_variance
            rec["spread_f"][k] = np.sqrt(fsum[1] / fsum[0])
            rec["inflation"][k] = factor
            Ef, Yf = infl.prior(block, Y, factor)
            # Same generator, same draws in the same order on every rank: identical transforms everywhere.
            Ea = self.method.analysis(Ef, Yf, y_all[k], r, rng, self._local)
            block = infl.posterior(Ea, Ef)
            factor = infl.updated_factor(factor, Y, y_all[k], r)
            counts = (diag.rank_histogram(block[rows], truth_k) if truth_k is not None and k >= sch.burn_in
                      else np.zeros(N + 1, dtype=np.int64))
            bad = np.array([float(not np.all(np.isfinite(block)))])
            asum, counts, psum, bad = self._reduce([diag.block_sums(block[rows], truth_k), counts.astype(float),
                                                    self._parameter_sums(block), bad])
            if bad[0]:
                raise AssimilationError(f"analysis of cycle {k} (t={t1:g}) produced non-finite values; "
                                        "check inflation and observation errors")
            rec["spread_a"][k] = np.sqrt(asum[1] / asum[0])
            if truth_k is not None:
                rec["rmse_f"][k] = np.sqrt(fsum[2] / fsum[0])
                rec["rmse_a"][k] = np.sqrt(asum[2] / asum[0])
                rec["crps_a"][k] = asum[3] / asum[0]
                if k >= sch.burn_in:
                    hist = counts.astype(np.int64) if hist is None else hist + counts.astype(np.int64)
            for i, p in enumerate(self.control.parameters):
                pmean[p.name][k] = psum[i, 0] / psum[i, 1]
            states, params = self.control.unpack(self.dist.to_members(block))
            states = np.array(states)
        after = slice(sch.burn_in, sch.n_cycles)
        averages = {k: float(np.mean(v[after])) for k, v in rec.items() if not np.all(np.isnan(v[after]))}
        if "rmse_a" in averages:
            averages["spread_skill_a"] = averages["spread_a"] / averages["rmse_a"]
        result = CycleResult(rec, averages, hist, pmean, self.control.pack(states, params) if mine else None,
                             list(mine))
        if gather_final:
            result.final_ensemble = self.dist.gather(block)
        log.info("%s: %d cycles, mean analysis RMSE %s, spread %.4g", getattr(self.method, "name", "analysis"),
                 sch.n_cycles, f"{averages['rmse_a']:.4g}" if "rmse_a" in averages else "n/a",
                 averages["spread_a"])
        return result

    def free(self) -> None:
        """Free the communicators of the ensemble layout."""
        self.layout.free()


def twin_truth(forecast: Callable, x0: np.ndarray, params: dict, schedule: ObservationSchedule,
               observations: LinearObservations, seed: int, spinup_cycles: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A twin experiment's truth at ``t0`` and each observation time, and its synthetic observations.

    Runs on every rank identically (same seed), for states small enough to hold everywhere (Lorenz-96, tests).
    ``spinup_cycles`` windows are run first (and discarded) so the truth starts on the attractor.
    """
    rng = np.random.default_rng([seed, 3])
    x = np.asarray(x0, dtype=float).reshape(-1, 1)
    p = {k: np.atleast_1d(v) for k, v in params.items()}
    span = schedule.every * schedule.dt
    for i in range(spinup_cycles):
        x = forecast(x, p, schedule.t0 - (spinup_cycles - i) * span, schedule.t0 - (spinup_cycles - i - 1) * span)
    truth = [x[:, 0].copy()]
    ys = []
    for k in range(schedule.n_cycles):
        t0, t1 = schedule.window(k)
        x = forecast(x, p, t0, t1)
        truth.append(x[:, 0].copy())
        ys.append(observations.perturbed(x[:, 0], rng))
    return np.array(truth), np.array(ys)
