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

Calibration campaigns (ES-MDA, 4D-Var) pass ``window``: posterior samples ``(x_j(t_s), p_j)`` at the start of the
assimilation window and the observation times ``t_1 < .. < t_V`` (the imaging visits of a patient). Every sample is
then run through the window (the posterior "reanalysis": QoIs on a grid of about ``WINDOW_STEPS`` times per
observation interval, states at the visits) and the states at ``t_V`` are the posterior the decision starts from. For
the tumour model the experiment also gets ``patient.nc`` (:func:`write_patient`): per visit the observed cellularity
(each observed voxel value on the cells it averages, ``H^T y / H^T 1``), the true one and the posterior mean and
standard deviation; the proliferation field ``k(x)``: truth, posterior mean, standard deviation and 5/95 % quantiles
(sample quantiles); the burden and volume trajectories of every sample through the window and the truth's at the
visits; and the scalar parameter samples. The record then also holds ``calibration`` (coverage of the true ``k`` by
the 90 % band in the tumour region, cells whose true cellularity at the last visit exceeds ``TUMOUR_REGION``; RMS
error of ``log k`` there for the prior centre and the posterior mean) and ``truth`` (the true patient's burden at the
horizon under the chosen plan and under the standard regimen: what the virtual trial would have shown).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from twin.campaign import context as ctx
from twin.campaign import layout
from twin.core.log import get_logger

log = get_logger("twin.campaign")

#: Fan levels of the report (its fan panels draw quantiles 0, 1, 2 as lower, median, upper).
FAN_LEVELS = (0.05, 0.5, 0.95)
#: QoI output times per observation interval of the window reanalysis.
WINDOW_STEPS = 5
#: Cellularity above which a cell belongs to the tumour region of the calibration summary.
TUMOUR_REGION = 0.1
#: The file of a tumour experiment's calibration maps (see the module docstring).
PATIENT_FILE = "patient.nc"


def wants_decision(cfg) -> bool:
    d = getattr(cfg, "decision", None)
    return d is not None and (bool(d.qois) or d.oncology is not None or d.structure is not None)


def output_times(t0: float, horizon: float, dt: float | None, count: int = 10) -> np.ndarray:
    """About ``count`` increasing times in ``(t0, t0 + horizon]`` on multiples of ``dt`` (any times without one)."""
    if not dt:
        return t0 + horizon * np.arange(1, count + 1) / count
    steps = max(int(round(horizon / dt)), 1)
    k = np.unique(np.round(np.arange(1, count + 1) * steps / count).astype(int))
    return t0 + dt * k[k > 0]


def decide(s, comm, window=None, observation_times=None) -> dict[str, Any] | None:
    """Compute the decision record of experiment ``s`` (a :class:`twin.campaign.steps.Setup`) and write
    ``decision.json``; ``None`` when the campaign has no ``decision`` section with QoIs or a treatment. Collective.

    Parameters
    ----------
    window : PosteriorEnsemble, optional
        Posterior samples at the start of a calibration window (ES-MDA, 4D-Var); default: the analysis ensemble of
        the last checkpoint of a filter campaign.
    observation_times : sequence of float, optional
        With ``window``: the observation times of the window (model time units), increasing.
    """
    from twin.decision.prediction import PosteriorEnsemble, forecast_members
    from twin.decision.records import write_decision

    cfg = s.cfg
    if not wants_decision(cfg):
        return None
    dcfg = cfg.decision
    model = s.get_model()
    patient = None
    if window is None:
        K = s.schedule.n_cycles
        ensemble = PosteriorEnsemble.from_checkpoint(layout.checkpoint_file(s.exp_dir, K), model.name, comm)
    else:
        ensemble, through = reanalysis(model, window, observation_times)
        if getattr(model, "type_name", "") == "tumour":
            patient = write_patient(s, comm, window, through)
    record: dict[str, Any] = {"kind": "prediction", "members": int(ensemble.size), "time": float(ensemble.time),
                              "horizon": float(dcfg.horizon)}
    if patient is not None:
        record["calibration"] = patient["calibration"]
    if dcfg.qois or (dcfg.oncology is None and dcfg.structure is None):
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
        write_prediction(s, comm, fc)
    if dcfg.structure is not None:
        from twin.campaign.decide_structure import structure_record

        record["structure"] = structure_record(s, comm, model, ensemble, dcfg)
        record["summary"] = "; ".join(filter(None, [record.get("summary"),
                                                    record["structure"]["maintenance"]["summary"]]))
    if dcfg.oncology is not None:
        treatment, decision = _treatment(model, ensemble, dcfg)
        fans = {**record.get("fans", {}), **treatment.get("fans", {})}
        record = {**record, **treatment, "fans": fans, "predictions": record.get("qois", {})}
        if patient is not None:
            record["truth"] = _truth_outcome(model, patient, decision, dcfg)
    if comm is None or comm.Get_rank() == 0:
        write_decision(s.exp_dir, record)
    log.info("experiment %s: decision written (%s)", s.name, record.get("summary", record["kind"]))
    return record


PREDICTION_FILE = "prediction.nc"


def write_prediction(s, comm, fc) -> None:
    """``prediction.nc``: every posterior member's QoIs over the decision's horizon (``member``, ``time``), the
    forecast users came for (``forecast.nc`` ends with the assimilation), CF time in the model's encoding, units and
    provenance; rank 0 writes, atomically. Collective (the provenance)."""
    import xarray as xr

    from twin.campaign.steps import time_encoding
    from twin.io.atomic import atomic_output
    from twin.io.netcdf import global_attributes, record_checksum

    prov = s.provenance()  # collective: every rank, before rank 0 alone writes
    if comm is not None and comm.Get_rank() != 0:
        return
    time_units, scale = time_encoding(s.get_model())
    ds = xr.Dataset(coords={"member": ("member", np.arange(next(iter(fc.values.values())).shape[0])),
                            "time": ("time", np.asarray(fc.times, dtype=float) * scale,
                                     {"standard_name": "time", "units": time_units, "axis": "T",
                                      **({"calendar": "standard"} if " since " in time_units else {})})})
    for name, values in fc.values.items():
        ds[name] = (("member", "time"), np.asarray(values, dtype=float),
                    {"units": fc.units.get(name, "1"), "long_name": f"posterior forecast of {name}"})
    ds.attrs.update(global_attributes("prediction", f"posterior QoI forecast of experiment {s.name}", prov))
    with atomic_output(s.exp_dir / PREDICTION_FILE, private=s.cfg.campaign.sensitive) as tmp:
        ds.to_netcdf(tmp)
        record_checksum(tmp)


def _treatment(model, ensemble, dcfg):
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
    return decision.as_dict(), decision


def _truth_outcome(model, patient: dict[str, Any], decision, dcfg) -> dict[str, Any]:
    """The true patient's burden at the horizon under the chosen plan and the standard regimen (twin experiments)."""
    from twin.decision.oncology import evaluate_regimen
    from twin.decision.prediction import PosteriorEnsemble

    params = {k: np.asarray(v, dtype=float)[None, ...] for k, v in patient["true_parameters"].items()}
    truth = PosteriorEnsemble(patient["true_state"][None, :], _whole_fields(model, params), patient["time"])
    chosen = evaluate_regimen(model, truth, decision.best.regimen, dcfg.horizon, decision.objective)
    standard = evaluate_regimen(model, truth, decision.standard.regimen, dcfg.horizon, decision.objective)
    b_chosen, b_standard = float(chosen.burden[0]), float(standard.burden[0])
    return {"burden_chosen": b_chosen, "burden_standard": b_standard, "burden_ratio": b_chosen / b_standard}


def _whole_fields(model, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Field samples shaped ``(N, *grid.shape[::-1])`` on each field's own grid (``model.parameter_grid``: a coupled
    model's fields are not on its state grid): whole fields in natural C order, which the model takes on any number
    of ranks (a flat row would be read as this rank's owned block)."""
    return {k: (v.reshape(v.shape[0], *model.parameter_grid(k).shape[::-1]) if v.ndim > 1 else v)
            for k, v in params.items()}


def reanalysis(model, window, times):
    """Run every posterior sample of ``window`` through the observation ``times``. Collective.

    Returns the posterior at ``times[-1]`` (a :class:`~twin.decision.prediction.PosteriorEnsemble`) and a dict with
    ``times`` (the QoI output times), ``qois`` (``name -> (N, len(times))``) and ``visit_states`` (``(N, V, n)``:
    every sample's state at each observation time).
    """
    from twin.decision.prediction import PosteriorEnsemble

    visits = np.asarray(times, dtype=float)
    if visits.ndim != 1 or visits.size == 0 or np.any(np.diff(visits) <= 0) or visits[0] <= window.time:
        raise ValueError(f"observation times must increase after the window start {window.time:g}, got "
                         f"{visits.tolist()}")
    dt = getattr(model, "dt", None)
    edges = np.concatenate([[window.time], visits])
    grid_times = []
    for a, b in zip(edges[:-1], edges[1:]):
        inner = output_times(a, b - a, dt, WINDOW_STEPS)
        grid_times += [t for t in inner[:-1] if t < b - 1e-9 * max(1.0, abs(b))] + [b]
    grid_times = np.array(grid_times)
    is_visit = np.isin(grid_times, visits)
    N = window.size
    qois: dict[str, np.ndarray] = {}
    visit_states = np.empty((N, visits.size, window.states.shape[1]))
    vec = model.create_state()
    try:
        for j in range(N):
            ctx.set_member_parameters(model, {name: v[j] for name, v in window.parameters.items()})
            model.grid.set_global(window.states[j], vec)
            t, iv = window.time, 0
            for i, t_out in enumerate(grid_times):
                model.advance(vec, t, float(t_out))
                t = float(t_out)
                for name, q in model.qoi(vec, t).items():
                    qois.setdefault(name, np.full((N, grid_times.size), np.nan))[j, i] = q.value
                if is_visit[i]:
                    visit_states[j, iv] = model.grid.allgather(vec).ravel()
                    iv += 1
    finally:
        vec.destroy()
    end = PosteriorEnsemble(visit_states[:, -1].copy(), _whole_fields(model, window.parameters), float(visits[-1]))
    return end, {"times": grid_times, "qois": qois, "visit_states": visit_states, "visits": visits}


def _true_qois(model, states: np.ndarray) -> dict[str, np.ndarray]:
    vec = model.create_state()
    out: dict[str, list] = {}
    try:
        for x in states:
            model.grid.set_global(x, vec)
            for name, q in model.qoi(vec, 0.0).items():
                out.setdefault(name, []).append(q.value)
    finally:
        vec.destroy()
    return {k: np.array(v) for k, v in out.items()}


def write_patient(s, comm, window, through: dict[str, Any]) -> dict[str, Any]:
    """``patient.nc`` of a tumour calibration experiment (see the module docstring); returns the calibration
    summary and the truth at the last visit. Collective (the true QoIs); rank 0 writes."""
    import xarray as xr

    from twin.campaign.steps import reader
    from twin.io.atomic import atomic_output
    from twin.models.priors import prior_center

    model = s.get_model()
    grid = model.grid
    shape = tuple(grid.shape[::-1])
    theta = float(model.get_parameter("theta"))
    with reader(layout.observations_file(s.exp_dir), comm) as r:
        truth, y, obs_times = r.read_array("truth"), r.read_array("observations"), r.read_array("times")
        true_params = r.meta.get("truth_parameters", {})
    visits = through["visits"]
    rows = [int(np.argmin(np.abs(obs_times - t))) for t in visits]
    H = s.observations.matrix
    weight = np.asarray(H.T @ np.ones(H.shape[0])).ravel()
    observed = np.full((visits.size, grid.size), np.nan)
    for v, row in enumerate(rows):
        back = np.asarray(H.T @ np.asarray(y[row - 1], dtype=float)).ravel()
        observed[v, weight > 0] = back[weight > 0] / weight[weight > 0]
    true_states = truth[rows]
    cell = through["visit_states"] / theta
    region = (true_states[-1] / theta > TUMOUR_REGION)
    ds = xr.Dataset(coords={"visit": ("visit", visits, {"units": "day", "long_name": "imaging visit"}),
                            "y": ("y", grid.axis_coordinates(1), {"units": "mm"}),
                            "x": ("x", grid.axis_coordinates(0), {"units": "mm"}),
                            "time": ("time", through["times"], {"units": "day"}),
                            "member": ("member", np.arange(window.size))})
    vis = ("visit", "y", "x")
    ds["observed_cellularity"] = (vis, observed.reshape(-1, *shape), {"units": "1", "long_name": "imaged cellularity"})
    ds["true_cellularity"] = (vis, (true_states / theta).reshape(-1, *shape), {"units": "1"})
    ds["posterior_cellularity_mean"] = (vis, cell.mean(axis=0).reshape(-1, *shape), {"units": "1"})
    ds["posterior_cellularity_sd"] = (vis, cell.std(axis=0, ddof=1).reshape(-1, *shape) if window.size > 1
                                      else np.zeros((visits.size, *shape)), {"units": "1"})
    ds["tumour_region"] = (("y", "x"), region.reshape(shape).astype(np.int8),
                           {"long_name": f"true cellularity above {TUMOUR_REGION:g} at the last visit"})
    calibration: dict[str, Any] = {"members": int(window.size), "tumour_cells": int(region.sum())}
    for name, samples in window.parameters.items():
        p = model.parameters[name]
        t = np.asarray(true_params.get(name, np.nan), dtype=float)
        if samples.ndim > 1:
            lo, hi = np.quantile(samples, (0.05, 0.95), axis=0)
            logs = np.log(np.maximum(samples, 1e-300))
            unit = {"units": p.units}
            ds[f"{name}_true"] = (("y", "x"), t.reshape(shape), {**unit, "long_name": f"true {name}"})
            ds[f"{name}_mean"] = (("y", "x"), samples.mean(axis=0).reshape(shape),
                                  {**unit, "long_name": f"posterior mean of {name}"})
            ds[f"{name}_sd"] = (("y", "x"), samples.std(axis=0, ddof=1).reshape(shape) if window.size > 1
                                else np.zeros(shape), {**unit, "long_name": f"posterior standard deviation of {name}"})
            for q, values in (("05", lo), ("95", hi)):
                ds[f"{name}_q{q}"] = (("y", "x"), values.reshape(shape),
                                      {**unit, "long_name": f"posterior {int(q)} % quantile of {name}"})
            centre = prior_center(p.prior) if p.prior is not None else float(np.mean(t))
            if t.size == grid.size and region.any():
                inside = (t >= lo) & (t <= hi)
                calibration[name] = {
                    "coverage_90": float(np.mean(inside[region])),
                    "rmse_log_prior": float(np.sqrt(np.mean((np.log(t) - np.log(centre))[region] ** 2))),
                    "rmse_log_posterior": float(np.sqrt(np.mean((np.log(t) - logs.mean(axis=0))[region] ** 2))),
                    "sd_log_posterior": float(np.mean(logs.std(axis=0)[region]))}
        else:
            ds[f"{name}_samples"] = ("member", samples, {"truth": float(t) if t.size == 1 else np.nan, "units": p.units,
                                                          "long_name": f"posterior samples of {name}"})
            lo, hi = np.quantile(samples, (0.05, 0.95))
            calibration[name] = {"truth": float(t) if t.size == 1 else None, "mean": float(samples.mean()),
                                 "q05": float(lo), "q95": float(hi)}
    units = {"burden": "1", "volume": "mm^3"}
    for name, values in through["qois"].items():
        ds[name] = (("member", "time"), values, {"units": units.get(name, "1")})
    for name, values in _true_qois(model, true_states).items():
        ds[f"{name}_true"] = ("visit", values, {"units": units.get(name, "1"), "long_name": f"true {name}"})
    from twin.io.netcdf import global_attributes, record_checksum

    ds.attrs.update(global_attributes("patient", f"tumour calibration of experiment {s.name}", s.provenance()))
    ds.attrs["theta"] = theta
    if comm is None or comm.Get_rank() == 0:
        with atomic_output(s.exp_dir / PATIENT_FILE, private=s.cfg.campaign.sensitive) as tmp:
            ds.to_netcdf(tmp)
            record_checksum(tmp)
    truth_p = {n: np.asarray(v, dtype=float).ravel() if np.ndim(v) else float(v) for n, v in true_params.items()
               if n in window.parameters}
    return {"calibration": calibration, "true_state": np.asarray(truth[rows[-1]], dtype=float),
            "true_parameters": truth_p, "time": float(visits[-1])}
