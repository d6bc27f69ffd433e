"""Maintenance decisions for a structural twin: probability that the peak stress exceeds a limit within a horizon
under a load scenario, an inspection recommendation, and strain-gauge placement for that decision.

Symbols: ``sigma_vm`` the element von Mises stress (Pa) of the structure model
(:mod:`twin.kinds.structure.model`), ``M(t) = max_x sigma_vm(x, t)`` its maximum over the structure, ``T`` the
horizon (s), ``L`` the stress limit (Pa, e.g. a fatigue or yield limit divided by a safety factor). Over the posterior
members ``j`` (damage field, stiffness, load scales)::

    p_exceed = P( max_{t <= T} M(t) > L ) ~ (1/N) #{ j : max_t M_j(t) > L }

and inspection is recommended when ``p_exceed >= threshold`` (a probability set by the operator's risk appetite).
The load scenario multiplies the model's named load cases (``load_<name>`` parameters) by given factors, e.g. a
design storm or an overload test: the posterior samples of a load scale when it is estimated, its nominal value
otherwise. The Monte Carlo standard error of ``p_exceed``, ``sqrt(p (1 - p) / N)``, is
reported so that a decision close to the threshold can ask for more members.

Sensor placement: the decision QoI is ``q = max_t M(t)``; the candidate gauges (points and directions) give
predicted strains ``Y_j = H u_j`` for each member, and :class:`twin.decision.sensors.PlacementProblem.from_ensemble`
builds the linearised-Gaussian criterion from the ensemble covariances of ``(Y, q)`` (ensemble sensitivity: the
regression of ``q`` on the strains replaces the gradient of the nonsmooth maximum). :func:`placement_study` compares
the greedy choice of ``1..K`` gauges with random layouts of as many (the sensor-placement curve of a report).

Campaigns (:mod:`twin.kinds.structure.decide`): :func:`maintenance_decision` is the exceedance analysis for a
campaign's model, which may be a coupled model whose structure component is named (:func:`peak_stress`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
from mpi4py import MPI

from twin.core.errors import ModelError
from twin.core.log import get_logger
from twin.decision.prediction import (
    PosteriorEnsemble,
    QoIForecast,
    forecast_members,
    summarise,
)
from twin.decision.sensors import (
    Placement,
    PlacementProblem,
    greedy_placement,
    random_placement_variances,
)

log = get_logger("twin.kinds.structure.decision")


def max_von_mises(model, state, t: float) -> float:
    """``max_x sigma_vm`` (Pa) over all ranks of the model's communicator (collective)."""
    vm = model.von_mises(state)
    local = float(vm.max()) if vm.size else -np.inf
    return float(model.mesh.disp.comm_mpi().allreduce(local, op=MPI.MAX))


def load_scenario(scales: Mapping[str, float]):
    """A control that sets the scale factors of named load cases (``load_<name>``) of a structure model."""
    scales = dict(scales)

    def control(model) -> None:
        for name, factor in scales.items():
            key = name if name.startswith("load_") else f"load_{name}"
            if key not in model.parameters:
                known = sorted(k[5:] for k in model.parameters if k.startswith("load_"))
                raise ModelError(model.name, f"load scenario names load case '{name}', the model has {known}")
            model.set_parameter(key, float(factor))

    return control


@dataclass
class MaintenanceDecision:
    """Outcome of the exceedance analysis (stresses in Pa, times in the model's time units)."""

    limit: float
    threshold: float
    probability: float
    standard_error: float
    peak_stress: np.ndarray
    horizon: float
    scenario: dict[str, float] = field(default_factory=dict)
    forecast: QoIForecast | None = field(default=None, repr=False)

    @property
    def inspect(self) -> bool:
        """Whether inspection is recommended (``probability >= threshold``)."""
        return self.probability >= self.threshold

    def as_dict(self) -> dict[str, Any]:
        s = summarise(self.peak_stress, "peak_von_mises", "Pa", limits=[self.limit])
        return {"kind": "structure", "limit_Pa": self.limit, "threshold": self.threshold,
                "exceedance_probability": self.probability, "standard_error": self.standard_error,
                "recommend_inspection": self.inspect, "horizon": self.horizon, "scenario": self.scenario,
                "peak_stress": s.as_dict(), "peak_stress_samples": self.peak_stress.tolist(),
                "summary": (f"P(max von Mises > {self.limit / 1e6:.4g} MPa by t = {self.horizon:g} s) = "
                            f"{self.probability:.3f}"
                            f" +- {self.standard_error:.3f}: "
                            f"{'inspection recommended' if self.inspect else 'no inspection needed'} "
                            f"(threshold {self.threshold:g})")}


def stress_exceedance(model, ensemble: PosteriorEnsemble, times: Sequence[float], limit: float,
                      threshold: float = 0.1, scenario: Mapping[str, float] | None = None) -> MaintenanceDecision:
    """Probability that the peak von Mises stress exceeds ``limit`` at some output time up to the horizon, under
    ``scenario`` (load-case scale factors), and the inspection recommendation. Collective.

    Raises
    ------
    ModelError
        For a non-positive limit or a threshold outside (0, 1].
    """
    if not (np.isfinite(limit) and limit > 0):
        raise ModelError(model.name, f"stress limit must be positive, got {limit}")
    if not 0 < threshold <= 1:
        raise ModelError(model.name, f"inspection threshold must be a probability in (0, 1], got {threshold}")
    # The scenario scales the loads: a posterior load scale (estimated parameter) member by member, otherwise the
    # model's nominal scale.
    params = dict(ensemble.parameters)
    nominal = {}
    for name, factor in (scenario or {}).items():
        key = name if name.startswith("load_") else f"load_{name}"
        if key in params:
            params[key] = params[key] * float(factor)
        elif key in model.parameters:
            nominal[key] = float(model.parameters[key].value) * float(factor)
        else:
            known = sorted(k[5:] for k in model.parameters if k.startswith("load_"))
            raise ModelError(model.name, f"load scenario names load case '{name}', the model has {known}")
    scaled = PosteriorEnsemble(ensemble.states, params, ensemble.time)
    fc = forecast_members(model, scaled, times, control=load_scenario(nominal), qois=[],
                          extra={"max_von_mises": max_von_mises})
    fc.units["max_von_mises"] = "Pa"
    peak = fc.running_max("max_von_mises")[:, -1]
    p = float(np.mean(peak > limit))
    se = math.sqrt(max(p * (1 - p), 1.0 / ensemble.size) / ensemble.size)
    dec = MaintenanceDecision(float(limit), float(threshold), p, se, peak, float(times[-1]), dict(scenario or {}), fc)
    log.info("%s: %s", model.name, dec.as_dict()["summary"])
    return dec


def gauge_placement(model, ensemble: PosteriorEnsemble, points, angles, error_std, K: int, t: float,
                    scenario: Mapping[str, float] | None = None) -> tuple[Placement, PlacementProblem]:
    """Choose ``K`` strain gauges among candidate ``points`` (m) and ``angles`` (rad) that are most informative about
    the peak stress at time ``t`` under ``scenario`` (static or dynamic structure model). Collective.

    Returns the greedy placement and the placement problem (to compare other placements with).
    """
    from twin.kinds.structure.gauges import strain_gauge_matrix

    H = strain_gauge_matrix(model.grid, points, angles)
    if scenario:
        load_scenario(scenario)(model)
    vec = model.create_state()
    Y, q = [], []
    try:
        for j in range(ensemble.size):
            for name, v in ensemble.parameters.items():
                model.set_parameter(name, v[j] if v.ndim > 1 else float(v[j]))
            model.grid.set_global(ensemble.states[j], vec)
            model.advance(vec, ensemble.time, t)
            Y.append(H @ model.grid.allgather(vec).ravel())
            q.append(max_von_mises(model, vec, t))
    finally:
        vec.destroy()
    problem = PlacementProblem.from_ensemble(np.array(Y).T, np.array(q), error_std)
    return greedy_placement(problem, K), problem


# -- campaign decisions (single structure model, or the structure component of a coupled model) ------------------
def peak_stress(component: str | None = None):
    """The extra QoI ``f(model, state, t) = max_x sigma_vm`` for :func:`~twin.decision.prediction.forecast_members`:
    of the model itself (``component=None``), or of component ``component`` of a coupled campaign model
    (:class:`twin.campaign.state.CoupledState`, whose ``component_state`` extracts it). Collective."""

    def f(model, state, t: float) -> float:
        if component is None:
            return max_von_mises(model, state, t)
        x = model.component_state(state, component)
        try:
            return max_von_mises(model.models[component], x, t)
        finally:
            x.destroy()

    return f


def _set_each(model, values: dict[str, Any]) -> None:
    for name, value in values.items():
        model.set_parameter(name, value)


def maintenance_decision(model, ensemble: PosteriorEnsemble, times: Sequence[float], limit: float,
                         threshold: float = 0.05, component: str | None = None,
                         set_parameters: Callable[[Any, dict[str, Any]], None] | None = None) -> MaintenanceDecision:
    """:func:`stress_exceedance` without a load scenario for a campaign model: the posterior members forecast
    through ``times`` (with every coupled component, e.g. the wind that keeps loading the structure) and the peak
    stress of the structure ``component`` (see :func:`peak_stress`). Collective.

    ``set_parameters(model, {name: value})`` gives the model one member's parameters (whole fields in natural
    order); the default, :meth:`Model.set_parameter`, takes whole fields on one rank only. The members are run here
    rather than by :func:`~twin.decision.prediction.forecast_members` because the structure's field parameters do
    not live on its state grid (and a coupled model's not on its grid at all).
    """
    if not (np.isfinite(limit) and limit > 0):
        raise ModelError(model.name, f"stress limit must be positive, got {limit}")
    if not 0 < threshold <= 1:
        raise ModelError(model.name, f"inspection threshold must be a probability in (0, 1], got {threshold}")
    times = np.asarray(times, dtype=float)
    if times.ndim != 1 or times.size == 0 or np.any(np.diff(times) < 0) or times[0] < ensemble.time:
        raise ModelError(model.name, f"forecast times must be increasing and start at or after the posterior time "
                                     f"{ensemble.time:g}, got {times.tolist()}")
    setter = set_parameters or _set_each
    peak_of = peak_stress(component)
    values = np.full((ensemble.size, times.size), np.nan)
    vec = model.create_state()
    try:
        for j in range(ensemble.size):
            setter(model, {k: (v[j] if v.ndim > 1 else float(v[j])) for k, v in ensemble.parameters.items()})
            model.grid.set_global(ensemble.states[j], vec)
            t = ensemble.time
            for i, t_out in enumerate(times):
                model.advance(vec, t, float(t_out))
                t = float(t_out)
                values[j, i] = peak_of(model, vec, t)
    finally:
        vec.destroy()
    fc = QoIForecast(times, {"max_von_mises": values}, {"max_von_mises": "Pa"})
    peak = fc.running_max("max_von_mises")[:, -1]
    p = float(np.mean(peak > limit))
    se = math.sqrt(max(p * (1 - p), 1.0 / ensemble.size) / ensemble.size)
    dec = MaintenanceDecision(float(limit), float(threshold), p, se, peak, float(times[-1]), {}, fc)
    log.info("%s: %s", model.name, dec.as_dict()["summary"])
    return dec


def placement_study(problem: PlacementProblem, K: int, n_random: int, rng: np.random.Generator,
                    deployed: Sequence[int] = ()) -> dict[str, Any]:
    """Greedy against random placements of ``1..K`` sensors (``n_random`` random layouts per count), by the
    posterior standard deviation of the QoI they leave (QoI units); ``deployed``: candidate indices of the layout in
    service, for comparison. JSON-ready."""
    greedy = greedy_placement(problem, K)
    counts = list(range(0, K + 1))
    rand = [np.full(n_random, problem.var_qoi)] + [random_placement_variances(problem, k, n_random, rng)
                                                   for k in counts[1:]]
    sd = [np.sqrt(np.maximum(v, 0.0)) for v in rand]
    out = {"counts": counts, "prior_sd": math.sqrt(problem.var_qoi),
           "greedy_sd": np.sqrt(np.maximum(greedy.variance, 0.0)).tolist(),
           "greedy_indices": greedy.indices.tolist(), "greedy_information": greedy.information,
           "random_sd_median": [float(np.median(v)) for v in sd],
           "random_sd_q10": [float(np.quantile(v, 0.1)) for v in sd],
           "random_sd_q90": [float(np.quantile(v, 0.9)) for v in sd], "n_random": int(n_random)}
    if len(deployed):
        out["deployed_indices"] = [int(i) for i in deployed]
        out["deployed_sd"] = math.sqrt(max(problem.posterior_variance(list(deployed)), 0.0))
    return out
