"""The decision step of a campaign (``decision:`` section): posterior QoI predictions, then what the kinds'
decision sections add (:class:`twin.core.kinds.DecisionType`: e.g. a treatment plan or a maintenance decision).

The last analysis ensemble (checkpoint ``K``, live members only) is forecast over ``decision.horizon`` model time
units beyond the last analysis time ``t_K`` (:func:`twin.decision.prediction.forecast_members`), at output times on
multiples of the model step ``dt`` (about ten of them; advancing needs whole steps). For every QoI of
``decision.qois`` (all of the model's QoIs when the list is empty and no kind's section is given) the record holds the
summary at the horizon (mean, standard deviation, the quantiles at ``credible_levels``, the superquantile at
``risk.level`` and exceedance probabilities of ``exceedance_limits``) and a 5/50/95 % fan over the output times; every
member's QoIs over the horizon go to ``prediction.nc``. Each decision section of a kind given in the campaign then
adds to the record (its ``decide`` hook, on the same posterior members).

The forecast fields users came for go to ``horizon.nc`` (:func:`write_horizon`): the posterior members' ensemble mean
and spread of every state field at :data:`HORIZON_SNAPSHOTS` of the output times, the last one the horizon, on the
fields' own coordinates, CF time with the campaign's reference date, ``forecast_reference_time`` (the last analysis)
and ``forecast_period``. The moments are accumulated member by member (two states per snapshot in memory). It is
written with the QoI forecast (on the same member runs, so a mean of a linear QoI equals the QoI of the mean field),
from a forecast of its own when the decision is a kind's alone (e.g. the structure's inspection), and left out with
``outputs.fields: false``.

The record is written by rank 0 as ``<experiment>/decision.json`` (:func:`twin.decision.records.write_decision`),
which ``twin report`` shows. Every rank runs the forecasts (they are collective on the experiment's communicator).

Calibration campaigns (ES-MDA, 4D-Var) pass ``window``: posterior samples ``(x_j(t_s), p_j)`` at the start of the
assimilation window and the observation times ``t_1 < .. < t_V`` (e.g. the imaging visits of a patient). Every sample
is then run through the window (the posterior "reanalysis", :func:`reanalysis`: QoIs on a grid of about
``WINDOW_STEPS`` times per observation interval, states at the visits) and the states at ``t_V`` are the posterior the
decision starts from. The kind of the model then writes what it keeps of the window
(:meth:`twin.core.kinds.TwinKind.window_record`); its ``calibration`` entry goes into the record.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from twin.campaign import context as ctx
from twin.campaign import layout
from twin.core.log import get_logger
from twin.core.units import duration_text
from twin.models import contract

log = get_logger("twin.campaign")

#: Fan levels of the report (its fan panels draw quantiles 0, 1, 2 as lower, median, upper).
FAN_LEVELS = (0.05, 0.5, 0.95)
#: QoI output times per observation interval of the window reanalysis.
WINDOW_STEPS = 5
#: Output times of the decision forecast whose field mean and spread ``horizon.nc`` keeps (the last: the horizon).
HORIZON_SNAPSHOTS = 4
#: The forecast fields over the decision's horizon (see the module docstring).
HORIZON_FILE = "horizon.nc"


def snapshot_indices(count: int, snapshots: int = HORIZON_SNAPSHOTS) -> list[int]:
    """Indices of ``snapshots`` of ``count`` output times, evenly spread and ending with the last."""
    n = max(1, min(int(snapshots), int(count)))
    return sorted({int(round((k + 1) * count / n)) - 1 for k in range(n)})


def wants_decision(cfg) -> bool:
    d = getattr(cfg, "decision", None)
    return d is not None and (bool(d.qois) or bool(d.kind_sections()))


def wants_horizon(cfg) -> bool:
    """Whether the decision step writes ``horizon.nc``: there is a decision and ``outputs.fields`` is on."""
    return wants_decision(cfg) and bool(getattr(getattr(cfg, "outputs", None), "fields", True))


def output_times(t0: float, horizon: float, dt: float | None, count: int = 10) -> np.ndarray:
    """About ``count`` increasing times in ``(t0, t0 + horizon]`` on multiples of ``dt`` (any times without one)."""
    if not dt:
        return t0 + horizon * np.arange(1, count + 1) / count
    steps = max(int(round(horizon / dt)), 1)
    k = np.unique(np.round(np.arange(1, count + 1) * steps / count).astype(int))
    return t0 + dt * k[k > 0]


def _horizon_times(ensemble, dcfg, model, record: dict) -> np.ndarray:
    """The decision forecast's output times (:func:`output_times`); a horizon that is not a whole number of the model's
    steps ends at the nearest (at least one): said in the log, and ``record`` keeps the horizon forecast (``horizon``)
    and the one asked for (``horizon_requested``)."""
    times = output_times(ensemble.time, dcfg.horizon, getattr(model, "dt", None))
    reached = float(f"{times[-1] - ensemble.time:.12g}")
    if abs(reached - dcfg.horizon) > 1e-9 * max(abs(reached), abs(dcfg.horizon)):
        log.warning("decision.horizon %g is %g model steps of %g: the prediction is for %g after the last analysis "
                    "(give a multiple of the step to have it as asked)", dcfg.horizon, dcfg.horizon / model.dt,
                    model.dt, reached)
        record["horizon"], record["horizon_requested"] = reached, float(dcfg.horizon)
    return times


def decide(s, comm, window=None, observation_times=None) -> dict[str, Any] | None:
    """Compute the decision record of experiment ``s`` (a :class:`twin.campaign.experiment.Setup`) and write
    ``decision.json``; ``None`` when the campaign has no ``decision`` section with QoIs or a treatment. Collective.

    Parameters
    ----------
    window : PosteriorEnsemble, optional
        Posterior samples at the start of a calibration window (ES-MDA, 4D-Var); default: the analysis ensemble of
        the last checkpoint of a filter campaign.
    observation_times : sequence of float, optional
        With ``window``: the observation times of the window (model time units), increasing.
    """
    from twin.core.kinds import decision_types, kind_of
    from twin.decision.prediction import PosteriorEnsemble, forecast_members
    from twin.decision.records import write_decision

    cfg = s.cfg
    if not wants_decision(cfg):
        return None
    dcfg = cfg.decision
    model = s.get_model()
    kind = kind_of(getattr(model, "type_name", ""))
    window_info = None
    if window is None:
        K = s.schedule.n_cycles
        ensemble = PosteriorEnsemble.from_checkpoint(layout.checkpoint_file(s.exp_dir, K), model.name, comm)
    else:
        ensemble, through = reanalysis(model, window, observation_times)
        if kind is not None:
            window_info = kind.window_record(s, comm, model, window, through)
    record: dict[str, Any] = {"kind": "prediction", "members": int(ensemble.size), "time": float(ensemble.time),
                              "horizon": float(dcfg.horizon),
                              "time_units": str(getattr(model, "time_units", ""))}
    if window_info and "calibration" in window_info:
        record["calibration"] = window_info["calibration"]
    sections = dcfg.kind_sections()
    if dcfg.qois or not sections:
        times = _horizon_times(ensemble, dcfg, model, record)
        fc = forecast_members(model, ensemble, times, qois=list(dcfg.qois) or None,
                              snapshots=snapshot_indices(times.size) if wants_horizon(cfg) else ())
        qois, fans, lines = {}, {}, []
        span = duration_text(float(times[-1] - ensemble.time), getattr(model, "time_units", ""))
        when = f"{span} after the last analysis"
        for name in fc.values:
            limits = [dcfg.exceedance_limits[name]] if name in dcfg.exceedance_limits else []
            summ = fc.summary(name, -1, dcfg.credible_levels, dcfg.risk.level, limits)
            qois[name] = summ.as_dict()
            fans[name] = {"qoi": name, "units": fc.units.get(name, "1"), "long_name": fc.long_names.get(name, ""),
                          "times": fc.times.tolist(),
                          "levels": list(FAN_LEVELS), "quantiles": fc.fan(name, FAN_LEVELS).tolist()}
            lo, hi = min(summ.quantiles.values()), max(summ.quantiles.values())
            a, b = dcfg.credible_levels[0], dcfg.credible_levels[-1]
            band = (f"{100 * (b - a):.0f} % interval" if abs(a + b - 1) < 1e-9
                    else f"{a:g}-{b:g} quantiles")
            unit = fc.units.get(name, "1")
            lines.append(f"{name} {when}: mean {summ.mean:.4g}{'' if unit == '1' else ' ' + unit}, {band} "
                         f"[{lo:.4g}, {hi:.4g}]")
        record.update(qois=qois, fans=fans, summary="; ".join(lines))
        write_prediction(s, comm, fc)
        if fc.fields is not None:
            write_horizon(s, comm, fc, ensemble.time, ensemble.size)
    elif wants_horizon(cfg):
        # a kind's decision alone (it forecasts what it needs itself): the fields over the horizon all the same, from
        # a forecast of the posterior members that evaluates no QoI
        times = _horizon_times(ensemble, dcfg, model, record)
        fc = forecast_members(model, ensemble, times, qois=[], snapshots=snapshot_indices(times.size))
        if fc.fields is not None:
            write_horizon(s, comm, fc, ensemble.time, ensemble.size)
    for key in sections:
        hook = decision_types()[key].decide
        if hook is not None:
            record = hook(s, comm, model, ensemble, dcfg, record, window_info)
    record.update(_where_from(s, model, record))  # collective (the provenance)
    if comm is None or comm.Get_rank() == 0:
        write_decision(s.exp_dir, record)
    log.info("experiment %s: decision written (%s)", s.name, record.get("summary", record["kind"]))
    return record


def _where_from(s, model, record: dict) -> dict:
    """What a decision record says of itself (found by a probe: it had neither): ``provenance``, the outputs' record
    but the configuration text (versions, git revision, the configuration's and the campaign file's SHA-256, host,
    ranks, times), and, for a campaign with a calendar start, ``time_utc``: the decision's time as a date. Collective
    (the provenance)."""
    import datetime

    from twin.campaign.outputs import time_encoding

    prov = {k: v for k, v in s.provenance().finished().attrs().items() if k != "config"}
    out: dict = {"provenance": prov}
    start = s.cfg.timeline.calendar_start
    t = record.get("time")
    if start is not None and isinstance(t, (int, float)):
        _, scale = time_encoding(model, start)  # model time -> seconds since the start
        out["time_utc"] = (start + datetime.timedelta(seconds=float(t) * scale)).isoformat()
    return out


PREDICTION_FILE = "prediction.nc"


def write_prediction(s, comm, fc) -> None:
    """``prediction.nc``: every posterior member's QoIs over the decision's horizon (``member``, ``time``), the
    forecast users came for (``forecast.nc`` ends with the assimilation; the fields over the horizon are in
    ``horizon.nc``), CF time in the model's encoding, units and provenance; rank 0 writes, atomically. Collective
    (the provenance)."""
    import xarray as xr

    from twin.campaign.outputs import time_encoding
    from twin.io.atomic import atomic_output
    from twin.io.netcdf import global_attributes, record_checksum, time_attributes

    prov = s.provenance()  # collective: every rank, before rank 0 alone writes
    if comm is not None and comm.Get_rank() != 0:
        return
    time_units, scale = time_encoding(s.get_model(), s.cfg.timeline.calendar_start)
    members = next(iter(fc.values.values())).shape[0]
    # coordinates as in the other files: the member a CF realization, no fill value on either coordinate
    ds = xr.Dataset(coords={"member": ("member", np.arange(members, dtype=np.int32),
                                       {"standard_name": "realization", "long_name": "ensemble member index",
                                        "units": "1"}),
                            "time": ("time", np.asarray(fc.times, dtype=float) * scale, time_attributes(time_units))})
    for name, values in fc.values.items():
        ds[name] = (("member", "time"), np.asarray(values, dtype=float),
                    {"units": fc.units.get(name, "1"), "long_name": f"posterior forecast of {name}"})
    ds.attrs.update(global_attributes("prediction", f"posterior QoI forecast of experiment {s.name}", prov))
    with atomic_output(s.exp_dir / PREDICTION_FILE, private=s.cfg.campaign.sensitive) as tmp:
        ds.to_netcdf(tmp, encoding={"time": {"_FillValue": None}, "member": {"_FillValue": None}})
        record_checksum(tmp)


def write_horizon(s, comm, fc, t_analysis: float, members: int) -> None:
    """``horizon.nc``: the ensemble mean and spread of every state field at the snapshot times of the decision
    forecast ``fc`` (a :class:`~twin.decision.prediction.QoIForecast` with ``fields``), each on its own coordinates
    (:func:`twin.campaign.outputs.fields_dataset`); ``time`` in the campaign's CF encoding, the scalar
    ``forecast_reference_time`` (the last analysis ``t_analysis``) and ``forecast_period`` (lead time). Rank 0
    writes, atomically. Collective (the provenance)."""
    from twin.campaign.outputs import fields_dataset, time_encoding, write_fields
    from twin.io.netcdf import time_attributes

    prov = s.provenance()  # collective: every rank, before rank 0 alone writes
    model = s.get_model()
    time_units, scale = time_encoding(model, s.cfg.timeline.calendar_start)
    ds = None
    if comm is None or comm.Get_rank() == 0:
        f = fc.fields
        lead_units = time_units.split(" since ")[0] if " since " in time_units else time_units
        ds = fields_dataset(model, {"mean": f.mean, "spread": f.spread},
                            {"time": (np.asarray(f.times, dtype=float) * scale, time_attributes(time_units))},
                            statistics={"mean": ("ensemble mean of", "realization: mean"),
                                         "spread": ("ensemble standard deviation of",
                                                    "realization: standard_deviation")},
                            what=f"in the forecast of {members} posterior members")
        ref = {k: v for k, v in time_attributes(time_units).items() if k != "axis"}
        ds = ds.assign_coords(
            forecast_reference_time=((), float(t_analysis) * scale,
                                     {**ref, "standard_name": "forecast_reference_time",
                                      "long_name": "time of the last analysis the forecast starts from"}),
            forecast_period=("time", (np.asarray(f.times, dtype=float) - float(t_analysis)) * scale,
                             {"standard_name": "forecast_period", "long_name": "lead time after the last analysis",
                              "units": lead_units}))
        ds.attrs["twin_ensemble_members"] = int(members)
    write_fields(s.exp_dir / HORIZON_FILE, ds, comm, kind="horizon",
                 title=f"twin forecast fields over the decision horizon of experiment {s.name}", provenance=prov,
                 sensitive=s.cfg.campaign.sensitive, complevel=s.cfg.outputs.compression)


def whole_fields(model, params: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
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
                for name, q in contract.qoi(model, vec, t).items():  # checked: QoI name -> QoI
                    qois.setdefault(name, np.full((N, grid_times.size), np.nan))[j, i] = q.value
                if is_visit[i]:
                    visit_states[j, iv] = model.grid.allgather(vec).ravel()
                    iv += 1
    finally:
        vec.destroy()
    end = PosteriorEnsemble(visit_states[:, -1].copy(), whole_fields(model, window.parameters), float(visits[-1]))
    return end, {"times": grid_times, "qois": qois, "visit_states": visit_states, "visits": visits}
