"""YAML section of ensemble data assimilation (``assimilation:`` with ``method: enkf | etkf | letkf | esmda``).

Example::

    assimilation:
      method: letkf
      N: 20
      seed: 42
      inflation: {multiplicative: 1.04}        # or rtps: 0.7, rtpp: 0.5, adaptive: true
      localisation: {radius: 7.3}              # Gaspari-Cohn half-width, in the grid's length units
      schedule: {every: 1, cycles: 2000, burn_in: 200}
      observations:
        component: 0
        points: [[0.0], [1.0], [2.0]]          # physical positions (interpolated); or
        # all_points: true                     # every grid point of the component
        error_std: 1.0

Everything that can be checked without the model is checked here; :func:`check_against_grid` checks the observation
positions against the model's domain. Both run before any forecast.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from twin.config.common import Strict
from twin.core.errors import ObservationError


class InflationSpec(Strict):
    """Prior multiplicative inflation (1 = none), posterior relaxation (RTPS or RTPP, in [0, 1]), adaptive."""

    multiplicative: float = 1.0
    rtps: float = Field(0.0, ge=0.0, le=1.0)
    rtpp: float = Field(0.0, ge=0.0, le=1.0)
    adaptive: bool = False

    @field_validator("multiplicative")
    @classmethod
    def _positive(cls, v: float) -> float:
        if not v > 0:
            raise ValueError(f"the multiplicative inflation factor must be positive (1 = none), got {v}")
        return v

    @model_validator(mode="after")
    def _one_relaxation(self):
        if self.rtps and self.rtpp:
            raise ValueError("choose one of rtps and rtpp, not both")
        return self


class LocalisationSpec(Strict):
    """Gaspari-Cohn observation localisation with half-width ``radius`` (influence vanishes beyond 2 * radius)."""

    radius: float
    taper: Literal["gaspari_cohn"] = "gaspari_cohn"

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


class ObservationsSpec(Strict):
    """Point observations of one state component: at ``points`` (physical positions) or at every grid point."""

    component: int = Field(0, ge=0)
    points: list[list[float]] | None = None
    all_points: bool = False
    error_std: float | list[float] = 1.0

    @field_validator("error_std")
    @classmethod
    def _positive(cls, v):
        values = v if isinstance(v, list) else [v]
        bad = [e for e in values if not e > 0]
        if bad or not values:
            raise ValueError(f"observation error standard deviations must be positive, got {bad or values}")
        return v

    @model_validator(mode="after")
    def _where(self):
        if (self.points is None) == (not self.all_points):
            raise ValueError("give either 'points' or 'all_points: true'")
        if self.points is not None:
            if not self.points:
                raise ValueError("'points' is empty")
            dims = {len(p) for p in self.points}
            if len(dims) != 1:
                raise ValueError(f"all points need the same number of coordinates, got {sorted(dims)}")
            if isinstance(self.error_std, list) and len(self.error_std) != len(self.points):
                raise ValueError(f"{len(self.error_std)} error_std values for {len(self.points)} points")
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
    observations: ObservationsSpec
    esmda_alphas: list[float] | None = None
    ranks_per_member: int = Field(1, ge=1)

    @field_validator("N")
    @classmethod
    def _ensemble_size(cls, v: int) -> int:
        if v < 2:
            raise ValueError(f"the ensemble size N must be at least 2 (anomalies need two members), got {v}")
        return v

    @model_validator(mode="after")
    def _method_needs(self):
        if self.method == "letkf" and self.localisation is None:
            raise ValueError("method 'letkf' needs 'localisation: {radius: ...}'")
        if self.esmda_alphas is not None:
            if self.method != "esmda":
                raise ValueError("'esmda_alphas' only applies to method 'esmda'")
            if any(not a > 0 for a in self.esmda_alphas) or not self.esmda_alphas:
                raise ValueError(f"ES-MDA coefficients must be positive, got {self.esmda_alphas}")
            total = sum(1.0 / a for a in self.esmda_alphas)
            if abs(total - 1.0) > 1e-8:
                raise ValueError(f"ES-MDA coefficients must satisfy sum(1/alpha) = 1, got {total:.6g}")
        return self


def check_against_grid(cfg: EnsembleAssimilationConfig, extent, dof: int) -> None:
    """Refuse observations outside the model domain or of a component the model does not have.

    Parameters
    ----------
    extent : sequence of (lo, hi)
        The model grid's box, PETSc axis order.
    dof : int
        State components per grid point.

    Raises
    ------
    ObservationError
    """
    obs = cfg.observations
    if obs.component >= dof:
        raise ObservationError(f"assimilation.observations.component: the model has {dof} state component(s), "
                               f"got component {obs.component}")
    if obs.points is None:
        return
    for i, p in enumerate(obs.points):
        if len(p) != len(extent):
            raise ObservationError(f"assimilation.observations.points[{i}]: {len(p)} coordinates for a "
                                   f"{len(extent)}-D domain")
        if any(not lo <= x <= hi for x, (lo, hi) in zip(p, extent)):
            raise ObservationError(f"assimilation.observations.points[{i}] = {p} lies outside the model domain "
                                   f"{[list(e) for e in extent]}")
