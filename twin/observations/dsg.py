"""CF discrete-sampling-geometry files (CF 1.10 chapter 9) read into an observation table.

Feature types ``point``, ``timeSeries`` (stations, gauges) and ``trajectory`` (tracks, swaths), in every
representation chapter 9 gives them:

* multidimensional arrays, orthogonal (``h(station, time)`` with ``time(time)``) or incomplete (``h(station, obs)``
  with ``time(station, obs)``), and a single feature (``h(time)`` with scalar ``x``, ``y``): a coordinate's value for
  an observation is found through the dimensions it shares with the data variable, whatever their order;
* contiguous ragged arrays: ``h(obs)``, ``time(obs)``, station coordinates ``x(station)`` and a count variable
  ``row_size(station)`` whose ``sample_dimension`` attribute names ``obs``;
* indexed ragged arrays: the same with an index variable ``station_index(obs)`` whose ``instance_dimension``
  attribute names ``station``.

How things are found:

* the data variable by its name, else by an exact ``standard_name`` (a request that names neither looks for the model
  variable's own name);
* its coordinates among the variables its ``coordinates`` attribute lists, then the coordinate variables of its
  dimensions, then every other variable: time has ``axis = "T"``, ``standard_name = "time"`` or the name ``time``;
  positions have ``axis`` ``X``/``Y``/``Z``, ``standard_name`` ``projection_x_coordinate``/``projection_y_coordinate``
  or the names ``x``/``y``/``z``, or are named by the caller (``position_names``). Latitude and longitude are not
  positions of a twin model (its grids are Cartesian): project them first, or name the variables to use;
* the observation error standard deviation in the variable the request names (``error``), else in the ancillary
  variable (``ancillary_variables`` attribute) whose ``standard_name`` carries the ``standard_error`` modifier
  (``"sea_surface_height standard_error"``), in any units that convert; without one, the request's ``error_std``,
  else the reader's ``error_std``.

Auxiliary variables (``auxiliary``): what an observation operator needs besides the position, such as a strain
gauge's direction, named by the caller and found like a coordinate (through the dimensions or the ragged-array link
it shares with the data variable), converted to the units asked for and returned per observation in
``table.auxiliary``; a present value whose auxiliary value is missing is refused like one without a position.

Units are converted with pint (:mod:`twin.core.cfunits`: ``"cm"``, ``"hPa"``, ``"km h-1"``, ``"km/h"``), times with
:mod:`twin.core.calendar` (``"hours since 2026-03-01"`` with a ``calendar`` attribute). ``_FillValue``,
``missing_value``, values outside ``valid_min``/``valid_max``/``valid_range`` (netCDF4's masking, which also applies
``scale_factor``/``add_offset``) and NaN are missing: they are dropped and counted per variable (``table.missing``);
an infinite value is refused (as in a CSV file).
A value that is present needs a finite time, position and error; otherwise the reader stops with an
:class:`~twin.core.errors.ObservationError` naming the file, the variable and the observation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Mapping, Sequence

import netCDF4
import numpy as np

from twin.core.calendar import to_model_time
from twin.core.cfunits import convert_cf, convert_cf_difference
from twin.core.errors import ObservationError
from twin.io.classic import complete_size
from twin.observations.table import (DEFAULT_MAX_OBS, ObservationTable, VariableRequest, check_count, concatenate,
                                     existing_file, file_sha256, parse_requests)

#: featureType values read (lower case, as CF says the attribute is case-insensitive) and their CF spelling
FEATURE_TYPES = {"point": "point", "timeseries": "timeSeries", "trajectory": "trajectory"}

_MAGIC = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF\r\n\x1a\n")
_GEOGRAPHIC_UNITS = {"degrees_north", "degree_north", "degrees_n", "degree_n", "degrees_east", "degree_east",
                     "degrees_e", "degree_e"}
_AXES = "XYZ"


def _attr(obj, key: str) -> str:
    value = obj.__dict__.get(key)
    return "" if value is None else str(value).strip()


def _check_netcdf(path: Path) -> None:
    """Refuse a file that does not start like NetCDF-3 or NetCDF-4/HDF5 (whose superblock may sit at 512, 1024, ...),
    and a classic file shorter than its header says (the netCDF library would read the missing bytes as zeros)."""
    with open(path, "rb") as f:
        head = f.read(2056)
    if len(head) < 4:
        raise ObservationError(f"observation file {path}: is empty or truncated ({len(head)} bytes), not NetCDF")
    if any(head[o:o + 8] == _MAGIC[3] for o in (0, 512, 1024, 2048)):
        return  # NetCDF-4: the HDF5 library refuses a truncated file itself
    if any(head.startswith(m) for m in _MAGIC[:3]):
        try:
            size = complete_size(path)
        except ValueError as exc:
            raise ObservationError(f"observation file {path}: is truncated or corrupted ({exc})") from None
        if size is not None and path.stat().st_size < size:
            raise ObservationError(f"observation file {path}: is truncated: it has {path.stat().st_size} bytes, but "
                                   f"its header places data up to byte {size}")
        return
    raise ObservationError(f"observation file {path}: is not a NetCDF file (it starts with {head[:12]!r}); give a "
                           "CF NetCDF file, or a .csv file for the CSV reader")


def _role(name: str, var) -> str | None:
    """``T``, ``X``, ``Y``, ``Z``, ``geo`` (latitude/longitude) or ``None`` for a possible coordinate variable."""
    axis, sn, units = _attr(var, "axis").upper(), _attr(var, "standard_name"), _attr(var, "units").lower()
    if axis == "T" or sn == "time" or (name == "time" and not axis):
        return "T"
    if sn in ("latitude", "longitude") or units in _GEOGRAPHIC_UNITS:
        return "geo"
    if axis and axis in _AXES:
        return axis
    if sn in ("projection_x_coordinate", "projection_y_coordinate"):
        return sn[11].upper()
    if name in ("x", "y", "z"):
        return name.upper()
    return None


@dataclass
class _Variable:
    """One data variable being read: its name, shape and the flat indices of its present values."""

    name: str
    request: VariableRequest
    dims: tuple
    shape: tuple
    kept: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))

    def prefix(self, path: Path) -> str:
        model = f" (for '{self.request.variable}')" if self.name != self.request.variable else ""
        return f"observation file {path}: variable '{self.name}'{model}"

    def observation(self, flat: int) -> str:
        if len(self.shape) < 2:
            return f"observation {flat}"
        where = ", ".join(f"{d} {i}" for d, i in zip(self.dims, np.unravel_index(flat, self.shape), strict=True))
        return f"observation {flat} ({where})"


@dataclass
class _Reader:
    """One open file and the reader's options: finds, loads and converts what a request needs."""

    path: Path
    nc: netCDF4.Dataset
    start: datetime | None
    model_time_units: str
    length_units: str
    error_std: float | None
    position_names: Sequence[str] | None
    ndim: int | None
    max_obs: int
    auxiliary: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    _links: dict = field(default_factory=dict)

    # -- loading ------------------------------------------------------------------------------------------------------
    def load(self, name: str, owner: str) -> np.ndarray:
        """Values of variable ``name`` as float64, missing ones NaN; refused before loading if too large."""
        var = self.nc.variables[name]
        if getattr(var.dtype, "kind", "O") not in "fiu":  # netCDF4 gives str for string variables
            raise ObservationError(f"{owner}: '{name}' is not numeric ({var.dtype})")
        check_count(self.path, var.size, self.max_obs, f"variable '{name}'")
        values = var[...]
        if np.ma.isMaskedArray(values):
            return np.ma.filled(values.astype(np.float64), np.nan)
        return np.asarray(values, dtype=np.float64)

    def feature_type(self) -> str:
        text = _attr(self.nc, "featureType")
        if not text:
            raise ObservationError(f"observation file {self.path}: has no global featureType attribute, so it is not a "
                                   "CF discrete sampling geometry (CF 1.10 chapter 9: point, timeSeries, trajectory)")
        if text.lower() not in FEATURE_TYPES:
            raise ObservationError(f"observation file {self.path}: featureType {text!r} is not read by twin (it reads "
                                   f"{', '.join(FEATURE_TYPES.values())})")
        return FEATURE_TYPES[text.lower()]

    def find(self, req: VariableRequest) -> str:
        names = list(self.nc.variables)
        if req.name or not req.standard_name:
            name = req.name or req.variable
            if name in self.nc.variables:
                return name
            raise ObservationError(f"observation file {self.path}: has no variable '{name}' (for '{req.variable}'; "
                                   f"it has {', '.join(names) or 'none'})")
        hits = [n for n in names if _attr(self.nc.variables[n], "standard_name") == req.standard_name]
        if len(hits) == 1:
            return hits[0]
        if not hits:
            present = sorted({_attr(v, "standard_name") for v in self.nc.variables.values()} - {""})
            raise ObservationError(f"observation file {self.path}: no variable has standard_name "
                                   f"'{req.standard_name}' (for '{req.variable}'; standard names in the file: "
                                   f"{', '.join(present) or 'none'})")
        raise ObservationError(f"observation file {self.path}: variables {', '.join(hits)} all have standard_name "
                               f"'{req.standard_name}'; name the one for '{req.variable}' with 'name'")

    # -- ragged arrays ------------------------------------------------------------------------------------------------
    def link(self, sample_dim: str, instance_dim: str) -> str | None:
        """The count or index variable that maps ``sample_dim`` onto ``instance_dim``, if any."""
        for name, var in self.nc.variables.items():
            if var.dimensions == (instance_dim,) and _attr(var, "sample_dimension") == sample_dim:
                return name
            if var.dimensions == (sample_dim,) and _attr(var, "instance_dimension") == instance_dim:
                return name
        return None

    def instance_of(self, v: _Variable, instance_dim: str) -> tuple[str, np.ndarray]:
        """The count or index variable, and the instance (station, trajectory) of every element of ``v``'s sample
        dimension (NaN where the index is missing or out of range)."""
        key = (v.dims[0], instance_dim)
        if key not in self._links:
            name = self.link(*key)
            var = self.nc.variables[name]
            values = self.load(name, v.prefix(self.path))
            n_obs, n_inst = self.nc.dimensions[v.dims[0]].size, self.nc.dimensions[instance_dim].size
            if var.dimensions == (instance_dim,):  # contiguous ragged array: counts per instance
                if not np.all(np.isfinite(values)) or np.any(values < 0) or values.sum() != n_obs:
                    raise ObservationError(f"{v.prefix(self.path)}: the row sizes in '{name}' sum to "
                                           f"{np.nansum(values):.0f} (or are missing or negative), but dimension "
                                           f"'{v.dims[0]}' has {n_obs} elements: the file is inconsistent")
                index = np.repeat(np.arange(n_inst, dtype=np.float64), values.astype(np.int64))
            else:  # indexed ragged array: the instance of each element
                index = np.where((values >= 0) & (values < n_inst), values, np.nan)
            self._links[key] = (name, index)
        return self._links[key]

    # -- coordinates --------------------------------------------------------------------------------------------------
    def reachable(self, v: _Variable, cdims: tuple) -> bool:
        if set(cdims) <= set(v.dims):
            return True
        return len(v.dims) == 1 and len(cdims) == 1 and self.link(v.dims[0], cdims[0]) is not None

    def coordinates(self, v: _Variable) -> dict[str, str]:
        """Role (``T``, ``X``, ``Y``, ``Z``, ``geo``) -> coordinate variable of ``v``."""
        var = self.nc.variables[v.name]
        listed = _attr(var, "coordinates").split()
        for c in listed:
            if c not in self.nc.variables:
                raise ObservationError(f"{v.prefix(self.path)}: its coordinates attribute names '{c}', which is not "
                                       "in the file")
        own = [d for d in v.dims if d in self.nc.variables]
        roles: dict[str, str] = {}
        for c in dict.fromkeys(listed + own + list(self.nc.variables)):
            if c == v.name:
                continue
            cvar = self.nc.variables[c]
            role = _role(c, cvar)
            if role is None or role in roles:
                continue
            if self.reachable(v, cvar.dimensions):
                roles[role] = c
            elif c in listed and role != "geo":
                raise ObservationError(f"{v.prefix(self.path)}: coordinate '{c}' has dimensions {cvar.dimensions} "
                                       f"that the variable's {v.dims} do not include, and no ragged-array count or "
                                       "index variable (sample_dimension / instance_dimension) links them")
        return roles

    def gather(self, v: _Variable, cname: str) -> np.ndarray:
        """Values of coordinate (or ancillary) ``cname`` for the present values of ``v``."""
        cdims = self.nc.variables[cname].dimensions
        values = self.load(cname, v.prefix(self.path))
        if not cdims:
            return np.full(v.kept.size, float(values))
        if cdims == v.dims and v.kept.size == values.size:  # every value present: no indexing, no copy
            return values.reshape(-1)
        if set(cdims) <= set(v.dims):
            index = np.unravel_index(v.kept, v.shape)
            return values[tuple(index[v.dims.index(d)] for d in cdims)]
        link, instance = self.instance_of(v, cdims[0])
        which = instance[v.kept]
        bad = np.flatnonzero(~np.isfinite(which))
        if bad.size:
            raise ObservationError(f"{v.prefix(self.path)}: {v.observation(int(v.kept[bad[0]]))} has no valid "
                                   f"'{cdims[0]}' in '{link}' (missing or out of range)")
        return values[which.astype(np.int64)]

    def present(self, v: _Variable, values: np.ndarray, what: str) -> np.ndarray:
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            raise ObservationError(f"{v.prefix(self.path)}: {v.observation(int(v.kept[bad[0]]))} has a value but "
                                   f"its {what} is missing ({bad.size} such observations)")
        return values

    def units_of(self, v: _Variable, name: str) -> str:
        units = _attr(self.nc.variables[name], "units")
        if not units:
            raise ObservationError(f"{v.prefix(self.path)}: '{name}' has no units attribute")
        return units

    def time(self, v: _Variable, roles: dict[str, str]) -> np.ndarray:
        if "T" not in roles:
            raise ObservationError(f"{v.prefix(self.path)}: missing time coordinate (a variable with axis T, "
                                   "standard_name time or the name time, listed in its coordinates attribute)")
        name = roles["T"]
        raw = self.present(v, self.gather(v, name), f"time ('{name}')")
        try:
            return to_model_time(raw, self.units_of(v, name), _attr(self.nc.variables[name], "calendar") or None,
                                 self.start, self.model_time_units)
        except ValueError as exc:
            raise ObservationError(f"{v.prefix(self.path)}: time coordinate '{name}': {exc}") from None

    def position_variables(self, v: _Variable, roles: dict[str, str]) -> list[str]:
        if self.position_names:
            for c in self.position_names:
                if c not in self.nc.variables:
                    raise ObservationError(f"{v.prefix(self.path)}: missing coordinate '{c}' (named in "
                                           "position_names)")
                if not self.reachable(v, self.nc.variables[c].dimensions):
                    raise ObservationError(f"{v.prefix(self.path)}: coordinate '{c}' has dimensions "
                                           f"{self.nc.variables[c].dimensions} unrelated to the variable's {v.dims}")
            return list(self.position_names)
        wanted = _AXES[:self.ndim] if self.ndim else _AXES
        names = []
        for axis in wanted:
            if axis in roles:
                names.append(roles[axis])
            elif self.ndim or axis == "X":
                hint = (" (it has latitude/longitude: project them onto the model's x/y first, or name the "
                        "position variables with position_names)" if "geo" in roles else "")
                raise ObservationError(f"{v.prefix(self.path)}: missing coordinates: no {axis.lower()} position "
                                       f"(a variable with axis {axis}, standard_name projection_"
                                       f"{axis.lower()}_coordinate or the name {axis.lower()}){hint}")
            else:
                break
        return names

    def position(self, v: _Variable, roles: dict[str, str]) -> np.ndarray:
        columns = []
        for name in self.position_variables(v, roles):
            raw = self.present(v, self.gather(v, name), f"position '{name}'")
            try:
                columns.append(convert_cf(raw, self.units_of(v, name), self.length_units))
            except ValueError as exc:
                raise ObservationError(f"{v.prefix(self.path)}: coordinate '{name}': {exc} (the model's length units "
                                       f"are {self.length_units!r})") from None
        return np.column_stack(columns)

    def auxiliary_values(self, v: _Variable) -> dict[str, np.ndarray]:
        """The auxiliary variables asked for (``{key: (file variable, units)}``), per present value of ``v``."""
        out = {}
        for key, (name, units) in self.auxiliary.items():
            if name not in self.nc.variables:
                raise ObservationError(f"{v.prefix(self.path)}: its {key} variable '{name}' is not in the file (it "
                                       f"has {', '.join(self.nc.variables)})")
            if not self.reachable(v, self.nc.variables[name].dimensions):
                raise ObservationError(f"{v.prefix(self.path)}: {key} variable '{name}' has dimensions "
                                       f"{self.nc.variables[name].dimensions} unrelated to the variable's {v.dims}")
            raw = self.present(v, self.gather(v, name), f"{key} ('{name}')")
            try:
                out[key] = convert_cf(raw, self.units_of(v, name), units)
            except ValueError as exc:
                raise ObservationError(f"{v.prefix(self.path)}: {key} variable '{name}': {exc} (wanted in "
                                       f"{units!r})") from None
        return out

    def _error_variables(self, v: _Variable) -> list[str]:
        """The variable named by the request's ``error``, else the ancillary variables with a ``standard_error``
        standard name."""
        if v.request.error:
            if v.request.error not in self.nc.variables:
                raise ObservationError(f"{v.prefix(self.path)}: error variable '{v.request.error}' is not in the file")
            return [v.request.error]
        found = []
        for a in _attr(self.nc.variables[v.name], "ancillary_variables").split():
            if a not in self.nc.variables:
                raise ObservationError(f"{v.prefix(self.path)}: its ancillary_variables attribute names '{a}', which "
                                       "is not in the file")
            if _attr(self.nc.variables[a], "standard_name").split()[-1:] == ["standard_error"]:
                found.append(a)
        return found

    def error(self, v: _Variable) -> np.ndarray:
        for a in self._error_variables(v):
            if not self.reachable(v, self.nc.variables[a].dimensions):
                raise ObservationError(f"{v.prefix(self.path)}: standard error '{a}' has dimensions "
                                       f"{self.nc.variables[a].dimensions} unrelated to the variable's {v.dims}")
            raw = self.gather(v, a)
            try:
                err = convert_cf_difference(raw, self.units_of(v, a), v.request.units)
            except ValueError as exc:
                raise ObservationError(f"{v.prefix(self.path)}: standard error '{a}': {exc}") from None
            bad = np.flatnonzero(~(np.isfinite(err) & (err > 0)))
            if bad.size:
                raise ObservationError(f"{v.prefix(self.path)}: {v.observation(int(v.kept[bad[0]]))} has standard "
                                       f"error {raw[bad[0]]!r} in '{a}'; errors must be positive and finite where a "
                                       f"value is present ({bad.size} such observations)")
            return err
        default = v.request.error_std if v.request.error_std is not None else self.error_std
        if default is None:
            raise ObservationError(f"{v.prefix(self.path)}: no observation error: the file has no ancillary variable "
                                   "with a 'standard_error' standard_name for it, and neither error (the file's "
                                   "error variable) nor error_std is given")
        return np.full(v.kept.size, float(default))

    # -- one variable -------------------------------------------------------------------------------------------------
    def read(self, name: str, req: VariableRequest, feature: str) -> ObservationTable:
        var = self.nc.variables[name]
        v = _Variable(name, req, tuple(var.dimensions), tuple(var.shape))
        allowed = (1,) if feature == "point" else (1, 2)
        if len(v.dims) not in allowed:
            raise ObservationError(f"{v.prefix(self.path)}: has dimensions {v.dims}, but a {feature} variable has "
                                   + ("one (obs)" if feature == "point" else "one or two (instance, element)"))
        units = self.units_of(v, name)
        data = self.load(name, v.prefix(self.path)).reshape(-1)
        infinite = np.flatnonzero(np.isinf(data))
        if infinite.size:  # as the CSV reader: an infinity is no measurement and no missing value either
            raise ObservationError(f"{v.prefix(self.path)}: {v.observation(int(infinite[0]))} is {data[infinite[0]]:g} "
                                   f"({infinite.size} infinite values): a measurement is finite; write a missing "
                                   "value as _FillValue, missing_value or NaN")
        present = np.isfinite(data)
        v.kept = np.flatnonzero(present)
        if v.kept.size == 0:
            raise ObservationError(f"{v.prefix(self.path)}: all {data.size} values are missing (_FillValue, "
                                   "missing_value, outside valid_range or NaN)")
        try:
            value = convert_cf(data[v.kept], units, req.units)
        except ValueError as exc:
            raise ObservationError(f"{v.prefix(self.path)}: {exc} (the model's units of '{req.variable}' are "
                                   f"{req.units!r})") from None
        roles = self.coordinates(v)
        return ObservationTable(self.time(v, roles), self.position(v, roles), req.variable, value, self.error(v),
                                v.kept, str(self.path), "", {req.variable: req.units},
                                {req.variable: int(data.size - v.kept.size)}, self.model_time_units,
                                self.length_units, self.auxiliary_values(v))


def read_dsg(path, variables: Mapping[str, Mapping | VariableRequest], *, start: datetime | None = None,
             model_time_units: str = "s", length_units: str = "m", error_std: float | None = None,
             position_names: Sequence[str] | None = None, ndim: int | None = None,
             max_obs: int = DEFAULT_MAX_OBS,
             auxiliary: Mapping[str, tuple[str, str]] | None = None) -> ObservationTable:
    """Read observations from a CF-DSG NetCDF file (see the module docstring).

    Parameters
    ----------
    path : str or Path
    variables : mapping
        Model variable -> request: a mapping ``{name | standard_name, units, [error_std]}`` or a
        :class:`~twin.observations.table.VariableRequest`; ``units`` are the model's units of that variable.
    start : datetime, optional
        The campaign's start instant (:func:`twin.core.calendar.parse_start`); ``None``: 1970-01-01T00:00Z.
    model_time_units, length_units : str
        The model's units of time and length; the table's times count from ``start`` in ``model_time_units``.
    error_std : float, optional
        Observation error standard deviation (in each variable's units) when neither the file nor the request has
        one.
    position_names : sequence of str, optional
        The file variables holding the position coordinates, in axis order; by default those with axis X, Y, Z.
    ndim : int, optional
        How many position coordinates the model has (1 to 3); by default as many of x, y, z as the file has.
    max_obs : int
        Refuse a file whose requested variables hold more values than this, before reading them.
    auxiliary : mapping, optional
        ``{key: (file variable, units)}``: auxiliary variables gathered for every observation (see the module
        docstring), in ``table.auxiliary[key]`` converted to ``units``.

    Returns
    -------
    ObservationTable
        The present values of every requested variable, in request order, each in file order.

    Raises
    ------
    ObservationError
        One line naming the file (and the variable and observation where there is one) for a file that does not
        exist or is not (complete) NetCDF, a featureType other than point/timeSeries/trajectory, a missing variable or
        coordinate or auxiliary variable, missing or unconvertible units, an all-missing variable, a present value
        without time, position, auxiliary value or a positive error, and too many values.
    """
    p = existing_file(path)
    try:
        reqs = parse_requests(variables)
    except ValueError as exc:
        raise ObservationError(f"observation file {p}: {exc}") from None
    if ndim is not None and not 1 <= ndim <= 3:
        raise ValueError(f"ndim must be 1, 2 or 3, got {ndim}")
    if position_names is not None and ndim is not None and len(position_names) != ndim:
        raise ValueError(f"{len(position_names)} position_names for ndim={ndim}")
    _check_netcdf(p)
    sha256 = file_sha256(p)
    try:
        with netCDF4.Dataset(p, "r") as nc:
            reader = _Reader(p, nc, start, model_time_units, length_units, error_std, position_names, ndim, max_obs,
                             dict(auxiliary or {}))
            feature = reader.feature_type()
            names = [reader.find(r) for r in reqs]
            check_count(p, sum(nc.variables[n].size for n in names), max_obs,
                        f"variable(s) {', '.join(dict.fromkeys(names))}")
            parts = [reader.read(n, r, feature) for n, r in zip(names, reqs, strict=True)]
    except (OSError, RuntimeError) as exc:
        raise ObservationError(f"observation file {p}: cannot be read ({exc}); the file is truncated or corrupted"
                               ) from None
    return concatenate(parts, str(p), sha256, model_time_units, length_units)


__all__ = ["FEATURE_TYPES", "read_dsg"]
