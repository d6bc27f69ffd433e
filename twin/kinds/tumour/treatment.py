"""Treatment of the tumour model: radiotherapy fractions (linear-quadratic model) and chemotherapy (drug decay).

Radiotherapy
    A fraction of dose ``d`` (Gy) delivered at time ``t_f`` (days) multiplies the cell density by the linear-quadratic
    survival fraction

        N(t_f+) = S(d) N(t_f-),    S(d) = exp(-alpha d - beta d^2),    beta = alpha / (alpha/beta),

    with ``alpha`` in 1/Gy and the ratio ``alpha/beta`` in Gy (10 Gy by default, the usual value for tumours).
    ``d`` may be a scalar or a dose field (an array broadcastable to the state).

Chemotherapy
    Each dose ``c_i`` (in the plan's concentration units, "1" by default: relative dose) given at ``t_i`` adds an
    exponentially decaying concentration,

        C(t) = sum_{t_i <= t} c_i exp(-ln 2 (t - t_i) / t_half),

    and the kill term of the PDE is ``-kappa C(t) N`` (kappa in 1/day per unit concentration).

Conventions
    The state at a treatment time is the state *before* the treatment: advancing over ``[t0, t1)`` applies the
    fractions with ``t0 <= t_f < t1`` at the start of the sub-interval that begins at ``t_f``. An imaging visit on the
    day of a fraction therefore sees the pre-treatment tumour, and a fraction on the boundary of two assimilation
    windows is applied exactly once. ``C(t)`` is right-continuous (a dose counts from the moment it is given).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

LN2 = float(np.log(2.0))


def lq_exponent(dose, alpha_beta: float):
    """``d + d^2 / (alpha/beta)``: the LQ log-kill per unit ``alpha`` (Gy), scalar or array like ``dose``."""
    dose = np.asarray(dose, dtype=float)
    return dose + dose * dose / alpha_beta


def survival_fraction(dose, alpha: float, alpha_beta: float):
    """LQ survival fraction ``exp(-alpha d - beta d^2)`` with ``beta = alpha / alpha_beta``."""
    return np.exp(-alpha * lq_exponent(dose, alpha_beta))


@dataclass(frozen=True)
class Fraction:
    """One radiotherapy fraction: ``time`` in days, ``dose`` in Gy."""

    time: float
    dose: float


@dataclass(frozen=True)
class DrugDose:
    """One chemotherapy administration: ``time`` in days, ``amount`` in concentration units."""

    time: float
    amount: float


@dataclass
class TreatmentPlan:
    """A treatment schedule: radiotherapy fractions and chemotherapy doses.

    Parameters
    ----------
    fractions : sequence of Fraction
    doses : sequence of DrugDose
    """

    fractions: Sequence[Fraction] = field(default_factory=tuple)
    doses: Sequence[DrugDose] = field(default_factory=tuple)

    def __post_init__(self):
        self.fractions = tuple(sorted(self.fractions, key=lambda f: f.time))
        self.doses = tuple(sorted(self.doses, key=lambda d: d.time))

    @classmethod
    def from_lists(cls, rt_times=(), rt_doses=(), chemo_times=(), chemo_doses=()) -> "TreatmentPlan":
        """Build from parallel lists; a single dose is used for every time."""
        rt_doses = np.broadcast_to(np.asarray(rt_doses if len(rt_doses) else [0.0], float), (len(rt_times),))
        chemo_doses = np.broadcast_to(np.asarray(chemo_doses if len(chemo_doses) else [0.0], float),
                                      (len(chemo_times),))
        return cls([Fraction(float(t), float(d)) for t, d in zip(rt_times, rt_doses)],
                   [DrugDose(float(t), float(c)) for t, c in zip(chemo_times, chemo_doses)])

    @property
    def has_chemo(self) -> bool:
        return len(self.doses) > 0

    def times(self) -> list[float]:
        """Every treatment time (fractions and drug doses), sorted."""
        return sorted({f.time for f in self.fractions} | {d.time for d in self.doses})

    def fractions_in(self, t0: float, t1: float) -> list[Fraction]:
        """Fractions applied while advancing over ``[t0, t1)``."""
        return [f for f in self.fractions if t0 <= f.time < t1]

    def breakpoints(self, t0: float, t1: float) -> list[float]:
        """``t0``, every treatment time strictly inside ``(t0, t1)``, and ``t1``: the TS segments of ``[t0, t1]``.

        Splitting at drug doses keeps the time integrator from stepping across the jump of ``C(t)``; splitting at
        fractions is where the LQ jump is applied.
        """
        inner = [t for t in self.times() if t0 < t < t1]
        return [t0, *inner, t1]

    def concentration(self, t: float, half_life: float, given_by: float | None = None) -> float:
        """Drug concentration ``C(t)`` (see the module docstring).

        ``given_by`` counts only the doses given at or before that time: inside a TS segment ``[ta, tb]`` the model
        passes ``ta`` so that evaluating at ``t = tb`` gives the left limit, not a dose given at ``tb``.
        """
        last = t if given_by is None else given_by
        c = 0.0
        for d in self.doses:
            if d.time <= last:
                c += d.amount * np.exp(-LN2 * (t - d.time) / half_life)
        return float(c)
