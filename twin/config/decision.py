"""YAML schema of the ``decision:`` section of a campaign: what to predict, the risk measure, the decision's
constraints and the guardrails of the assimilation (see :mod:`twin.decision`).

Example::

    decision:
      qois: [burden]
      horizon: 70                  # in the model's time units (days for the tumour model)
      credible_levels: [0.05, 0.5, 0.95]
      risk: {measure: cvar, level: 0.9}
      oncology:
        objective: burden          # or time_to_progression
        alpha_beta_normal: 3.0     # Gy
        max_bed_normal: 100.0      # Gy (30 x 2 Gy gives 100 Gy_3)
        max_fractions: 40
        dose: {min: 1.5, max: 5.0} # Gy per fraction
        fraction_options: [15, 20, 25, 30, 35, 40]
        per_week_options: [5]
        start_options: [7]
        chemotherapy: {start_options: [0, 14], doses: 2, interval: 7, amount: 1.0}
        standard: {fractions: 30, dose: 2.0, per_week: 5}
      structure:
        limit: {value: 250, units: MPa}
        threshold: 0.05
        scenario: {wind: 1.5}
      sensors: {count: 4, error_std: 1.0e-6}
      guardrails:
        significance: 0.001
        spread_skill: [0.5, 2.0]
        window: 10
        cusum: {k: 1.0, h: 6.0}
        policy: exclude            # or flag
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, model_validator

from twin.config.common import Quantity, Strict, at
from twin.core.units import compatible


class RiskSpec(Strict):
    """Risk measure of a QoI over the posterior: the ``mean``, or the superquantile ``cvar`` at ``level``."""

    measure: Literal["mean", "cvar"] = "mean"
    level: float = Field(default=0.9, ge=0.0, lt=1.0)


class DoseRange(Strict):
    """Dose per fraction bounds (Gy)."""

    min: float = Field(default=1.0, gt=0)
    max: float = Field(default=20.0, gt=0)

    @model_validator(mode="after")
    def _order(self):
        if not self.max >= self.min:
            raise ValueError(f"dose range needs max >= min, got min={self.min}, max={self.max}")
        return self


class ChemoSpec(Strict):
    """Chemotherapy timing options: first dose ``start_options`` days after the first fraction, ``doses`` doses of
    ``amount`` every ``interval`` days."""

    start_options: list[float] = Field(min_length=1)
    doses: int = Field(default=1, ge=1, le=100)
    interval: float = Field(default=7.0, gt=0)
    amount: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _finite(self):
        if any(not math.isfinite(s) or s < 0 for s in self.start_options):
            raise ValueError(at("start_options") + "chemotherapy start options must be finite and >= 0 days")
        return self


class StandardRegimenSpec(Strict):
    """The standard of care used as the virtual control."""

    fractions: int = Field(default=30, ge=1, le=1000)
    dose: float = Field(default=2.0, gt=0)
    per_week: int = Field(default=5, ge=1, le=7)


class OncologyConfig(Strict):
    """Constraints and objective of the radiotherapy/chemotherapy choice (doses in Gy, times in days)."""

    objective: Literal["burden", "time_to_progression"] = "burden"
    alpha_beta_normal: float = Field(default=3.0, gt=0)
    max_bed_normal: float = Field(default=100.0, gt=0)
    min_fractions: int = Field(default=1, ge=1, le=1000)
    max_fractions: int = Field(default=40, ge=1, le=1000)
    dose: DoseRange = Field(default_factory=DoseRange)
    fraction_options: list[int] = Field(default_factory=lambda: [10, 15, 20, 25, 30, 35, 40], min_length=1)
    per_week_options: list[int] = Field(default_factory=lambda: [5], min_length=1)
    start_options: list[float] = Field(default_factory=lambda: [0.0], min_length=1)
    chemotherapy: ChemoSpec | None = None
    standard: StandardRegimenSpec = Field(default_factory=StandardRegimenSpec)

    @model_validator(mode="after")
    def _consistent(self):
        if self.max_fractions < self.min_fractions:
            raise ValueError(at("max_fractions") + f"max_fractions ({self.max_fractions}) < min_fractions "
                                                   f"({self.min_fractions})")
        bad = [n for n in self.fraction_options if not self.min_fractions <= n <= self.max_fractions]
        if bad:
            raise ValueError(at("fraction_options") + f"options {bad} lie outside [min_fractions, max_fractions] = "
                                                      f"[{self.min_fractions}, {self.max_fractions}]")
        if any(not 1 <= w <= 7 for w in self.per_week_options):
            raise ValueError(at("per_week_options") + "fractions per week must lie in 1..7")
        if any(not math.isfinite(s) or s < 0 for s in self.start_options):
            raise ValueError(at("start_options") + "start days must be finite and >= 0")
        return self

    @property
    def min_dose(self) -> float:
        return self.dose.min

    @property
    def max_dose(self) -> float:
        return self.dose.max


class StructureDecisionSpec(Strict):
    """Stress ``limit`` (a pressure), the exceedance probability ``threshold`` above which inspection is
    recommended, the load ``scenario`` (scale factor per load case), the structure ``component`` of a coupled
    campaign and the number of ``random_placements`` the sensor-placement study compares the greedy choice with."""

    limit: Quantity
    threshold: float = Field(default=0.05, gt=0, le=1)
    scenario: dict[str, float] = Field(default_factory=dict)
    #: the structure component of a coupled campaign (``None``: the campaign's single model)
    component: str | None = None
    #: random gauge layouts per sensor count in the placement study (``decision.sensors``), the greedy baseline
    random_placements: int = Field(default=200, ge=1, le=100_000)

    @model_validator(mode="after")
    def _units(self):
        if not compatible(self.limit.units, "Pa"):
            raise ValueError(at("limit", "units") + f"stress limit units {self.limit.units!r} are not a pressure")
        if not self.limit.value > 0:
            raise ValueError(at("limit", "value") + "the stress limit must be positive")
        return self


class SensorDesignSpec(Strict):
    """Sensor placement: ``count`` sensors from the candidates, each with error ``error_std`` (observation units)."""

    count: int = Field(ge=1, le=10_000)
    error_std: float = Field(gt=0)
    candidates: list[list[float]] | None = None


class CusumSpec(Strict):
    """Two-sided CUSUM of standardised innovations: reference ``k`` and decision interval ``h`` (in standard
    deviations)."""

    k: float = Field(default=1.0, ge=0)
    h: float = Field(default=6.0, gt=0)


class GuardrailsConfig(Strict):
    """Thresholds of the per-cycle checks (see :mod:`twin.decision.guardrails`) and the exclusion ``policy``."""

    significance: float = Field(default=0.001, gt=0, lt=1)
    spread_skill: list[float] = Field(default_factory=lambda: [0.5, 2.0], min_length=2, max_length=2)
    window: int = Field(default=10, ge=1, le=100_000)
    rank_significance: float = Field(default=0.001, gt=0, lt=1)
    rank_bins: int = Field(default=10, ge=2, le=10_000)
    cusum: CusumSpec = Field(default_factory=CusumSpec)
    warmup: int = Field(default=0, ge=0, le=1_000_000)
    policy: Literal["flag", "exclude"] = "flag"

    @model_validator(mode="after")
    def _bounds(self):
        lo, hi = self.spread_skill
        if not 0 < lo < 1 < hi:
            raise ValueError(at("spread_skill") + f"spread_skill bounds must satisfy 0 < low < 1 < high, got "
                                                  f"{self.spread_skill}")
        return self

    @property
    def cusum_k(self) -> float:
        return self.cusum.k

    @property
    def cusum_h(self) -> float:
        return self.cusum.h


class DecisionConfig(Strict):
    """The ``decision:`` section: QoIs to predict with their credible levels, horizon (model time units), risk
    measure, and the optional oncology, structure, sensor-design and guardrail subsections."""

    qois: list[str] = Field(default_factory=list)
    horizon: float = Field(gt=0)
    credible_levels: list[float] = Field(default_factory=lambda: [0.05, 0.5, 0.95], min_length=1)
    exceedance_limits: dict[str, float] = Field(default_factory=dict)
    risk: RiskSpec = Field(default_factory=RiskSpec)
    oncology: OncologyConfig | None = None
    structure: StructureDecisionSpec | None = None
    sensors: SensorDesignSpec | None = None
    guardrails: GuardrailsConfig | None = None

    @model_validator(mode="after")
    def _levels(self):
        if any(not 0 < a < 1 for a in self.credible_levels):
            raise ValueError(at("credible_levels") + f"credible levels must lie in (0, 1), got {self.credible_levels}")
        if sorted(self.credible_levels) != self.credible_levels:
            raise ValueError(at("credible_levels") + "credible levels must be increasing")
        unknown = [k for k in self.exceedance_limits if self.qois and k not in self.qois]
        if unknown:
            raise ValueError(at("exceedance_limits") + f"limits for {unknown}, which are not among qois {self.qois}")
        return self


__all__ = ["DecisionConfig", "OncologyConfig", "StructureDecisionSpec", "SensorDesignSpec", "GuardrailsConfig",
           "RiskSpec", "ChemoSpec", "StandardRegimenSpec"]
