"""The decision step of a campaign (``decision:`` section): posterior QoI predictions and, for the tumour model with
an ``oncology`` subsection, the optimised treatment plan against the standard regimen.

The last analysis ensemble (checkpoint ``K``, live members only) is forecast over ``decision.horizon`` model time
units beyond the last analysis time ``t_K`` (:func:`twin.decision.prediction.forecast_members`), at output times on
multiples of the model step ``dt`` (about ten of them; advancing needs whole steps). For every QoI of
``decision.qois`` (all of the model's QoIs when the list is empty) the record holds the summary at the horizon (mean,
standard deviation, the quantiles at ``credible_levels``, the superquantile at ``risk.level`` and exceedance
probabilities of ``exceedance_limits``) and a 5/50/95 % fan over the output times. With ``decision.oncology`` the
plan chosen by :func:`twin.decision.oncology.optimise_treatment` on the same posterior members, the standard regimen's
outcome and their paired comparison are added (:meth:`~twin.decision.oncology.TreatmentDecision.as_dict`).

The record is written by rank 0 as ``<experiment>/decision.json`` (:func:`twin.decision.records.write_decision`),
which ``twin report`` shows. Every rank runs the forecasts (they are collective on the experiment's communicator).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from twin.campaign import layout
from twin.core.log import get_logger

log = get_logger("twin.campaign")

#: Fan levels of the report (its fan panels draw quantiles 0, 1, 2 as lower, median, upper).
FAN_LEVELS = (0.05, 0.5, 0.95)


def wants_decision(cfg) -> bool:
    d = getattr(cfg, "decision", None)
    return d is not None and (bool(d.qois) or d.oncology is not None)


def output_times(t0: float, horizon: float, dt: float | None, count: int = 10) -> np.ndarray:
    """About ``count`` increasing times in ``(t0, t0 + horizon]`` on multiples of ``dt`` (any times without one)."""
    if not dt:
        return t0 + horizon * np.arange(1, count + 1) / count
    steps = max(int(round(horizon / dt)), 1)
    k = np.unique(np.round(np.arange(1, count + 1) * steps / count).astype(int))
    return t0 + dt * k[k > 0]


def decide(s, comm) -> dict[str, Any] | None:
    """Compute the decision record of experiment ``s`` (a :class:`twin.campaign.steps.Setup`) and write
    ``decision.json``; ``None`` when the campaign has no ``decision`` section with QoIs or a treatment. Collective."""
    from twin.decision.prediction import PosteriorEnsemble, forecast_members
    from twin.decision.records import write_decision

    cfg = s.cfg
    if not wants_decision(cfg):
        return None
    dcfg = cfg.decision
    model, K = s.get_model(), s.schedule.n_cycles
    ensemble = PosteriorEnsemble.from_checkpoint(layout.checkpoint_file(s.exp_dir, K), model.name, comm)
    record: dict[str, Any] = {"kind": "prediction", "members": int(ensemble.size), "time": float(ensemble.time),
                              "horizon": float(dcfg.horizon)}
    if dcfg.qois or dcfg.oncology is None:
        times = output_times(ensemble.time, dcfg.horizon, getattr(model, "dt", None))
        fc = forecast_members(model, ensemble, times, qois=list(dcfg.qois) or None)
        qois, fans, lines = {}, {}, []
        for name in fc.values:
            limits = [dcfg.exceedance_limits[name]] if name in dcfg.exceedance_limits else []
            summ = fc.summary(name, -1, dcfg.credible_levels, dcfg.risk.level, limits)
            qois[name] = summ.as_dict()
            fans[name] = {"qoi": name, "units": fc.units.get(name, "1"), "times": fc.times.tolist(),
                          "levels": list(FAN_LEVELS), "quantiles": fc.fan(name, FAN_LEVELS).tolist()}
            lo, hi = min(summ.quantiles.values()), max(summ.quantiles.values())
            lines.append(f"{name} at t={times[-1]:g}: mean {summ.mean:.4g}, [{lo:.4g}, {hi:.4g}] "
                         f"({dcfg.credible_levels[0]:g}-{dcfg.credible_levels[-1]:g} quantiles)")
        record.update(qois=qois, fans=fans, summary="; ".join(lines))
    if dcfg.oncology is not None:
        treatment = _treatment(model, ensemble, dcfg)
        fans = {**record.get("fans", {}), **treatment.get("fans", {})}
        record = {**record, **treatment, "fans": fans, "predictions": record.get("qois", {})}
    if comm is None or comm.Get_rank() == 0:
        write_decision(s.exp_dir, record)
    log.info("experiment %s: decision written (%s)", s.name, record.get("summary", record["kind"]))
    return record


def _treatment(model, ensemble, dcfg) -> dict[str, Any]:
    """The optimised plan vs the standard regimen (tumour model)."""
    from twin.core.errors import ModelError
    from twin.decision.oncology import (TreatmentConstraints, TreatmentObjective, optimise_treatment,
                                        standard_regimen)

    if getattr(model, "type_name", "") != "tumour":
        raise ModelError(model.name, f"decision.oncology needs the tumour model; this component is of type "
                                     f"'{getattr(model, 'type_name', '?')}'")
    onc = dcfg.oncology
    constraints = TreatmentConstraints.from_config(onc)
    objective = TreatmentObjective(onc.objective, dcfg.risk.measure, dcfg.risk.level)
    std = standard_regimen(start=float(onc.start_options[0]), fractions=onc.standard.fractions,
                           dose=onc.standard.dose, per_week=onc.standard.per_week)
    decision = optimise_treatment(model, ensemble, constraints, dcfg.horizon, objective, std)
    return decision.as_dict()
