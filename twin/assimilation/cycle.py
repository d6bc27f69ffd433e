"""The ensemble cycle: forecast every member to the next observation time, analyse, record diagnostics, repeat.

The analysis of each cycle is :class:`~twin.assimilation.analysis.EnsembleAnalysis`, the one a campaign's analysis
step runs (:func:`twin.campaign.steps.analyse`). This driver keeps the ensemble in memory instead of in files, which is
what the long verification runs (thousands of Lorenz-96 cycles) need; fed with a campaign's model, observations,
method and seeds it gives the campaign's diagnostics (``tests/verification/test_enkf_lorenz96.py`` checks it).

Layout: the job's ranks are split into groups (:func:`twin.core.comm.split_ensemble`); each group forecasts its
members with a *forecast* callable, then the ensemble is transposed to blocks of control entries
(:mod:`twin.assimilation.layout`), analysed block by block with observation-space quantities known on every rank, and
transposed back. Random numbers (initial perturbations, perturbed observations, rotations) come from the streams
``(seeds, purpose, member or cycle)`` of :mod:`twin.core.streams`, the same on every rank and the same as a
campaign's with the campaign's seeds, so the same seeds give the same analysis on any number of ranks (to round-off:
the observed ensemble ``H E`` is a sum over blocks).

Time is integers: cycle ``k`` forecasts from ``t0 + k * every * dt`` to ``t0 + (k + 1) * every * dt`` and assimilates
the observations of its end time.

A *forecast* is any callable ``forecast(states, params, t0, t1) -> states`` on full member states (natural order,
``n_state x k``) and physical parameter values (``params[name]`` of shape ``(k,)`` or ``(size, k)``), e.g.
:class:`ModelForecast` (any model, through :meth:`~twin.models.base.Model.advance`) or the batched Lorenz-96 RK4.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np

from twin.assimilation.analysis import EnsembleAnalysis
from twin.assimilation.layout import EnsembleDistribution
from twin.assimilation.letkf import LETKF, Geometry, LocalContext
from twin.assimilation.transforms import ControlVector
from twin.core.comm import split_ensemble
from twin.core.errors import AssimilationError, ObservationError
from twin.core.log import get_logger
from twin.core.streams import TRUTH_OBSERVATIONS, Purpose, Streams
from twin.observations.base import LinearObservations

log = get_logger("twin.assimilation.cycle")


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

    ``records`` are the per-cycle diagnostics records of :class:`~twin.assimilation.analysis.EnsembleAnalysis`, the
    rows a campaign writes to ``diagnostics.nc``; ``diagnostics`` holds the same numbers as arrays over cycles (keys:
    see :data:`DIAGNOSTICS`). ``final_members`` are this group's members (control vectors as columns);
    ``final_ensemble`` is the whole analysis ensemble on every rank when the run was asked to gather it.
    """

    diagnostics: dict[str, np.ndarray]
    averages: dict[str, float]
    rank_histogram: np.ndarray | None
    parameter_mean: dict[str, np.ndarray] = field(default_factory=dict)
    final_members: np.ndarray | None = None
    members: list[int] = field(default_factory=list)
    final_ensemble: np.ndarray | None = None
    records: list[dict[str, float]] = field(default_factory=list)


#: :attr:`CycleResult.diagnostics` (DAPPER's names: ``_f`` forecast, ``_a`` analysis) from the analysis record's
#: variables: name -> (record variable, power)
DIAGNOSTICS = {"rmse_f": ("rmse_forecast", 1), "rmse_a": ("rmse", 1), "spread_f": ("spread_forecast", 1),
               "spread_a": ("spread", 1), "crps_a": ("crps", 1), "coverage_a": ("coverage_90", 1),
               "innovation_mean": ("innovation_mean", 1), "innovation_var": ("innovation_std", 2),
               "innovation_expected_var": ("innovation_expected_std", 2), "inflation": ("inflation", 1)}


class EnsembleCycle:
    """Runs a sequential ensemble DA experiment in memory: forecast, then the analysis of
    :class:`~twin.assimilation.analysis.EnsembleAnalysis` (the one campaigns run), every cycle.

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
    seed : int, sequence of int or Streams
        The random streams (:mod:`twin.core.streams`): a campaign's ``(campaign.seed, assimilation.seed)`` draws
        what the campaign draws.
    ranks_per_member : int
    """

    def __init__(self, method, forecast: Callable, observations: LinearObservations, schedule: ObservationSchedule,
                 comm, n_state: int, *, geometry: Geometry | None = None, control: ControlVector | None = None,
                 seed: int | Sequence[int] | Streams = 0, ranks_per_member: int = 1):
        self.method = method
        self.forecast = forecast
        self.obs = observations
        self.schedule = schedule
        self.comm = comm
        self.n_state = int(n_state)
        self.control = control or ControlVector(self.n_state)
        self.streams = Streams.of(seed)
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
        local = None
        if geometry is not None:
            # a parameter with one value per grid point is a field there, localised like the state
            fields = [self.control.offsets[p.name] for p in self.control.parameters
                      if p.size > 1 and p.size == geometry.points.shape[0]]
            local = LocalContext(geometry.entry_points(start, stop, fields), geometry, observations.locations)
        self.analysis = EnsembleAnalysis(method, observations, self.control, local=local, comm=comm,
                                         rows=(start, stop))

    def run(self, initial: Callable[[int, np.random.Generator], tuple[np.ndarray, dict]], observations: np.ndarray,
            truth: np.ndarray | None = None, gather_final: bool = False) -> CycleResult:
        """Cycle through the schedule.

        Parameters
        ----------
        initial : callable
            ``initial(member, rng) -> (state (n_state,), {name: physical value})``; called only for this group's
            members, with the stream ``(seeds, INITIAL, member)``.
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
            x, p = initial(member, self.streams.rng(Purpose.INITIAL, member))
            states.append(np.asarray(x, dtype=float))
            for name in params:
                params[name].append(np.asarray(p[name], dtype=float))
        states = np.array(states).T.reshape(self.n_state, len(mine))
        params = {k: np.array(v).T if v else np.empty(0) for k, v in params.items()}
        factor = self.method.inflation.multiplicative
        records, hist = [], None
        t_lo = truth[:, self.dist.start:min(self.dist.stop, self.n_state)] if truth is not None else None
        block = None
        for k in range(sch.n_cycles):
            t0, t1 = sch.window(k)
            if mine:
                states = self.forecast(states, params, t0, t1)
            block = self.dist.to_blocks(self.control.pack(states, params) if mine else np.empty((0, 0)))
            out = self.analysis.analyse(block, y_all[k], obs.error_std, factor,
                                        self.streams.rng(Purpose.ANALYSIS, k), cycle=k, time=t1,
                                        truth=t_lo[k + 1] if t_lo is not None else None)
            block, factor = out.ensemble, out.factor
            records.append(out.record)
            if out.rank_counts is not None and k >= sch.burn_in:
                hist = out.rank_counts if hist is None else hist + out.rank_counts
            states, params = self.control.unpack(self.dist.to_members(block))
            states = np.array(states)
        rec = {name: np.array([r.get(key, np.nan) ** power for r in records])
               for name, (key, power) in DIAGNOSTICS.items()}
        pmean = {p.name: np.array([r[f"parameter_{p.name}"] for r in records]) for p in self.control.parameters}
        after = slice(sch.burn_in, sch.n_cycles)
        averages = {k: float(np.mean(v[after])) for k, v in rec.items() if not np.all(np.isnan(v[after]))}
        if "rmse_a" in averages:
            averages["spread_skill_a"] = averages["spread_a"] / averages["rmse_a"]
        result = CycleResult(rec, averages, hist, pmean, self.control.pack(states, params) if mine else None,
                             list(mine), records=records)
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
               observations: LinearObservations, seed: int | Sequence[int] | Streams,
               spinup_cycles: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A twin experiment's truth at ``t0`` and each observation time, and its synthetic observations (the nature
    run of every campaign, filter or 4D-Var, is this function: :func:`twin.campaign.steps.init_experiment`,
    :func:`twin.campaign.variational.init`).

    The observation noise comes from the stream ``(seeds, TRUTH, TRUTH_OBSERVATIONS)`` (:mod:`twin.core.streams`).
    Runs on every rank identically, for states small enough to hold everywhere. ``spinup_cycles`` windows are run
    first (and discarded) so the truth starts on the attractor.
    """
    rng = Streams.of(seed).rng(Purpose.TRUTH, TRUTH_OBSERVATIONS)
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
