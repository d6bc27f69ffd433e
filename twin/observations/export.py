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

A row of a network is written when it is multilinear interpolation of one state component at the row's position
(checked against :func:`twin.observations.base.interpolation_matrix`, to round-off): what a file network's operator
does. A network of several variables (a station network observing ``h, u, v``) gives a row to each of their
variables; a network none of whose rows are such point values (integrals, gauges of derived quantities, images), or
the rows of a network that are not (values on a staggered grid's faces, which a file network would interpolate at the
wrong place), is named in the global attribute ``twin_networks_not_written`` with why: a file network could not
observe through its operator. The files of the
real system are rarely one per state variable; CF allows a file per feature type, and twin reads any number of them.

Written by hand with netCDF4 (through :func:`twin.io.netcdf.global_attributes` and ``record_checksum``, as every twin
file): xarray would need a dataset per instance dimension for the same file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from twin.core.errors import ObservationError
from twin.core.log import get_logger
from twin.io.atomic import as_mpi_comm, atomic_output
from twin.io.netcdf import global_attributes, position_attributes, record_checksum
from twin.observations.base import interpolation_matrix

log = get_logger(__name__)

_AXES = ("x", "y", "z")
_FILL = -9.0e33


def point_networks(obs, model) -> tuple[dict[str, tuple[int, str] | list], dict[str, str]]:
    """Which networks (or rows of networks) of the stacked operator ``obs`` observe point values of a state variable.

    Returns ``({network: (component, variable)}, {network: why not})`` for networks whose rows all observe one
    variable; a network whose rows observe several, or only some of whose rows are point values, maps instead to the
    list of ``(component, variable)`` of its rows (``None``: a row not written, and the network is also named in the
    second dict with why).
    """
    names = list(getattr(model, "state_names", ()) or ())
    slices = obs.network_slices or {obs.name: slice(0, obs.n_obs)}
    points, others = {}, {}
    grid = getattr(model, "grid", None)
    for name, rows in slices.items():
        if obs.locations is None or grid is None or not names or grid.dof != len(names):
            others[name] = "the operator has no positions on the model grid"
            continue
        H = obs.matrix[rows]
        where = obs.locations[rows]
        found: list = [None] * H.shape[0]
        if where.shape[1] == grid.dim:
            tol = 1e-12 * max(1.0, abs(H).max())
            for c, v in enumerate(names):
                try:
                    ref = interpolation_matrix(grid, where, c)
                except ObservationError:  # a position outside the box: not a point network of this grid
                    break
                if ref.shape != H.shape:
                    break
                close = abs(ref - H).max(axis=1).toarray().ravel() <= tol
                for r in np.flatnonzero(close):
                    if found[r] is None:
                        found[r] = (c, v)
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
    points, others = point_networks(obs, model)
    comm = as_mpi_comm(comm)
    with atomic_output(path, comm, private=sensitive) as tmp:
        if comm is None or comm.Get_rank() == 0:
            _write(tmp, obs, model, np.asarray(times, dtype=float), np.asarray(values, dtype=float), points, others,
                   time_units, time_scale, provenance)
            record_checksum(tmp)
    if points:
        log.info("wrote %s: network(s) %s", path, ", ".join(points))
    return Path(path)


def _write(tmp, obs, model, times, values, points, others, time_units, time_scale, provenance) -> None:
    import netCDF4

    grid = model.grid
    units = dict(zip(model.state_names, getattr(model, "state_units", ()) or ()))
    length_units = getattr(model, "length_units", "m")
    slices = obs.network_slices or {obs.name: slice(0, obs.n_obs)}
    by_variable: dict[str, list[tuple[str, int]]] = {}
    for name, found in points.items():
        rows = range(slices[name].start, slices[name].stop)
        per_row = found if isinstance(found, list) else [found] * len(rows)
        for r, f in zip(rows, per_row):
            if f is not None:
                by_variable.setdefault(f[1], []).append((name, r))
    with netCDF4.Dataset(tmp, "w", format="NETCDF4") as nc:
        attrs = global_attributes("observations", "twin experiment observations", provenance)
        attrs["featureType"] = "timeSeries"
        attrs["twin_networks_not_written"] = "; ".join(f"{n}: {why}" for n, why in others.items()) or "none"
        nc.setncatts(attrs)
        nc.createDimension("time", times.size - 1)
        t = nc.createVariable("time", "f8", ("time",))
        t.setncatts({"standard_name": "time", "long_name": "observation time", "axis": "T", "units": time_units})
        t[:] = times[1:] * time_scale
        for v, rows in by_variable.items():
            dim = f"station_{v}"
            idx = np.array([r for _, r in rows], dtype=np.int64)
            nc.createDimension(dim, idx.size)
            coords = ["time"]
            for a in range(grid.dim):
                name = f"obs_{v}_{_AXES[a]}"
                c = nc.createVariable(name, "f8", (dim,))
                c.setncatts({**position_attributes(_AXES[a]), "long_name": f"{_AXES[a]} position of the station",
                             "units": length_units})
                c[:] = obs.locations[idx, a]
                coords.append(name)
            sid = nc.createVariable(f"obs_{v}_id", str, (dim,))
            sid.cf_role = "timeseries_id"
            sid.long_name = "network and row of its operator"
            for j, (net, r) in enumerate(rows):
                sid[j] = f"{net}:{r - slices[net].start}"
            unit = units.get(v, "1")
            data = nc.createVariable(f"obs_{v}", "f8", (dim, "time"), fill_value=_FILL, zlib=True)
            data.setncatts({"long_name": f"observed {v}", "units": unit, "coordinates": " ".join(coords),
                            "ancillary_variables": f"obs_{v}_error"})
            y = values[:, idx].T
            data[:] = np.ma.masked_invalid(y)
            # no standard_name: the modifier 'standard_error' needs the data's standard name, which model variables
            # do not have; a file network names this variable instead (error: obs_<v>_error)
            err = nc.createVariable(f"obs_{v}_error", "f8", (dim, "time"), fill_value=_FILL, zlib=True)
            err.setncatts({"long_name": f"error standard deviation of obs_{v}", "units": unit})
            err[:] = np.ma.masked_where(~np.isfinite(y), np.broadcast_to(obs.error_std[idx][:, None], y.shape))
