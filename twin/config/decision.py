"""YAML schema of the ``decision:`` section of a campaign: what to predict, the risk measure and the guardrails of
the assimilation (see :mod:`twin.decision`); the installed kinds add their own keys (the tumour kind's ``oncology``
treatment choice, the structure kind's maintenance decision and sensor design: :meth:`twin.core.kinds.TwinKind
.decision_types`).

Example::

    decision:
      qois: [burden]
      horizon: 70                  # in the model's time units (days for the tumour model)
      credible_levels: [0.05, 0.5, 0.95]
      exceedance_limits: {burden: 1.0e6}
      risk: {measure: cvar, level: 0.9}
      guardrails:
        significance: 0.001
        spread_skill: [0.5, 2.0]
        window: 10
        cusum: {k: 1.0, h: 6.0}
        policy: exclude            # or flag
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Literal

from pydantic import Field, create_model, model_validator

from twin.config.common import Strict, at


class RiskSpec(Strict):
    """Risk measure of a QoI over the posterior: the ``mean``, or the superquantile ``cvar`` at ``level``."""

    measure: Literal["mean", "cvar"] = "mean"
    level: float = Field(default=0.9, ge=0.0, lt=1.0)








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


class DecisionBase(Strict):
    """The general keys of the ``decision:`` section: QoIs to predict with their credible levels, horizon (model time
    units), risk measure and guardrails. :func:`decision_section_type` adds the kinds' keys."""

    qois: list[str] = Field(default_factory=list)
    horizon: float = Field(gt=0)
    credible_levels: list[float] = Field(default_factory=lambda: [0.05, 0.5, 0.95], min_length=1)
    exceedance_limits: dict[str, float] = Field(default_factory=dict)
    risk: RiskSpec = Field(default_factory=RiskSpec)
    guardrails: GuardrailsConfig | None = None

    @model_validator(mode="after")
    def _levels(self):
        if any(not 0 < a < 1 for a in self.credible_levels):
            raise ValueError(at("credible_levels") + f"credible levels must lie in (0, 1), got {self.credible_levels}")
        levels = self.credible_levels
        if any(b <= a for a, b in zip(levels, levels[1:])):  # [0.5, 0.5] gave a "0 % interval"
            raise ValueError(at("credible_levels") + f"credible levels must be increasing, each given once, got "
                                                     f"{levels}")
        twice = sorted({q for q in self.qois if self.qois.count(q) > 1})
        if twice:
            raise ValueError(at("qois") + f"{twice} listed more than once: list each QoI once")
        unknown = [k for k in self.exceedance_limits if k not in self.qois]
        if unknown and not self.qois:  # the limits of QoIs that are not predicted were ignored without a word
            raise ValueError(at("exceedance_limits") + f"limits for {unknown}, but qois lists no QoI to predict: add "
                                                       "them to qois")
        if unknown:
            raise ValueError(at("exceedance_limits") + f"limits for {unknown}, which are not among qois {self.qois}")
        return self

    def kind_sections(self) -> dict[str, Any]:
        """The kinds' subsections this campaign gives (``{key: section}``)."""
        from twin.core.kinds import decision_types

        return {key: getattr(self, key) for key in decision_types() if getattr(self, key, None) is not None}


@lru_cache(maxsize=1)
def decision_section_type() -> type:
    """``DecisionConfig``: :class:`DecisionBase` with an optional key per decision section of the installed kinds."""
    from twin.core.kinds import decision_types

    fields = {key: (d.config | None, None) for key, d in decision_types().items()}
    return create_model("DecisionConfig", __base__=DecisionBase, __module__=__name__, **fields)


__all__ = ["DecisionBase", "decision_section_type", "GuardrailsConfig", "RiskSpec"]
