"""YAML section of variational data assimilation (``assimilation:`` with ``method: 4dvar``).

Example::

    assimilation:
      method: 4dvar
      model: l96
      obs_interval: 0.2          # model time units between observation times
      window: 4                  # window length in observation intervals
      shift: 1                   # windows slide by this many intervals (default: window)
      cycles: 500
      initial_state: true        # the initial state of each window is a control
      background_covariance: {kind: diffusion, std: 0.5, length_scale: 3.0, order: 1}
      parameters:
        - {name: F, std: 0.1, bounds: [4.0, 12.0]}
      tao: {method: auto, gatol: 1.0e-5, max_iterations: 100, on_failure: raise, options: {tao_ls_type: armijo}}
      laplace: {rank: 20, oversampling: 10, samples: 200, level: 0.9}

In a campaign (``twin run``, :mod:`twin.campaign.variational`) the windows are the campaign's cycles and a twin
experiment observes the nature run with the network of ``observations`` (as in the ensemble section; ``seed`` seeds
the synthetic observations and the background perturbation)::

      observations: {component: 0, all_points: true, error_std: 1.0}
      seed: 3

Settings that would make the problem ill-posed are refused here, before anything runs: a covariance that is not
positive definite (non-positive standard deviation or length scale, a diffusion covariance without length scale), no
controls, a shift longer than the window. :meth:`VarAssimilationConfig.check_observation_times` refuses observation
times outside the assimilated span and windows without observations; the 4D-Var functional repeats those checks on the
actual observations of each window (:class:`~twin.core.errors.AssimilationError`).
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from twin.config.common import SolverOptions, Strict, _check_solver
from twin.config.observation_networks import networks_type
from twin.core.errors import AssimilationError


class BackgroundCovarianceSpec(Strict):
    """``B`` of the initial state: ``diagonal`` (``std`` only) or ``diffusion`` (``std``, ``length_scale``, ``order``).

    ``std`` is one number or one per state component (positive); ``length_scale`` is in the grid's length units.
    """

    kind: Literal["diagonal", "diffusion"]
    std: float | list[float]
    length_scale: float | None = None
    order: int = Field(1, ge=1, le=4)

    @field_validator("std")
    @classmethod
    def _positive(cls, v):
        values = np.atleast_1d(np.asarray(v, dtype=float))
        if values.size == 0 or not np.all(np.isfinite(values)) or np.any(values <= 0):
            raise ValueError(f"covariance is not positive definite: std must be positive and finite, got {v}")
        return v

    @model_validator(mode="after")
    def _length(self):
        if self.kind == "diffusion":
            if self.length_scale is None:
                raise ValueError("kind 'diffusion' needs a 'length_scale' (> 0, grid length units)")
            if not (np.isfinite(self.length_scale) and self.length_scale > 0):
                raise ValueError(f"covariance is not positive definite: length_scale must be positive, got "
                                 f"{self.length_scale}")
        elif self.length_scale is not None:
            raise ValueError("kind 'diagonal' takes no 'length_scale' (use kind 'diffusion' for correlations)")
        return self


class ParameterControlSpec(Strict):
    """An estimable parameter as a control: prior ``std`` in transformed space (default: from the model's prior),
    physical ``bounds`` (bound-constrained minimisation), ``transform`` override."""

    name: str = Field(min_length=1)
    std: float | None = Field(default=None, gt=0)
    bounds: list[float] | None = Field(default=None, min_length=2, max_length=2)
    transform: Literal["none", "log", "logit"] | None = None

    @model_validator(mode="after")
    def _order(self):
        if self.bounds is not None and not self.bounds[1] > self.bounds[0]:
            raise ValueError(f"bounds need high > low, got {self.bounds}")
        return self


class TaoSpec(Strict):
    """Minimiser settings: TAO ``method`` (``auto`` = L-BFGS, or its bound-constrained variant with bounds),
    tolerances on the gradient norm, iteration limits, what to do on non-convergence, and further PETSc options
    (without prefix, e.g. ``tao_ls_type: armijo``)."""

    method: Literal["auto", "lmvm", "blmvm", "cg", "bqnls", "nls"] = "auto"
    gatol: float = Field(1e-6, ge=0)
    grtol: float = Field(1e-10, ge=0)
    max_iterations: int = Field(200, ge=1, le=1_000_000)
    max_function_evaluations: int = Field(1000, ge=1, le=10_000_000)
    on_failure: Literal["raise", "warn"] = "raise"
    options: SolverOptions

    _check_options = field_validator("options")(classmethod(lambda cls, v: _check_solver(v)))


class LaplaceSpec(Strict):
    """Laplace posterior at the MAP point: low-rank Hessian of ``rank`` (+ ``oversampling``) directions, ``samples``
    posterior samples, credible ``level``."""

    rank: int = Field(20, ge=1, le=10_000)
    oversampling: int = Field(10, ge=0, le=10_000)
    samples: int = Field(200, ge=1, le=100_000)
    level: float = Field(0.9, gt=0, lt=1)
    seed: int = Field(0, ge=0)


class VarAssimilationConfig(Strict):
    """Strong-constraint 4D-Var, cycled (see :mod:`twin.assimilation.fourdvar_cycle` for the window scheme)."""

    method: Literal["4dvar"]
    model: str = Field(min_length=1)
    obs_interval: float = Field(gt=0)
    window: int = Field(ge=1, le=1_000_000)
    shift: int | None = Field(default=None, ge=1, le=1_000_000)
    cycles: int = Field(1, ge=1)
    initial_state: bool = True
    background_covariance: BackgroundCovarianceSpec | None = None
    parameters: list[ParameterControlSpec] = Field(default_factory=list)
    tao: TaoSpec = Field(default_factory=TaoSpec)
    laplace: LaplaceSpec | None = None
    seed: int = Field(0, ge=0)
    observations: networks_type() | None = None
    #: windows left out of the time-averaged scores of a twin experiment (``rmse_a`` ... in diagnostics.nc)
    burn_in: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _consistent(self):
        if self.burn_in >= self.cycles:
            raise ValueError(f"burn_in ({self.burn_in}) must be smaller than cycles ({self.cycles})")
        if self.shift is not None and self.shift > self.window:
            raise ValueError(f"shift ({self.shift}) must not exceed the window ({self.window} observation intervals)")
        if self.initial_state and self.background_covariance is None:
            raise ValueError("initial_state: true needs a 'background_covariance'")
        if not self.initial_state and not self.parameters:
            raise ValueError("no controls: set initial_state: true and/or list estimable 'parameters'")
        names = [p.name for p in self.parameters]
        if len(set(names)) != len(names):
            raise ValueError(f"parameters listed twice: {names}")
        return self

    @property
    def effective_shift(self) -> int:
        return self.window if self.shift is None else self.shift

    def window_bounds(self, k: int, t_start: float) -> tuple[float, float]:
        """``(t_s, t_e)`` of cycle ``k`` (same rule as :class:`~twin.assimilation.fourdvar_cycle.FourDVarCycle`)."""
        e = (k + 1) * self.effective_shift
        return t_start + max(0, e - self.window) * self.obs_interval, t_start + e * self.obs_interval

    def check_observation_times(self, times, t_start: float) -> None:
        """Refuse observation times outside the assimilated span and cycles whose new span has no observations.

        Raises
        ------
        AssimilationError
            Naming the first offending time or cycle.
        """
        t = np.sort(np.asarray(list(times), dtype=float))
        end = self.window_bounds(self.cycles - 1, t_start)[1]
        tol = 1e-9 * self.obs_interval
        outside = t[(t < t_start - tol) | (t > end + tol)]
        if outside.size:
            raise AssimilationError(f"4D-Var: observation time {outside[0]:g} lies outside the assimilated span "
                                    f"[{t_start:g}, {end:g}] ({self.cycles} cycles of {self.obs_interval:g} x "
                                    f"{self.effective_shift})")
        for k in range(self.cycles):
            ts, te = self.window_bounds(k, t_start)
            ta = te - self.effective_shift * self.obs_interval
            lo = ta - (2 * tol if k == 0 else -tol)
            if not np.any((t > lo) & (t <= te + tol)):
                raise AssimilationError(f"4D-Var: window {k} [{ts:g}, {te:g}] has no observations in "
                                        f"({ta:g}, {te:g}]; observe more often or lengthen the window")

    def check_campaign(self, cfg: Any) -> list[tuple[tuple, str]]:
        """Cross-section checks against a campaign: the model exists and some observation set observes it."""
        problems: list[tuple[tuple, str]] = []
        models = getattr(cfg, "models", {})
        if self.model not in models:
            problems.append((("assimilation", "model"), f"4D-Var model {self.model!r} is not one of the campaign's "
                             f"models {sorted(models)}"))
        observed = [o for o in getattr(cfg, "observations", []) if getattr(o, "model", None) == self.model]
        if not observed and self.observations is None:
            problems.append((("assimilation", "model"), f"no observation set observes model {self.model!r}: every "
                             "4D-Var window would be without observations"))
        timeline = getattr(cfg, "timeline", None)
        for i, obs in enumerate(observed):
            times = getattr(obs, "times", None)
            if times and timeline is not None:
                try:
                    self.check_observation_times(times, timeline.start)
                except AssimilationError as exc:
                    problems.append((("observations", i, "times"), str(exc)))
        return problems
