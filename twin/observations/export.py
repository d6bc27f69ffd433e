"""A twin experiment's synthetic observations as the CF discrete-sampling-geometry file a real system would send.

``observations.nc`` in the experiment directory holds, for every network of the experiment that observes point
values of one state variable, what a station network of the real system would deliver: a CF-1.10 ``timeSeries`` file
that :func:`twin.observations.dsg.read_dsg` reads back and a ``type: file`` network assimilates. Fed to the same
campaign (with the twin network replaced by ``{type: file, file: observations.nc, variables: {<var>: {name:
obs_<var>, error: obs_<var>_error, units: ...}}}`` and ``assimilation.background_std`` stated, as its default is the networks' mean error),
it gives the twin experiment's analyses again (the round trip; tested bitwise in
``tests/integration/test_observation_roundtrip.py`` for the filters and
``tests/integration/test_observation_roundtrip_smoothers.py`` for ES-MDA and 4D-Var): the file network's operator
interpolates the same state variable at the same positions, the values and errors are the float64 values the twin
experiment assimilated, and every observation carries the time the twin experiment observed it at (a filter's or
ES-MDA's observation times ``t_0 + k every dt``, 4D-Var's ``t_0 + j obs_interval``; ES-MDA and 4D-Var use each
observation of a file at its own time, :mod:`twin.observations.file_network`).

Layout (orthogonal multidimensional representation, CF 1.10 section 9.3.1), for each observed state variable ``v``::

    dimensions: time, station_<v>
    time(time)                 the analysis times, CF time ("seconds since <timeline.start>", or the model's
                               dimensionless time "1")
    obs_<v>_x(station_<v>)     station positions, axis X (and _y, _z), in the model's length units
    obs_<v>_id(station_<v>)    cf_role = timeseries_id: the network and the row of its operator ("stations:3")
    obs_<v>(station_<v>, time) the observed values in the model's units of v, coordinates "time obs_<v>_x ..."
    obs_<v>_error(...)         their error standard deviations (ancillary; named by the network's ``error`` key)

A row of a network is written when it is the point value of one state component at the row's position, where the
model keeps that component (cell centres, or a staggered grid's faces; checked against
:func:`twin.observations.base.point_matrix`, to round-off): what a file network's operator does. A network of
several variables (a station network observing ``h, u, v``) gives a row to each of their variables; a network none of
whose rows are such point values (integrals, gauges of derived quantities, images), or the rows of a network that are
not, is named in the global attribute ``twin_networks_not_written`` with why: a file network could not observe
through its operator. The files of the
real system are rarely one per state variable; CF allows a file per feature type, and twin reads any number of them.

A kind's network whose rows are not point values but which the kind knows how to write (``export`` of its
:class:`twin.core.kinds.NetworkType`, e.g. strain gauges) is written the same way, one station per row, as the
:class:`Stations` the kind returns: the file variables are ``obs_<variable>`` with the kind's ``variable``, units and
long name, and besides the positions the per-station variables the kind names (a gauge's direction,
``obs_<variable>_angle``); the kind's network that reads measured data reads them back.

Coupled campaigns: each network is checked on the component it observes (``model:``; its rows on that component's
block of the whole state, its state variables, grid and length units), and its variables are prefixed with the
component's name, ``obs_<component>_<v>`` (two components may share a variable name).

Written by hand with netCDF4 (through :func:`twin.io.netcdf.global_attributes` and ``record_checksum``, as every twin
file): xarray would need a dataset per instance dimension for the same file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import numpy as np

from twin.core.errors import ObservationError
from twin.core.log import get_logger
from twin.io.atomic import as_mpi_comm, atomic_output
from twin.io.netcdf import global_attributes, position_attributes, record_checksum
from twin.observations.base import point_matrix

log = get_logger(__name__)

_AXES = ("x", "y", "z")
_FILL = -9.0e33


@dataclass(frozen=True)
class Stations:
    """What ``observations.nc`` holds of a network's rows, one station per row (a kind's :class:`twin.core.kinds
    .NetworkType` ``export`` returns one for its network).

    Attributes
    ----------
    variable : str
        The file variables' stem: ``obs_<variable>`` (values), ``obs_<variable>_x`` ... (positions),
        ``obs_<variable>_error``, ``obs_<variable>_id``, ``obs_<variable>_<key>`` for each entry of ``instance``.
    units, long_name : str
        Units and long name of the observed values (the network's operator gives them in ``units``).
    positions : ndarray, shape (m, dim)
        Station positions in the observed model's length units.
    instance : mapping
        ``{key: (values (m,), attributes)}``: per-station variables besides the positions (e.g. a gauge's direction,
        with ``units`` among the attributes).
    """

    variable: str
    units: str
    long_name: str
    positions: np.ndarray
    instance: Mapping[str, tuple[np.ndarray, Mapping[str, str]]] = field(default_factory=dict)


@dataclass(frozen=True)
class _View:
    """One network as the export sees it: its rows of the stacked operator, the model they observe (a coupled
    campaign's component), its operator on that model and the prefix of its file variables."""

    rows: slice
    model: object
    matrix: object
    locations: np.ndarray | None
    prefix: str


def _views(obs, model) -> dict[str, _View]:
    """Every network of ``obs`` on the model it observes (:func:`twin.observations.networks.build` records the
    components of a coupled campaign and the component of each network)."""
    slices = obs.network_slices or {obs.name: slice(0, obs.n_obs)}
    components = getattr(obs, "components", None) or {}
    observed = getattr(obs, "network_models", None) or {}
    out = {}
    for name, rows in slices.items():
        H = obs.matrix[rows]
        where = None if obs.locations is None else obs.locations[rows]
        comp = observed.get(name)
        if comp in components:
            target, offset = components[comp]
            n = target.grid.size * target.grid.dof
            out[name] = _View(rows, target, H[:, offset:offset + n], where, f"{comp}_")
        else:
            out[name] = _View(rows, model, H, where, "")
    return out


def _point_rows(view: _View) -> list | str:
    """The ``(component, variable)`` of every row of a network that is the point value of one state variable at its
    position (``None`` for the others), or why the network has no position on the model grid."""
    grid = getattr(view.model, "grid", None)
    names = list(getattr(view.model, "state_names", ()) or ())
    if view.locations is None or grid is None or not names or grid.dof != len(names):
        return "the operator has no positions on the model grid"
    H, where = view.matrix, view.locations
    found: list = [None] * H.shape[0]
    if where.shape[1] == grid.dim:
        tol = 1e-12 * max(1.0, abs(H).max())
        for c, v in enumerate(names):
            try:
                ref = point_matrix(view.model, where, c)
            except ObservationError:  # a position outside the box: not a point network of this grid
                break
            if ref.shape != H.shape:
                break
            close = abs(ref - H).max(axis=1).toarray().ravel() <= tol
            for r in np.flatnonzero(close):
                if found[r] is None:
                    found[r] = (c, v)
    return found


def point_networks(obs, model) -> tuple[dict[str, tuple[int, str] | list], dict[str, str]]:
    """Which networks (or rows of networks) of the stacked operator ``obs`` observe point values of a state variable.

    Returns ``({network: (component, variable)}, {network: why not})`` for networks whose rows all observe one
    variable; a network whose rows observe several, or only some of whose rows are point values, maps instead to the
    list of ``(component, variable)`` of its rows (``None``: a row not written, and the network is also named in the
    second dict with why). On a coupled campaign the components and variables are those of the component each network
    observes.
    """
    points, others = {}, {}
    for name, view in _views(obs, model).items():
        found = _point_rows(view)
        if isinstance(found, str):
            others[name] = found
            continue
        kinds = set(found)
        if not found or kinds == {None}:
            others[name] = "its operator is not the point value of one state variable"
        elif len(kinds) == 1:
            points[name] = found[0]
        else:
            points[name] = found
            if None in kinds:
                written = ", ".join(dict.fromkeys(f[1] for f in found if f is not None))
                others[name] = (f"{found.count(None)} of its {len(found)} rows are not the point value of one state "
                                f"variable at their positions (rows of {written} written)")
    return points, others


def _kind_export(obs, name: str):
    """``(network section, export)`` when the kind that declares network ``name``'s type writes it
    (:class:`twin.core.kinds.NetworkType` ``export``), else ``None``."""
    from twin.core.kinds import network_types

    spec = (getattr(obs, "network_specs", None) or {}).get(name)
    declared = network_types().get(getattr(spec, "type", None))
    return None if declared is None or declared.export is None else (spec, declared.export)


def station_groups(obs, model) -> tuple[dict[str, dict], dict[str, str]]:
    """What :func:`write_observation_file` writes: ``{stem: {"rows": [(network, row of obs)], "feature":
    Stations, "length_units": ...}}`` (the stations of every network written as ``obs_<stem>``, one per row) and
    ``{network: why not written}``."""
    from twin.observations.base import LinearObservations

    views = _views(obs, model)
    points, others = point_networks(obs, model)
    groups: dict[str, dict] = {}

    def add(stem: str, name: str, rows: list[int], stations: Stations) -> None:
        g = groups.setdefault(stem, {"rows": [], "parts": [], "model": views[name].model})
        g["rows"] += [(name, r) for r in rows]
        g["parts"].append(stations)

    for name, view in views.items():
        hook = None if name in points else _kind_export(obs, name)
        if hook is None:
            continue
        spec, export = hook
        part = LinearObservations(view.matrix, obs.error_std[view.rows], view.locations, name)
        try:
            stations = export(spec, part, view.model)
        except ObservationError as exc:
            others[name] = str(exc)
            continue
        others.pop(name, None)
        add(view.prefix + stations.variable, name, list(range(view.rows.start, view.rows.stop)), stations)
    for name, found in points.items():
        view = views[name]
        units = dict(zip(view.model.state_names, getattr(view.model, "state_units", ()) or ()))
        per_row = found if isinstance(found, list) else [found] * (view.rows.stop - view.rows.start)
        for v in dict.fromkeys(f[1] for f in per_row if f is not None):
            local = [r for r, f in enumerate(per_row) if f is not None and f[1] == v]
            add(view.prefix + v, name, [view.rows.start + r for r in local],
                Stations(v, units.get(v, "1"), f"observed {v}", view.locations[local]))
    out = {}
    for stem, g in groups.items():
        parts = g["parts"]
        first = parts[0]
        for q in parts[1:]:
            if (q.units, sorted(q.instance)) != (first.units, sorted(first.instance)):
                raise ObservationError(f"observations.nc: the networks written as obs_{stem} differ in units or in "
                                       "their per-station variables; name them apart")
        stations = Stations(first.variable, first.units, first.long_name,
                            np.concatenate([q.positions for q in parts], axis=0),
                            {k: (np.concatenate([np.asarray(q.instance[k][0], dtype=float) for q in parts]),
                                 first.instance[k][1]) for k in first.instance})
        out[stem] = {"rows": g["rows"], "feature": stations,
                     "length_units": getattr(g["model"], "length_units", "m")}
    return out, others


def write_observation_file(path: Path, comm, obs, model, times: np.ndarray, values: np.ndarray, *,
                           time_units: str, time_scale: float, provenance=None, sensitive: bool = False) -> Path:
    """Write ``observations.nc`` (see the module docstring); collective over ``comm``, rank 0 writes.

    Parameters
    ----------
    obs : LinearObservations
        The experiment's stacked operator (positions, network slices, error standard deviations).
    model
        The model (state names and units, grid, length units).
    times : ndarray, shape (K + 1,)
        The start and the observation times in model time (a filter's cycle edges, 4D-Var's ``t_0 + j
        obs_interval``); row ``k`` of ``values`` was observed at ``times[k + 1]``.
    values : ndarray, shape (K, m)
        The observations of every cycle (rows of ``obs``), as assimilated.
    time_units, time_scale : str, float
        CF units of the file's time and the factor from model time to them (:func:`twin.campaign.outputs
        .time_encoding`).
    """
    groups, others = station_groups(obs, model)
    comm = as_mpi_comm(comm)
    with atomic_output(path, comm, private=sensitive) as tmp:
        if comm is None or comm.Get_rank() == 0:
            _write(tmp, obs, np.asarray(times, dtype=float), np.asarray(values, dtype=float), groups, others,
                   time_units, time_scale, provenance)
            record_checksum(tmp)
    written = dict.fromkeys(n for g in groups.values() for n, _ in g["rows"])
    if written:
        log.info("wrote %s: network(s) %s", path, ", ".join(written))
    return Path(path)


def _write(tmp, obs, times, values, groups, others, time_units, time_scale, provenance) -> None:
    import netCDF4

    slices = obs.network_slices or {obs.name: slice(0, obs.n_obs)}
    with netCDF4.Dataset(tmp, "w", format="NETCDF4") as nc:
        attrs = global_attributes("observations", "twin experiment observations", provenance)
        attrs["featureType"] = "timeSeries"
        attrs["twin_networks_not_written"] = "; ".join(f"{n}: {why}" for n, why in others.items()) or "none"
        nc.setncatts(attrs)
        nc.createDimension("time", times.size - 1)
        t = nc.createVariable("time", "f8", ("time",))
        t.setncatts({"standard_name": "time", "long_name": "observation time", "axis": "T", "units": time_units})
        t[:] = times[1:] * time_scale
        for v, group in groups.items():
            rows, st = group["rows"], group["feature"]
            dim = f"station_{v}"
            idx = np.array([r for _, r in rows], dtype=np.int64)
            nc.createDimension(dim, idx.size)
            coords = ["time"]
            for a in range(st.positions.shape[1]):
                name = f"obs_{v}_{_AXES[a]}"
                c = nc.createVariable(name, "f8", (dim,))
                c.setncatts({**position_attributes(_AXES[a]), "long_name": f"{_AXES[a]} position of the station",
                             "units": group["length_units"]})
                c[:] = st.positions[:, a]
                coords.append(name)
            sid = nc.createVariable(f"obs_{v}_id", str, (dim,))
            sid.cf_role = "timeseries_id"
            sid.long_name = "network and row of its operator"
            for j, (net, r) in enumerate(rows):
                sid[j] = f"{net}:{r - slices[net].start}"
            for key, (per_station, key_attrs) in st.instance.items():
                extra = nc.createVariable(f"obs_{v}_{key}", "f8", (dim,))
                extra.setncatts(dict(key_attrs))
                extra[:] = np.asarray(per_station, dtype=float)
            data = nc.createVariable(f"obs_{v}", "f8", (dim, "time"), fill_value=_FILL, zlib=True)
            data.setncatts({"long_name": st.long_name, "units": st.units, "coordinates": " ".join(coords),
                            "ancillary_variables": f"obs_{v}_error"})
            y = values[:, idx].T
            data[:] = np.ma.masked_invalid(y)
            # no standard_name: the modifier 'standard_error' needs the data's standard name, which model variables
            # do not have; a file network names this variable instead (error: obs_<v>_error)
            err = nc.createVariable(f"obs_{v}_error", "f8", (dim, "time"), fill_value=_FILL, zlib=True)
            err.setncatts({"long_name": f"error standard deviation of obs_{v}", "units": st.units})
            err[:] = np.ma.masked_where(~np.isfinite(y), np.broadcast_to(obs.error_std[idx][:, None], y.shape))
