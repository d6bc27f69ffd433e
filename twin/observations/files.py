"""Measured observations from files: the public entry point.

A digital twin of a real system assimilates that system's measurements, delivered as files. This module gathers what
a campaign needs to use them; each piece lives in its own module:

* :class:`ObservationTable` (:mod:`twin.observations.table`): every reader returns one; times in model time units
  after the campaign start, positions in model length units, values and error standard deviations in the model's
  units of each variable, with the file's path, SHA-256 and the row of every observation;
* :func:`read_dsg` (:mod:`twin.observations.dsg`): CF 1.10 discrete sampling geometries (featureType point,
  timeSeries, trajectory);
* :func:`read_csv` (:mod:`twin.observations.csvfile`): a plain CSV ``time,x[,y[,z]],variable,value[,error][,units]``
  (layout and example in that module);
* :func:`bin_by_cycle`, :func:`outside_campaign`: which cycle each observation belongs to,
  ``edges[k] < t <= edges[k+1]``; observations outside the campaign are an error for :func:`bin_by_cycle`, so that
  quality control must find them (:func:`outside_campaign`) and record what it does with them.

Conventions shared by both readers:

* Time: a campaign without a calendar start counts model time from 1970-01-01T00:00Z, one with a start
  (:func:`twin.core.calendar.parse_start`) from that instant; file times ``"<unit> since <date>"`` are placed on that
  axis, plain durations (``"h"``) count from the start, and a model whose time is dimensionless (``"1"``) takes plain
  numbers only (:mod:`twin.core.calendar`).
* Units: file units are CF/UDUNITS or pint spellings (:mod:`twin.core.cfunits`) and must convert, with pint, to the
  units each request names; errors convert as differences (no offset).
* Bad data: one-line :class:`~twin.core.errors.ObservationError` naming the file, and the variable and observation
  where there is one; nothing is dropped silently (missing values are counted in ``table.missing``).
* Size: a file with more than ``max_obs`` values (default :data:`DEFAULT_MAX_OBS`) is refused before it is loaded.

Example::

    from twin.core.calendar import parse_start
    from twin.observations.files import read_dsg, bin_by_cycle

    table = read_dsg("stations.nc", {"h": {"standard_name": "sea_surface_height", "units": "m"}},
                     start=parse_start("2026-03-01T00:00Z"), model_time_units="s", length_units="m")
    cycles = bin_by_cycle(table, [0.0, 21600.0, 43200.0])   # two 6-hour cycles
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from twin.core.errors import ObservationError
from twin.observations.csvfile import read_csv
from twin.observations.dsg import read_dsg
from twin.observations.table import (DEFAULT_MAX_OBS, ObservationTable, VariableRequest, bin_by_cycle,
                                     outside_campaign)

#: file suffixes read as CSV; every other file is read as CF-DSG NetCDF
CSV_SUFFIXES = (".csv",)


def reader_for(path) -> Callable[..., ObservationTable]:
    """:func:`read_csv` for a ``.csv`` file, :func:`read_dsg` for any other (which refuses a file that is not
    NetCDF, saying so)."""
    return read_csv if Path(path).suffix.lower() in CSV_SUFFIXES else read_dsg


def read_network_file(spec, path, model, start) -> ObservationTable:
    """One file of the ``file`` network ``spec`` (:class:`twin.config.observation_networks.FileNetwork`) read for
    ``model`` (anything with ``time_units`` and ``length_units``, and ``grid.dim`` where known): the network's
    variables, units and default error; ``start`` the calendar start or ``None``. A file whose positions have another
    number of coordinates than the grid's dimension is refused here (:func:`check_dimension`)."""
    variables = {v: {k: val for k, val in f.model_dump(exclude={"range"}).items() if val is not None}
                 for v, f in spec.variables.items()}
    read = reader_for(path)
    extra = {"time_units": spec.time_units, "position_units": spec.units} if read is read_csv else {}
    table = read(path, variables, start=start, model_time_units=model.time_units, length_units=model.length_units,
                 error_std=spec.default_error(), **extra)
    dim = getattr(getattr(model, "grid", None), "dim", None)
    if dim is not None:
        check_dimension(table, int(dim), csv=read is read_csv)
    return table


#: the position coordinates, in axis order
AXES = ("x", "y", "z")


def check_dimension(table: ObservationTable, dim: int, *, csv: bool) -> None:
    """Refuse, naming the file and the column (CSV) or coordinate (NetCDF), positions with fewer or more coordinates
    than the model's ``dim``-D grid. The readers take as many of x, y, z as a file has, so a CSV without its ``y``
    column on a 2-D grid reads well and used to stop the experiment only when its operator was built ("points have 1
    coordinates, grid is 2-D", naming neither the file nor the column), after ``twin validate`` had said ok."""
    have = table.position.shape[1]
    if have == dim:
        return
    need = ", ".join(AXES[:dim])
    if have < dim:
        axis = AXES[have]
        what = (f"has no column {axis}" if csv else
                f"has no {axis} position (a variable with axis {axis.upper()}, standard_name "
                f"projection_{axis}_coordinate or the name {axis})")
        raise ObservationError(f"observation file {table.source}: {what}: the model's grid is {dim}-D, so every "
                               f"position needs {need}")
    extra = ", ".join(AXES[dim:have])
    what = f"column(s) {extra}" if csv else f"position coordinate(s) {extra}"
    raise ObservationError(f"observation file {table.source}: has {what}, but the model's grid is {dim}-D: give "
                           f"positions as {need} only")


__all__ = ["DEFAULT_MAX_OBS", "ObservationTable", "VariableRequest", "read_dsg", "read_csv", "bin_by_cycle",
           "outside_campaign", "reader_for", "read_network_file", "check_dimension", "CSV_SUFFIXES"]
