"""Choosing a radiotherapy and chemotherapy plan under the posterior of a tumour twin, and comparing it with the
standard regimen (an in-silico, virtual-control trial).

Decision variables: dose per fraction ``d`` (Gy), number of fractions ``n``, their timing (first day ``s`` after the
decision time and ``w`` fractions per week given on consecutive days, one per day), and the chemotherapy start
``c`` (days after the first fraction; doses of a fixed amount every ``chemo_interval`` days).

Constraints (declared in YAML, :class:`twin.config.decision.OncologyConfig`):

* normal-tissue biologically effective dose ``BED_normal = n d (1 + d / (alpha/beta)_normal) <= BED_max`` (Gy; the
  LQ model with the late-responding tissue ratio, typically 3 Gy; the standard 30 x 2 Gy gives 100 Gy_3);
* ``n_min <= n <= n_max``, ``d_min <= d <= d_max``; every fraction and every drug dose before the horizon.

Objective, under the posterior samples ``(x_j, p_j)`` of the twin (:class:`~twin.decision.prediction.PosteriorEnsemble`):
the risk (mean, or superquantile/CVaR at level ``alpha``) of the tumour burden ``B(T)`` at the horizon ``T``, or the
negative mean time to progression (first time ``B(t) >= factor B(t_0)``, censored at ``T``).

Method, and why it is not SLSQP or differential evolution: every evaluation is a PDE forecast of the whole posterior
ensemble, the variables ``n``, ``w``, ``s``, ``c`` are integers (days, fractions), and the objective has no
gradient with respect to them. The dose is eliminated exactly: the model's response is monotone in ``d`` (the LQ
survival fraction ``exp(-alpha (d + d^2/(alpha/beta)))`` decreases in ``d`` and nothing else depends on it), so for
given ``(n, w, s, c)`` the best admissible dose is the largest one, ``min(d_max, d_cap(n))`` with ``d_cap`` the root
of the BED constraint (rounded down to 0.01 Gy so the constraint holds strictly). What is left is a small discrete
set (tens of plans), which is enumerated: this finds the global optimum over the set, with no tuning and a fixed
cost, and every candidate's outcome is kept for the report. The members are forecast with the same samples for
every plan (common random numbers), so differences between plans are paired and not blurred by sampling noise.

Virtual control: the standard regimen (default 30 x 2 Gy, 5 fractions per week) is forecast on the same posterior
samples; :func:`compare` reports both and the paired probability that the chosen plan leaves less tumour.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from itertools import product
from typing import Any, Sequence

import numpy as np

from twin.core.errors import ModelError
from twin.core.log import get_logger
from twin.decision.prediction import (
    PosteriorEnsemble,
    QoIForecast,
    forecast_members,
    risk,
    summarise,
)

log = get_logger("twin.kinds.tumour.decision")


def bed(n: int, dose: float, alpha_beta: float) -> float:
    """Biologically effective dose ``n d (1 + d / (alpha/beta))`` (Gy)."""
    return float(n * dose * (1.0 + dose / alpha_beta))


def max_dose_for_bed(n: int, bed_max: float, alpha_beta: float) -> float:
    """The dose per fraction ``d`` with ``n d (1 + d/ab) = bed_max``: the positive root of ``d^2/ab + d - B/n``."""
    c = bed_max / n
    return float(0.5 * alpha_beta * (-1.0 + math.sqrt(1.0 + 4.0 * c / alpha_beta)))


@dataclass(frozen=True)
class Regimen:
    """A treatment plan relative to the decision time.

    Attributes
    ----------
    dose : float
        Dose per fraction (Gy).
    fractions : int
        Number of fractions.
    start : float
        Day of the first fraction after the decision time.
    per_week : int
        Fractions per week, given on consecutive days (5: Monday to Friday).
    chemo_start : float or None
        Day of the first drug dose after the first fraction (``None``: no chemotherapy).
    chemo_doses : int
        Number of drug doses, ``chemo_interval`` days apart.
    chemo_interval : float
    chemo_amount : float
        Amount of each drug dose (the plan's concentration units).
    name : str
    """

    dose: float
    fractions: int
    start: float = 0.0
    per_week: int = 5
    chemo_start: float | None = None
    chemo_doses: int = 0
    chemo_interval: float = 7.0
    chemo_amount: float = 1.0
    name: str = ""

    def fraction_days(self) -> np.ndarray:
        """Days of the fractions after the decision time."""
        i = np.arange(self.fractions)
        return self.start + 7.0 * (i // self.per_week) + (i % self.per_week)

    def chemo_days(self) -> np.ndarray:
        if self.chemo_start is None or self.chemo_doses == 0:
            return np.zeros(0)
        return self.start + self.chemo_start + self.chemo_interval * np.arange(self.chemo_doses)

    @property
    def end(self) -> float:
        """Day of the last treatment after the decision time."""
        days = np.concatenate([self.fraction_days(), self.chemo_days()])
        return float(days.max()) if days.size else self.start

    def plan(self, t0: float = 0.0):
        """The :class:`~twin.kinds.tumour.treatment.TreatmentPlan` with absolute times (days) from decision time
        ``t0``."""
        from twin.kinds.tumour.treatment import TreatmentPlan

        return TreatmentPlan.from_lists(t0 + self.fraction_days(), [self.dose], t0 + self.chemo_days(),
                                        [self.chemo_amount])

    def bed(self, alpha_beta: float) -> float:
        return bed(self.fractions, self.dose, alpha_beta)

    def label(self) -> str:
        """``30 x 2.00 Gy, 5/week starting at the decision`` (or ``... starting 7 days after the decision``): the
        start counts from the decision time (the last visit), not from the campaign's day 0, which the report's
        other days count from."""
        chemo = f", chemo day +{self.chemo_start:g} x{self.chemo_doses}" if self.chemo_start is not None else ""
        when = "at the decision" if self.start == 0 else f"{self.start:g} days after the decision"
        return (f"{self.name + ': ' if self.name else ''}{self.fractions} x {self.dose:.2f} Gy, {self.per_week}/week "
                f"starting {when}{chemo}")


@dataclass
class TreatmentConstraints:
    """The admissible plans (see the module docstring); doses in Gy, times in days after the decision time."""

    alpha_beta_normal: float = 3.0
    max_bed_normal: float = 100.0
    min_fractions: int = 1
    max_fractions: int = 40
    min_dose: float = 1.0
    max_dose: float = 20.0
    fraction_options: Sequence[int] = (10, 15, 20, 25, 30, 35, 40)
    per_week_options: Sequence[int] = (5,)
    start_options: Sequence[float] = (0.0,)
    chemo_start_options: Sequence[float | None] = (None,)
    chemo_doses: int = 0
    chemo_interval: float = 7.0
    chemo_amount: float = 1.0
    latest_end: float | None = None

    @classmethod
    def from_config(cls, cfg) -> "TreatmentConstraints":
        """From a :class:`twin.config.decision.OncologyConfig`."""
        ch = cfg.chemotherapy
        return cls(cfg.alpha_beta_normal, cfg.max_bed_normal, cfg.min_fractions, cfg.max_fractions,
                   cfg.min_dose, cfg.max_dose, tuple(cfg.fraction_options), tuple(cfg.per_week_options),
                   tuple(cfg.start_options), tuple(ch.start_options) if ch is not None else (None,),
                   ch.doses if ch is not None else 0, ch.interval if ch is not None else 7.0,
                   ch.amount if ch is not None else 1.0)

    def violations(self, r: Regimen, horizon: float | None = None) -> list[str]:
        """Every constraint ``r`` breaks (empty when admissible); ``horizon`` in days after the decision time."""
        out = []
        b = r.bed(self.alpha_beta_normal)
        if b > self.max_bed_normal * (1 + 1e-12):
            out.append(f"normal-tissue BED {b:.2f} Gy > {self.max_bed_normal:g} Gy")
        if not self.min_fractions <= r.fractions <= self.max_fractions:
            out.append(f"{r.fractions} fractions outside [{self.min_fractions}, {self.max_fractions}]")
        if not self.min_dose - 1e-12 <= r.dose <= self.max_dose + 1e-12:
            out.append(f"dose {r.dose:g} Gy outside [{self.min_dose:g}, {self.max_dose:g}] Gy")
        if not 1 <= r.per_week <= 7:
            out.append(f"{r.per_week} fractions per week is not in 1..7")
        last = self.latest_end if self.latest_end is not None else horizon
        if last is not None and r.end >= last:
            out.append(f"treatment ends on day {r.end:g}, not before day {last:g}")
        return out

    def candidates(self, horizon: float) -> list[Regimen]:
        """The admissible plans of the discrete set, each with the largest admissible dose."""
        out = []
        for n, w, s, c in product(self.fraction_options, self.per_week_options, self.start_options,
                                  self.chemo_start_options):
            d = math.floor(min(self.max_dose, max_dose_for_bed(n, self.max_bed_normal, self.alpha_beta_normal))
                           * 100.0) / 100.0
            r = Regimen(d, int(n), float(s), int(w), None if c is None else float(c),
                        self.chemo_doses if c is not None else 0, self.chemo_interval, self.chemo_amount)
            if not self.violations(r, horizon):
                out.append(r)
        return out


def standard_regimen(start: float = 0.0, fractions: int = 30, dose: float = 2.0, per_week: int = 5) -> Regimen:
    """The standard of care used as the virtual control (default 30 x 2 Gy, 5 fractions per week)."""
    return Regimen(dose, fractions, start, per_week, name="standard")


@dataclass
class RegimenOutcome:
    """The predicted outcome of a plan over the posterior members (burden in cells, times in days)."""

    regimen: Regimen
    burden: np.ndarray
    time_to_progression: np.ndarray
    objective: float
    forecast: QoIForecast | None = field(default=None, repr=False)

    horizon: float = float("inf")

    def censored_ttp(self) -> np.ndarray:
        """Time to progression censored at the horizon (days): ``min(ttp, horizon)``."""
        return np.minimum(self.time_to_progression, self.horizon)

    def summary(self, cvar_level: float = 0.9) -> dict[str, Any]:
        s = summarise(self.burden, "burden", "1", cvar_level=cvar_level)
        return {"regimen": self.regimen.label(), "objective": self.objective, "burden": s.as_dict(),
                "ttp_censored_mean": float(np.mean(self.censored_ttp())),
                "progressed_by_horizon": float(np.mean(np.isfinite(self.time_to_progression)))}


def progression_times(times: np.ndarray, burden: np.ndarray, baseline: np.ndarray, factor: float) -> np.ndarray:
    """First time each member's burden reaches ``factor * baseline`` (``inf`` if never).

    ``times`` (T,) are days after the decision time (when the burden is ``baseline``, shape (N,)), ``burden`` (N, T)
    the series; the crossing is located by linear interpolation between output times, as in
    :func:`twin.kinds.tumour.qoi.time_to_progression`.
    """
    target = factor * baseline
    out = np.full(burden.shape[0], np.inf)
    b_prev, t_prev = baseline.astype(float), 0.0
    for i, t in enumerate(times):
        hit = np.isinf(out) & (burden[:, i] >= target)
        rise = burden[hit, i] - b_prev[hit]
        safe = np.where(rise > 0, rise, 1.0)
        frac = np.where(rise > 0, (target[hit] - b_prev[hit]) / safe, 1.0)
        out[hit] = t_prev + np.clip(frac, 0.0, 1.0) * (t - t_prev)
        b_prev, t_prev = burden[:, i], float(t)
    return out


@dataclass
class TreatmentObjective:
    """What to minimise: ``kind`` ``"burden"`` (risk of the burden at the horizon) or ``"time_to_progression"``
    (minus the mean censored time to progression); ``measure`` ``"mean"`` or ``"cvar"`` at ``level``."""

    kind: str = "burden"
    measure: str = "mean"
    level: float = 0.9
    progression_factor: float | None = None

    def __post_init__(self):
        if self.kind not in ("burden", "time_to_progression"):
            raise ModelError("decision", f"treatment objective must be 'burden' or 'time_to_progression', got "
                                         f"{self.kind!r}")
        if self.measure not in ("mean", "cvar") or not 0 <= self.level < 1:
            raise ModelError("decision", f"risk measure must be 'mean' or 'cvar' with level in [0, 1), got "
                                         f"{self.measure!r} at {self.level}")


def evaluate_regimen(model, ensemble: PosteriorEnsemble, regimen: Regimen, horizon: float,
                     objective: TreatmentObjective | None = None, step: float = 1.0) -> RegimenOutcome:
    """Forecast every member under ``regimen`` from ``ensemble.time`` to ``ensemble.time + horizon`` (days) and
    evaluate the objective. Collective over the model's communicator."""
    objective = objective or TreatmentObjective()
    t0 = ensemble.time
    n = max(1, int(math.ceil(horizon / step - 1e-9)))
    times = t0 + np.linspace(horizon / n, horizon, n)

    def control(m):
        m.plan = regimen.plan(t0)

    fc = forecast_members(model, ensemble, times, control=control, qois=["burden"])
    burden = fc.values["burden"]
    baseline = _baselines(model, ensemble)
    factor = objective.progression_factor or getattr(model, "progression_factor", 2.0)
    ttp = progression_times(times - t0, burden, baseline, factor)
    if objective.kind == "burden":
        value = risk(burden[:, -1], objective.measure, objective.level)
    else:
        value = -float(np.mean(np.minimum(ttp, horizon)))
    return RegimenOutcome(regimen, burden[:, -1].copy(), ttp, float(value), fc, float(horizon))


def _baselines(model, ensemble: PosteriorEnsemble) -> np.ndarray:
    """Burden of each member at the decision time (collective)."""
    from twin.kinds.tumour.qoi import total_cells

    vec = model.create_state()
    try:
        out = []
        for j in range(ensemble.size):
            model.grid.set_global(ensemble.states[j], vec)
            out.append(total_cells(model.grid, vec))
        return np.array(out)
    finally:
        vec.destroy()


@dataclass
class TreatmentDecision:
    """The chosen plan, the standard regimen's outcome on the same posterior, and every candidate evaluated."""

    best: RegimenOutcome
    standard: RegimenOutcome
    candidates: list[RegimenOutcome]
    constraints: TreatmentConstraints
    horizon: float
    objective: TreatmentObjective

    def comparison(self) -> dict[str, Any]:
        return compare(self.best, self.standard, self.objective.level)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready record of the decision (for ``decision.json`` and the report)."""
        return {"kind": "oncology", "horizon_days": self.horizon, "objective": asdict(self.objective),
                "constraints": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self.constraints).items()},
                "chosen": {**asdict(self.best.regimen), "label": self.best.regimen.label(),
                           "bed_normal": self.best.regimen.bed(self.constraints.alpha_beta_normal)},
                "standard": {**asdict(self.standard.regimen), "label": self.standard.regimen.label(),
                             "bed_normal": self.standard.regimen.bed(self.constraints.alpha_beta_normal)},
                "comparison": self.comparison(),
                "candidates": [{"label": c.regimen.label(), "objective": c.objective} for c in self.candidates],
                "burden_samples": {"chosen": self.best.burden.tolist(), "standard": self.standard.burden.tolist()},
                "fans": {key: _fan(o) for key, o in (("chosen", self.best), ("standard", self.standard))
                         if o.forecast is not None},
                "summary": (f"chosen {self.best.regimen.label()}: mean burden at the horizon "
                            f"{np.mean(self.best.burden):.4g} vs {np.mean(self.standard.burden):.4g} with the "
                            f"standard regimen (ratio {np.mean(self.best.burden) / np.mean(self.standard.burden):.3f})")}


def _fan(outcome: RegimenOutcome) -> dict[str, Any]:
    """The burden fan chart of an outcome: times (days) and the 5/50/95 % quantiles over the members."""
    fc = outcome.forecast
    q = fc.fan("burden")
    return {"qoi": "burden", "units": "1", "long_name": fc.long_names.get("burden", ""),
            "times": fc.times.tolist(), "levels": [0.05, 0.5, 0.95],
            "quantiles": q.tolist()}


def compare(chosen: RegimenOutcome, standard: RegimenOutcome, level: float = 0.9) -> dict[str, Any]:
    """Virtual-control comparison of two plans forecast on the same posterior members (paired)."""
    a, b = chosen.burden, standard.burden
    return {"chosen": chosen.summary(level), "standard": standard.summary(level),
            "mean_burden_ratio": float(np.mean(a) / np.mean(b)),
            "cvar_burden_ratio": float(risk(a, "cvar", level) / risk(b, "cvar", level)),
            "probability_better": float(np.mean(a < b)),
            "ttp_censored_gain_days": float(np.mean(chosen.censored_ttp()) - np.mean(standard.censored_ttp()))}


def optimise_treatment(model, ensemble: PosteriorEnsemble, constraints: TreatmentConstraints, horizon: float,
                       objective: TreatmentObjective | None = None, standard: Regimen | None = None,
                       step: float = 1.0) -> TreatmentDecision:
    """Choose the plan minimising the objective over the admissible discrete set (see the module docstring).

    Raises
    ------
    ModelError
        If no plan of the set satisfies the constraints (names the constraints to relax).
    """
    objective = objective or TreatmentObjective()
    cands = constraints.candidates(horizon)
    if not cands:
        raise ModelError(model.name, f"no admissible treatment plan: every combination of fractions "
                                     f"{list(constraints.fraction_options)} breaks a constraint (BED cap "
                                     f"{constraints.max_bed_normal:g} Gy, doses [{constraints.min_dose:g}, "
                                     f"{constraints.max_dose:g}] Gy, end before day {horizon:g}); relax them")
    outcomes = [evaluate_regimen(model, ensemble, r, horizon, objective, step) for r in cands]
    best = min(outcomes, key=lambda o: o.objective)
    standard = standard or standard_regimen(start=float(constraints.start_options[0]))
    std = evaluate_regimen(model, ensemble, standard, horizon, objective, step)
    log.info("%s: best of %d plans: %s (objective %.4g; standard %.4g)", model.name, len(cands),
             best.regimen.label(), best.objective, std.objective)
    return TreatmentDecision(best, std, outcomes, constraints, horizon, objective)


def cohort_comparison(decisions: Sequence[TreatmentDecision]) -> dict[str, Any]:
    """Virtual-control comparison over a cohort of patients (one decision each): per patient and pooled."""
    rows = [d.comparison() for d in decisions]
    ratios = np.array([r["mean_burden_ratio"] for r in rows])
    return {"patients": rows, "mean_burden_ratio": float(np.mean(ratios)),
            "patients_better": int(np.sum(ratios < 1.0)), "n_patients": len(rows)}
