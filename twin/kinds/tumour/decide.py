"""The tumour kind's part of a campaign's decision step: ``patient.nc`` after a calibration window, and the
``oncology`` decision (the optimised treatment plan against the standard regimen).

After a calibration window (ES-MDA, 4D-Var) of a tumour experiment, :func:`window_record` writes ``patient.nc``: per
visit the observed cellularity (each observed voxel value on the cells it averages, ``H^T y / H^T 1``), the true one
and the posterior mean and standard deviation; the proliferation field ``k(x)``: truth, posterior mean, standard
deviation and 5/95 % quantiles (sample quantiles); the burden and volume trajectories of every sample through the
window and the truth's at the visits; and the scalar parameter samples. The decision record then holds
``calibration`` (coverage of the true ``k`` by the 90 % band in the tumour region, cells whose true cellularity at
the last visit exceeds :data:`TUMOUR_REGION`; RMS error of ``log k`` there for the prior centre and the posterior
mean).

With ``decision.oncology`` (:func:`decide`) the plan chosen by :func:`twin.kinds.tumour.decision.optimise_treatment`
on the posterior members, the standard regimen's outcome and their paired comparison are added
(:meth:`~twin.kinds.tumour.decision.TreatmentDecision.as_dict`), and after a calibration window ``truth``: the true
patient's burden at the horizon under the chosen plan and under the standard regimen (what the virtual trial would
have shown).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from twin.campaign import layout
from twin.campaign.decide import whole_fields

#: Cellularity above which a cell belongs to the tumour region of the calibration summary.
TUMOUR_REGION = 0.1
#: The file of a tumour experiment's calibration maps (see the module docstring).
PATIENT_FILE = "patient.nc"


def decide(s, comm, model, ensemble, dcfg, record: dict[str, Any], window: dict[str, Any] | None) -> dict[str, Any]:
    """The ``oncology`` decision added to ``record`` (:class:`twin.core.kinds.DecisionType`). Collective."""
    treatment, decision = _treatment(model, ensemble, dcfg)
    fans = {**record.get("fans", {}), **treatment.get("fans", {})}
    record = {**record, **treatment, "fans": fans, "predictions": record.get("qois", {})}
    if window is not None and "true_state" in window:  # a twin experiment (measured visits have no truth)
        record["truth"] = _truth_outcome(model, window, decision, dcfg)
    return record


def window_record(s, comm, model, window, through: dict[str, Any]) -> dict[str, Any]:
    """``patient.nc`` of a tumour calibration experiment; returns the calibration summary and the truth at the last
    visit. Collective (the true QoIs); rank 0 writes."""
    return write_patient(s, comm, window, through)


def _treatment(model, ensemble, dcfg):
    """The optimised plan vs the standard regimen (tumour model)."""
    from twin.core.errors import ModelError
    from twin.kinds.tumour.decision import (
        TreatmentConstraints,
        TreatmentObjective,
        optimise_treatment,
        standard_regimen,
    )

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
    from twin.decision.prediction import PosteriorEnsemble
    from twin.kinds.tumour.decision import evaluate_regimen

    params = {k: np.asarray(v, dtype=float)[None, ...] for k, v in patient["true_parameters"].items()}
    truth = PosteriorEnsemble(patient["true_state"][None, :], whole_fields(model, params), patient["time"])
    chosen = evaluate_regimen(model, truth, decision.best.regimen, dcfg.horizon, decision.objective)
    standard = evaluate_regimen(model, truth, decision.standard.regimen, dcfg.horizon, decision.objective)
    b_chosen, b_standard = float(chosen.burden[0]), float(standard.burden[0])
    return {"burden_chosen": b_chosen, "burden_standard": b_standard, "burden_ratio": b_chosen / b_standard}


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
    visits = through["visits"]
    with reader(layout.observations_file(s.exp_dir), comm) as r:
        has_truth = "truth" in r.array_names
        if has_truth:
            H = s.observations.matrix
            truth, y, obs_times = r.read_array("truth"), r.read_array("observations"), r.read_array("times")
            true_params = r.meta.get("truth_parameters", {})
            rows = [int(np.argmin(np.abs(obs_times - t))) for t in visits]
            ys = [np.asarray(y[row - 1], dtype=float) for row in rows]
        else:  # measured visits (observation files): no truth; each visit's observations at their own times
            truth, true_params, rows = None, {}, []
            H = _visit_cells(s, r, grid)
            ys = _measured_per_visit(r, visits, H.shape[0])
    observed = np.full((visits.size, grid.size), np.nan)
    for v, yv in enumerate(ys):
        seen = np.isfinite(yv)
        w = np.asarray(H.T @ seen.astype(float)).ravel()
        back = np.asarray(H.T @ np.where(seen, yv, 0.0)).ravel()
        observed[v, w > 0] = back[w > 0] / w[w > 0]
    true_states = truth[rows] if has_truth else None
    cell = through["visit_states"] / theta
    # the tumour region: the true cellularity at the last visit above TUMOUR_REGION (without a truth: the posterior
    # mean's)
    region = (true_states[-1] / theta if has_truth else cell[:, -1].mean(axis=0)) > TUMOUR_REGION
    ds = xr.Dataset(coords={"visit": ("visit", visits, {"units": "day", "long_name": "imaging visit"}),
                            "y": ("y", grid.axis_coordinates(1), {"units": "mm"}),
                            "x": ("x", grid.axis_coordinates(0), {"units": "mm"}),
                            "time": ("time", through["times"], {"units": "day"}),
                            "member": ("member", np.arange(window.size))})
    vis = ("visit", "y", "x")
    ds["observed_cellularity"] = (vis, observed.reshape(-1, *shape), {"units": "1", "long_name": "imaged cellularity"})
    if has_truth:
        ds["true_cellularity"] = (vis, (true_states / theta).reshape(-1, *shape), {"units": "1"})
    ds["posterior_cellularity_mean"] = (vis, cell.mean(axis=0).reshape(-1, *shape), {"units": "1"})
    ds["posterior_cellularity_sd"] = (vis, cell.std(axis=0, ddof=1).reshape(-1, *shape) if window.size > 1
                                      else np.zeros((visits.size, *shape)), {"units": "1"})
    ds["tumour_region"] = (("y", "x"), region.reshape(shape).astype(np.int8),
                           {"long_name": f"{'true' if has_truth else 'posterior mean'} cellularity above "
                                         f"{TUMOUR_REGION:g} at the last visit"})
    calibration: dict[str, Any] = {"members": int(window.size), "tumour_cells": int(region.sum())}
    for name, samples in window.parameters.items():
        p = model.parameters[name]
        t = np.asarray(true_params.get(name, np.nan), dtype=float)
        if samples.ndim > 1:
            lo, hi = np.quantile(samples, (0.05, 0.95), axis=0)
            logs = np.log(np.maximum(samples, 1e-300))
            unit = {"units": p.units}
            if t.size == grid.size:
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
            calibration[name] = {"truth": float(t) if t.size == 1 and np.isfinite(t) else None,
                                 "mean": float(samples.mean()),
                                 "q05": float(lo), "q95": float(hi)}
    units = {"burden": "1", "volume": "mm^3"}
    for name, values in through["qois"].items():
        ds[name] = (("member", "time"), values, {"units": units.get(name, "1")})
    for name, values in (_true_qois(model, true_states) if has_truth else {}).items():
        ds[f"{name}_true"] = ("visit", values, {"units": units.get(name, "1"), "long_name": f"true {name}"})
    from twin.io.netcdf import global_attributes, record_checksum

    ds.attrs.update(global_attributes("patient", f"tumour calibration of experiment {s.name}", s.provenance()))
    ds.attrs["theta"] = theta
    if comm is None or comm.Get_rank() == 0:
        with atomic_output(s.exp_dir / PATIENT_FILE, private=s.cfg.campaign.sensitive) as tmp:
            ds.to_netcdf(tmp)
            record_checksum(tmp)
    if not has_truth:  # a real patient: nothing to compare the decision with
        return {"calibration": calibration, "time": float(visits[-1])}
    truth_p = {n: np.asarray(v, dtype=float).ravel() if np.ndim(v) else float(v) for n, v in true_params.items()
               if n in window.parameters}
    return {"calibration": calibration, "true_state": np.asarray(truth[rows[-1]], dtype=float),
            "true_parameters": truth_p, "time": float(visits[-1])}


def _visit_cells(s, r, grid):
    """For a campaign fed by measured visits: a matrix whose row ``i`` picks the cell of observation row ``i`` of an
    ``imaging_visits`` network (the cell holding its location; an ``imaging_visits`` site is a cell centre observing
    that cell's cellularity), zero for the rows of other networks; from ``observations.h5`` (reader ``r``) and the
    configuration, without building the operator."""
    import scipy.sparse as sp

    from twin.observations.networks import network_names

    networks = s.cfg.assimilation.observations
    spans = r.meta.get("networks", {})
    locations = np.atleast_2d(r.read_array("locations"))
    n_rows = locations.shape[0]
    picked = np.zeros(n_rows, dtype=bool)
    for net, name in zip(networks, network_names(networks)):
        if net.type == "imaging_visits" and name in spans:
            picked[spans[name][0]:spans[name][1]] = True
    lo = np.array([e[0] for e in grid.extent])
    ijk = np.clip(np.floor((locations - lo) / np.asarray(grid.spacing)).astype(np.int64), 0,
                  np.asarray(grid.shape) - 1)
    cell = np.ravel_multi_index(tuple(ijk[:, a] for a in reversed(range(grid.dim))), tuple(grid.shape[::-1]))
    rows = np.flatnonzero(picked)
    return sp.csr_matrix((np.ones(rows.size), (rows, cell[rows])), shape=(n_rows, grid.size))


def _measured_per_visit(r, visits: np.ndarray, n_rows: int) -> list[np.ndarray]:
    """The observations of a campaign fed by files (``observations.h5`` with ``rows`` and ``obs_times``, each at its
    own model time) gathered per visit: visit ``v`` holds those in ``(visits[v-1], visits[v]]``, the latest of each
    row of the operator (NaN where a row has none)."""
    values, rows, times = r.read_array("observations"), r.read_array("rows"), r.read_array("obs_times")
    out = []
    for v, t in enumerate(visits):
        lo = visits[v - 1] if v else -np.inf
        y = np.full(n_rows, np.nan)
        mine = np.flatnonzero((times > lo + 1e-9) & (times <= t + 1e-9))
        y[rows[mine]] = values[mine]  # in time order: the latest wins
        out.append(y)
    return out
