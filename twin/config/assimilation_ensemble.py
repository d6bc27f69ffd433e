"""YAML section of ensemble data assimilation (``assimilation:`` with ``method: enkf | etkf | letkf | esmda``).

Example::

    assimilation:
      method: letkf
      N: 20
      seed: 42
      inflation: {multiplicative: 1.04}        # or rtps: 0.7, rtpp: 0.5, adaptive: true
      localisation: {radius: 7.3}              # Gaspari-Cohn half-width, in the grid's length units
      schedule: {every: 1, cycles: 2000, burn_in: 200}
      observations:                            # networks: see twin/config/observation_networks.py
        - {type: points, component: 0, points: [[0.0], [1.0], [2.0]], error_std: 1.0}
      background_std: 1.0                      # spread of the initial states (default: the mean error_std)

``background_std`` is one number for every entry of the state, or one per state variable (``{h: 0.03, u: 0.01}``)
or, in a coupled campaign, per component and variable (``{tumour: 2000, tissue.u_x: 1e-6}``: a component's name
stands for all its variables); a variable it does not name starts without noise, and 0 is no noise. Unset: the
mean ``error_std`` of the networks, and in a coupled campaign each component the mean of the networks that observe it
(``model:``), none when no network does (the networks' errors are in the observed component's units). A component whose state is recomputed from its inputs at
every step (a static solve, :attr:`twin.models.base.Model.prognostic` false) never gets noise: its state is no
initial condition (:func:`twin.campaign.context.background_spread`).

Everything that can be checked without the model is checked here; :func:`twin.observations.networks.build`
checks the networks against the model (positions inside the domain, variables it has). Both run before any forecast.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from twin.config.common import Strict, at
from twin.config.observation_networks import networks_type


class InflationSpec(Strict):
    """Prior multiplicative inflation (1 = none, never below: a factor below 1 shrinks the spread every cycle until
    the filter ignores the observations), posterior relaxation (RTPS or RTPP, in [0, 1]), adaptive;
    ``parameter_rtps``: an RTPS weight of the estimated parameters' entries of their own (instead of ``rtps``/
    ``rtpp``; a static parameter's spread otherwise collapses, :mod:`twin.assimilation.inflation`)."""

    multiplicative: float = 1.0
    rtps: float = Field(0.0, ge=0.0, le=1.0)
    rtpp: float = Field(0.0, ge=0.0, le=1.0)
    adaptive: bool = False
    parameter_rtps: float = Field(0.0, ge=0.0, le=1.0)

    @field_validator("multiplicative")
    @classmethod
    def _positive(cls, v: float) -> float:
        if not v >= 1:
            raise ValueError(f"the multiplicative inflation factor must be positive and at least 1 (1 = none), got "
                             f"{v}: a factor below 1 deflates the ensemble every cycle until its spread collapses and "
                             "the filter ignores the observations")
        return v

    @model_validator(mode="after")
    def _one_relaxation(self):
        if self.rtps and self.rtpp:
            raise ValueError("choose one of rtps and rtpp, not both")
        return self


class LocalisationSpec(Strict):
    """Gaspari-Cohn observation localisation with half-width ``radius`` (influence vanishes beyond 2 * radius), in
    the model grid's length units. In a coupled campaign every component is localised on its own grid, in its own
    length units: ``radius`` applies to each, ``component_radius`` sets it per component (``{mast: 1.5}``)."""

    radius: float
    component_radius: dict[str, float] = Field(default_factory=dict)
    taper: Literal["gaspari_cohn"] = "gaspari_cohn"

    @field_validator("component_radius")
    @classmethod
    def _positive_each(cls, v: dict[str, float]) -> dict[str, float]:
        for name, r in v.items():
            if not r > 0:
                raise ValueError(f"component_radius.{name}: the localisation radius must be positive, got {r}")
        return v

    @field_validator("radius")
    @classmethod
    def _positive(cls, v: float) -> float:
        if not v > 0:
            raise ValueError(f"the localisation radius must be positive (a radius of {v} would discard every "
                             "observation); give the Gaspari-Cohn half-width in the grid's length units")
        return v


class ScheduleSpec(Strict):
    """Observations every ``every`` model steps for ``cycles`` cycles; the first ``burn_in`` are left out of
    time averages."""

    every: int = Field(1, ge=1)
    cycles: int = Field(ge=1)
    burn_in: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _burn_in(self):
        if self.burn_in >= self.cycles:
            raise ValueError(f"burn_in ({self.burn_in}) must be smaller than cycles ({self.cycles})")
        return self


class EnsembleAssimilationConfig(Strict):
    """Ensemble data assimilation: method, ensemble size, inflation, localisation, seed, schedule, observations."""

    method: Literal["enkf", "etkf", "letkf", "esmda"]
    N: int
    inflation: InflationSpec = Field(default_factory=InflationSpec)
    localisation: LocalisationSpec | None = None
    rotate: bool = False
    seed: int = Field(0, ge=0)
    schedule: ScheduleSpec
    observations: networks_type()
    background_std: float | dict[str, float] | None = None
    esmda_alphas: list[float] | None = None
    #: the background check of each filter analysis: an observation whose innovation exceeds this many standard
    #: deviations of HBH^T + R is left out (counted in diagnostics.nc, listed in qc.jsonl); none: no check
    background_check: float | None = Field(default=None, gt=0)

    MOVED = {"ranks_per_member": "how a member runs is ensemble.ranks_per_member: move it there"}

    @field_validator("N")
    @classmethod
    def _ensemble_size(cls, v: int) -> int:
        if v < 2:
            raise ValueError(f"the ensemble size N must be at least 2 (anomalies need two members), got {v}")
        return v

    @field_validator("background_std")
    @classmethod
    def _spread(cls, v):
        values = v.values() if isinstance(v, dict) else ([] if v is None else [v])
        bad = [x for x in values if not (x >= 0 and x < float("inf"))]
        if bad:
            raise ValueError(f"background standard deviations must be finite and >= 0 (0: no noise), got {bad}")
        if isinstance(v, dict) and not v:
            raise ValueError("background_std is an empty mapping: give a number, or one per variable or component")
        return v

    def check_campaign(self, cfg: Any) -> list[tuple[tuple, str]]:
        """Cross-section checks against a campaign: ``localisation.component_radius`` and the components of a
        ``background_std`` mapping name coupled components."""
        coupling = getattr(cfg, "coupling", None)
        components = list(getattr(coupling, "components", None) or [])
        if isinstance(self.background_std, dict) and components:
            unknown = sorted({k.partition(".")[0] for k in self.background_std} - set(components))
            if unknown:
                return [(("assimilation", "background_std"), f"{unknown} are not coupled components; components are "
                         f"{components} (a key is a component or <component>.<variable>)")]
        if self.localisation is None or not self.localisation.component_radius:
            return []
        if not components:
            return [(("assimilation", "localisation", "component_radius"), "only for coupled campaigns (the model has "
                     "one grid; use localisation.radius)")]
        unknown = sorted(set(self.localisation.component_radius) - set(components))
        if unknown:
            return [(("assimilation", "localisation", "component_radius"), f"{unknown} are not coupled components; "
                     f"components are {components}")]
        return []

    @model_validator(mode="after")
    def _method_needs(self):
        if self.method == "letkf" and self.localisation is None:
            raise ValueError("method 'letkf' needs 'localisation: {radius: ...}'")
        if self.localisation is not None and self.method not in ("letkf", "esmda"):
            raise ValueError(f"'localisation' applies to methods letkf and esmda; {self.method} is a global filter "
                             "(use letkf to localise)")
        if self.esmda_alphas is not None:
            if self.method != "esmda":
                raise ValueError("'esmda_alphas' only applies to method 'esmda'")
            if any(not a > 0 for a in self.esmda_alphas) or not self.esmda_alphas:
                raise ValueError(f"ES-MDA coefficients must be positive, got {self.esmda_alphas}")
            total = sum(1.0 / a for a in self.esmda_alphas)
            if abs(total - 1.0) > 1e-8:
                raise ValueError(f"ES-MDA coefficients must satisfy sum(1/alpha) = 1, got {total:.6g}")
        if self.background_check is not None and self.method == "esmda":
            raise ValueError(at("background_check") + "the background check is part of the filters' cycle analysis "
                             "(etkf, enkf, letkf); ES-MDA has none")
        return self
