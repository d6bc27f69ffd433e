"""Cycled 4D-Var: window after window, the analysis propagated to the next window's background.

Time is counted in observation intervals ``dt_obs`` from ``t_start`` (integers decide which window an observation
belongs to, not float comparisons alone). Cycle ``k = 0, 1, ...`` has a window of ``L`` intervals that ends at
``e_k = (k + 1) S`` and starts at ``s_k = max(0, e_k - L)``; it assimilates the observations of the newest ``S``
intervals, ``(e_k - S) dt_obs < t - t_start <= e_k dt_obs`` (and those at ``t_start`` in cycle 0), so every observation
is used once:

* ``S = L``: the classical scheme, consecutive windows (Courtier et al. 1994);
* ``S < L``: overlapping windows that slide by ``S`` intervals, each new observation constrained by a trajectory that
  is ``L`` intervals long (the "quasi-static" 4D-Var of Bocquet & Sakov 2013/2014, ``S = 1``, whose Lorenz-96 scores
  ``tests/verification`` reproduces).

The background of cycle ``k > 0`` is the analysed initial state of cycle ``k - 1`` (at ``s_{k-1}``) propagated by the
model to ``s_k``; the analysed parameters become the next cycle's prior mean (with the same prior spread). The analysis
reported for a cycle is the forecast of its analysed initial state to the window end ``e_k`` (the filter analysis).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Callable, Sequence

import numpy as np
from petsc4py import PETSc

from twin.assimilation.covariance import CovarianceOperator
from twin.assimilation.fourdvar import FourDVar, Observation
from twin.assimilation.tao import TaoSettings, minimise
from twin.assimilation.var_control import ParameterControl
from twin.core.errors import AssimilationError
from twin.core.log import get_logger
from twin.models.base import Model

log = get_logger(__name__)


@dataclass
class CycleResult:
    """One cycle of cycled 4D-Var.

    Attributes
    ----------
    index : int
    window : (float, float)
        ``(t_s, t_e)`` of the window.
    analysis : PETSc.Vec
        Analysis state at the window end (owned by the caller).
    parameters : dict
        Analysed scalar parameters (floats).
    n_obs : int
        Number of observation values assimilated.
    initial_value, value, gradient_norm : float
        ``J`` at the background and at the analysis, ``|grad J|`` at the analysis.
    iterations : int
    reason : str
        TAO's converged reason (``"NO_OBSERVATIONS"`` when the cycle only forecast).
    converged : bool
    """

    index: int
    window: tuple[float, float]
    analysis: PETSc.Vec
    parameters: dict[str, Any] = field(default_factory=dict)
    n_obs: int = 0
    initial_value: float = 0.0
    value: float = 0.0
    gradient_norm: float = 0.0
    iterations: int = 0
    reason: str = ""
    converged: bool = True


class FourDVarCycle:
    """Cycled strong-constraint 4D-Var (see the module docstring).

    Parameters
    ----------
    model : Model
    B : CovarianceOperator or None
        Static background covariance of the initial state of each window.
    obs_interval : float
        ``dt_obs``, model time units.
    window : int
        ``L``, window length in observation intervals (>= 1).
    shift : int, optional
        ``S``, intervals between consecutive windows, ``1 <= S <= L``; default ``L``.
    parameters : sequence of ParameterControl
        Estimable parameters (their backgrounds are updated cycle by cycle).
    settings : TaoSettings, optional
    name : str
    """

    def __init__(self, model: Model, B: CovarianceOperator | None, obs_interval: float, window: int,
                 shift: int | None = None, parameters: Sequence[ParameterControl] = (),
                 settings: TaoSettings | None = None, name: str = "fourdvar"):
        if not (np.isfinite(obs_interval) and obs_interval > 0):
            raise AssimilationError(f"cycled 4D-Var: obs_interval must be positive, got {obs_interval}")
        shift = window if shift is None else shift
        if int(window) != window or window < 1:
            raise AssimilationError(f"cycled 4D-Var: window must be a whole number >= 1 of observation intervals, "
                                    f"got {window}")
        if int(shift) != shift or not 1 <= shift <= window:
            raise AssimilationError(f"cycled 4D-Var: shift must be a whole number with 1 <= shift <= window "
                                    f"({window}), got {shift}")
        self.model, self.B = model, B
        self.dt_obs, self.L, self.S = float(obs_interval), int(window), int(shift)
        self.parameters = list(parameters)
        self.settings = settings or TaoSettings()
        self.name = name

    def window_of(self, k: int, t_start: float) -> tuple[float, float]:
        """``(t_s, t_e)`` of cycle ``k``."""
        e = (k + 1) * self.S
        return t_start + max(0, e - self.L) * self.dt_obs, t_start + e * self.dt_obs

    def run(self, background: PETSc.Vec, t_start: float, n_cycles: int,
            observations: Sequence[Observation] | Callable[[float, float], Sequence[Observation]],
            callback: Callable[[CycleResult], None] | None = None) -> list[CycleResult]:
        """Run ``n_cycles`` cycles from ``background`` (the state at ``t_start``).

        Parameters
        ----------
        observations : sequence of Observation, or callable ``(t_a, t_b) -> observations``
            All observations, or a function returning those with ``t_a < t <= t_b``.
        callback : callable, optional
            Called with each :class:`CycleResult` as soon as it is ready (e.g. to write diagnostics).
        """
        if n_cycles < 1:
            raise AssimilationError(f"cycled 4D-Var: n_cycles must be >= 1, got {n_cycles}")
        tol = 1e-9 * self.dt_obs
        if callable(observations):
            select = observations
        else:
            pool = list(observations)

            def select(ta, tb):
                return [o for o in pool if ta + tol < o.time <= tb + tol]

        xb = background.copy()
        ts_prev = float(t_start)
        params = list(self.parameters)
        results = []
        for k in range(n_cycles):
            ts, te = self.window_of(k, t_start)
            if ts > ts_prev:
                self.model.advance(xb, ts_prev, ts)
            ta = te - self.S * self.dt_obs
            obs = list(select(ta, te))
            if k == 0:
                obs = list(select(t_start - 2 * tol, t_start)) + obs
            result, xa0, params = self._cycle(k, (ts, te), xb, obs, params)
            xa0.copy(xb)
            xa0.destroy()
            ts_prev = ts
            results.append(result)
            if callback is not None:
                callback(result)
        xb.destroy()
        return results

    def _cycle(self, k: int, window: tuple[float, float], xb: PETSc.Vec, obs: list[Observation],
               params: list[ParameterControl]):
        ts, te = window
        if not obs:
            log.info("%s cycle %d [%g, %g]: no observations, forecast only", self.name, k, ts, te)
            xa = xb.copy()
            self.model.advance(xa, ts, te)
            return CycleResult(k, window, xa, reason="NO_OBSERVATIONS"), xb.copy(), params
        fn = FourDVar(self.model, (ts, te), obs, xb, self.B, params, name=self.name)
        try:
            res = minimise(fn, settings=self.settings)
            xa0 = fn.initial_state(res.control)
            xa = fn.forecast(res.control, te)
            values = fn.parameter_values(res.control)
            scalars = {n: v for n, v in values.items() if not isinstance(v, PETSc.Vec)}
            new_params = [replace(p, background=values[p.name]) for p in params]
            result = CycleResult(k, window, xa, scalars, sum(o.operator.n_obs for o in obs), res.initial_value,
                                 res.value, res.gradient_norm, res.iterations, res.reason, res.converged)
            res.control.destroy()
        finally:
            fn.destroy()
        log.info("%s cycle %d [%g, %g]: %d obs, J %.4g -> %.4g in %d iterations (%s)", self.name, k, ts, te,
                 result.n_obs, result.initial_value, result.value, result.iterations, result.reason)
        return result, xa0, new_params


def cycle_from_config(model: Model, cfg, name: str = "fourdvar") -> FourDVarCycle:
    """Build a :class:`FourDVarCycle` from a :class:`~twin.config.assimilation_var.VarAssimilationConfig`.

    The covariance's KSP options go under ``<name>_B_``, TAO's under ``<name>_``.
    """
    from twin.assimilation.covariance import covariance_from_settings

    B = None
    if cfg.initial_state:
        spec = cfg.background_covariance
        B = covariance_from_settings(model.grid, spec.kind, spec.std, spec.length_scale, spec.order,
                                     prefix=f"{name}_B_", name=f"{name}:B")
    params = [ParameterControl(p.name, std=p.std, transform=p.transform,
                               bounds=tuple(p.bounds) if p.bounds else None) for p in cfg.parameters]
    t = cfg.tao
    settings = TaoSettings(method=t.method, gatol=t.gatol, grtol=t.grtol, max_iterations=t.max_iterations,
                           max_function_evaluations=t.max_function_evaluations, prefix=f"{name}_",
                           on_failure=t.on_failure, options=dict(t.options))
    return FourDVarCycle(model, B, cfg.obs_interval, cfg.window, cfg.shift, params, settings, name=name)
