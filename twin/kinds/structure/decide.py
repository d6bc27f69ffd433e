"""The structure branch of a campaign's decision step (``decision.structure``, optionally ``decision.sensors``).

Maintenance decision: the last analysis ensemble is forecast over ``decision.horizon`` (a coupled campaign runs
every component, so the wind keeps loading the structure) and
``p = P(max_{t <= T} max_x sigma_vm(x, t) > L)`` is estimated over the members
(:func:`twin.kinds.structure.decision.maintenance_decision`); inspection is recommended when ``p >= threshold``.

Sensor-placement study: which strain gauges would tell most about the peak stress ``q = max_x sigma_vm`` at the first
analysis time? The design is made *before* the data, so it uses the prior ensemble forecast over the first cycle
(``forecast/cycle_0000``: members with their prior damage fields): predicted strains ``Y = H x`` at the candidate
gauges (the deployed gauges of the network first, then ``decision.sensors.candidates``, axial strain, 90 degrees)
and ``q`` per member give the ensemble-sensitivity problem (:meth:`twin.decision.sensors.PlacementProblem
.from_ensemble`); greedy placements of ``1..count`` gauges are compared with ``random_placements`` random layouts and
with the deployed layout (:func:`twin.kinds.structure.decision.placement_study`). Random layouts come from the campaign's
random stream of purpose PLACEMENT (:mod:`twin.core.streams`), so a rerun reports the same curve.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from twin.campaign import context as ctx
from twin.campaign.state import CoupledState, set_field
from twin.core.errors import ConfigError
from twin.core.streams import Purpose
from twin.core.units import convert



def structure_model(model, component: str | None):
    """The structure model of the campaign: ``model`` itself, or its component ``component`` (coupled)."""
    if isinstance(model, CoupledState):
        if component is None or component not in model.models:
            raise ConfigError(f"decision.structure.component: name the structure component of the coupled campaign "
                              f"(one of {list(model.models)}), got {component!r}")
        structure = model.models[component]
    else:
        structure = model
    if getattr(structure, "type_name", "") != "structure":
        raise ConfigError(f"decision.structure: needs a structure model; component '{structure.name}' is of type "
                          f"'{getattr(structure, 'type_name', '?')}'")
    return structure


def deployed_gauges(cfg, structure, component: str | None) -> tuple[np.ndarray, np.ndarray]:
    """Points (structure length units) and angles (rad) of the strain-gauge networks observing the structure: the
    synthetic networks' gauges, and those of the files of the networks of measured readings
    (:func:`twin.kinds.structure.readings.gauges`)."""
    from twin.kinds.structure.readings import gauges

    pts, angles = [], []
    for net in ctx.assimilation_section(cfg).observations:
        if net.model != component:
            continue
        if net.type == "strain_gauge_readings":
            p, a = gauges(net, structure, cfg.timeline.calendar_start)
            pts.append(p)
            angles.append(a)
            continue
        if net.type != "strain_gauges":
            continue
        p = np.asarray(net.points, dtype=float)
        if net.units:
            p = p * float(convert(1.0, net.units, structure.length_units))
        pts.append(p)
        angles.append(np.deg2rad(np.broadcast_to(np.asarray(net.angles, dtype=float), (len(p),))))
    if not pts:
        return np.zeros((0, 2)), np.zeros(0)
    return np.concatenate(pts), np.concatenate(angles)


def structure_record(s, comm, model, ensemble, dcfg) -> dict[str, Any]:
    """The ``structure`` entry of ``decision.json``: maintenance decision, gauge layout and the placement study.
    Collective."""
    from twin.campaign.decide import output_times
    from twin.kinds.structure.decision import maintenance_decision

    spec = dcfg.structure
    comp = spec.component
    structure = structure_model(model, comp)
    if spec.scenario:
        raise ConfigError("decision.structure.scenario: load scenarios apply to a structure's named load cases; "
                          "a campaign's maintenance decision runs without one (remove 'scenario')")
    times = output_times(ensemble.time, dcfg.horizon, getattr(model, "dt", None))
    dec = maintenance_decision(model, ensemble, times, float(spec.limit.to("Pa")), spec.threshold, comp,
                               set_parameters=ctx.set_member_parameters)
    points, angles = deployed_gauges(s.cfg, structure, comp)
    out: dict[str, Any] = {"component": comp or structure.name, "maintenance": dec.as_dict(),
                           "gauges": {"points": points.tolist(), "angles_deg": np.rad2deg(angles).tolist(),
                                      "units": structure.length_units},
                           "extent": [list(e) for e in structure.grid.extent],
                           "nodes": [int(n) for n in structure.grid.shape]}   # (nx, ny): the report draws fields
    if dcfg.sensors is not None:
        out["sensor_placement"] = _placement(s, comm, model, structure, comp, dcfg, points, angles)
    return out


def _placement(s, comm, model, structure, comp, dcfg, points, angles) -> dict[str, Any]:
    from twin.campaign.checkpoints import cycle_forecasts
    from twin.decision.sensors import PlacementProblem
    from twin.kinds.structure.decision import max_von_mises, placement_study
    from twin.kinds.structure.gauges import strain_gauge_matrix

    sensors = dcfg.sensors
    cand = np.asarray(sensors.candidates if sensors.candidates else np.zeros((0, 2)), dtype=float).reshape(-1, 2)
    all_points = np.concatenate([points, cand]) if len(cand) else points
    all_angles = np.concatenate([angles, np.full(len(cand), np.pi / 2)])
    if len(all_points) < 2:
        raise ConfigError("decision.sensors: the placement study needs candidate gauges (decision.sensors.candidates)"
                          " or a deployed strain_gauges network")
    H = strain_gauge_matrix(structure.grid, all_points, all_angles)
    block = model.block(comp) if isinstance(model, CoupledState) else slice(None)
    Y, q = [], []
    vec = structure.create_state()
    try:
        for m, (x, params) in sorted(cycle_forecasts(s, 0, comm).items()):
            for name, value in params.items():
                if np.ndim(value):
                    set_field(model, name, value)
                else:
                    model.set_parameter(name, float(value))
            part = np.asarray(x)[block]
            structure.grid.set_global(part, vec)
            Y.append(H @ part)
            q.append(max_von_mises(structure, vec, 0.0))
    finally:
        vec.destroy()
    problem = PlacementProblem.from_ensemble(np.array(Y).T, np.array(q), sensors.error_std)
    K = min(int(sensors.count), problem.n_candidates)
    study = placement_study(problem, K, dcfg.structure.random_placements, ctx.rng(s.cfg, Purpose.PLACEMENT, 0),
                            deployed=range(len(points)))
    study.update(candidates=all_points.tolist(), candidate_angles_deg=np.rad2deg(all_angles).tolist(),
                 n_deployed=int(len(points)), members=len(q), qoi="peak von Mises stress", units="Pa")
    return study


def decide(s, comm, model, ensemble, dcfg, record: dict[str, Any], window) -> dict[str, Any]:
    """The ``structure`` decision added to ``record`` (:class:`twin.core.kinds.DecisionType`). Collective."""
    record = dict(record)
    record["structure"] = structure_record(s, comm, model, ensemble, dcfg)
    record["summary"] = "; ".join(filter(None, [record.get("summary"),
                                                record["structure"]["maintenance"]["summary"]]))
    return record
