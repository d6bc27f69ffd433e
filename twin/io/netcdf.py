"""CF-1.10 NetCDF outputs: ensembles (posterior / forecast) and per-cycle diagnostics.

Both are written by rank 0 (fields are gathered first: :func:`gather_members`), atomically
(:mod:`twin.io.atomic`), with long_name and units on every variable, standard_name where the CF table has one, the
provenance record as global attributes prefixed ``twin_`` (:mod:`twin.io.provenance`), and a digest of the stored
values ``twin_data_sha256`` (SHA-256 over every variable's raw bytes, in sorted name order) that
:func:`verify_netcdf` and ``twin inspect`` check. They are plain NetCDF-4 files: ``xarray.open_dataset`` and ``ncdump``
read them.

Ensemble file (``posterior.nc``, ``forecast.nc``; global ``twin_kind`` = ``posterior`` | ``forecast``)::

    dimensions: member, time, [z,] y, x
    member(member)  int    standard_name=realization        ensemble member index (0-based)
    time(time)      double standard_name=time, axis=T       units "seconds since <epoch>"
    x(x), y(y), z(z) double axis=X/Y/Z, units of the grid    cell centres (or nodes) of the twin Grid
    <var>(member, time, [z,] y, x)  zlib-compressed (``outputs.compression``, level 1 by default), chunked one
                                    member and a few times per chunk (:func:`ensemble_chunks`)

Diagnostics file (``diagnostics.nc``; ``twin_kind`` = ``diagnostics``): ``time`` is the unlimited record dimension and
:class:`DiagnosticsFile` appends one record per cycle (``cycle(time)``, RMSE, spread, innovation statistics, coupling
iterations, cost, gradient norm, ...); a variable first seen at a later cycle is filled with missing values before.

Observation files are not written here: a twin experiment writes its observations as the CF discrete-sampling-geometry
file a real system would send (:mod:`twin.observations.export`), and every observation file is read by
:mod:`twin.observations.dsg`.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import netCDF4
import numpy as np

from twin.core.errors import OutputError
from twin.core.grid import Grid
from twin.core.log import get_logger
from twin.io.atomic import as_mpi_comm, atomic_output, root_call
from twin.io.provenance import Provenance, utc_now

if TYPE_CHECKING:  # xarray (and pandas under it, 0.3 s) is imported where a dataset is built or read: a step that
    import xarray as xr  # appends diagnostics or writes observations with netCDF4 does not pay for it (issue 23)

log = get_logger("twin.io.netcdf")

CONVENTIONS = "CF-1.10"
DEFAULT_TIME_UNITS = "seconds since 1970-01-01 00:00:00"
CHECKSUM_ATTR = "twin_data_sha256"
_AXES = ("x", "y", "z")
#: the coordinates of an ensemble file (:func:`ensemble_dataset`), which no field variable can be named
ENSEMBLE_COORDINATES = ("member", "time", *_AXES)


@dataclass(frozen=True)
class VariableMeta:
    """CF metadata of one variable: ``long_name`` and ``units`` always, ``standard_name`` where one exists. ``units``
    ``None``: a number that has none, an aggregate over quantities of different units (an RMSE over h in m and u in
    m/s together), whose ``long_name`` says so; no ``units`` attribute is written rather than a wrong one."""

    long_name: str
    units: str | None
    standard_name: str | None = None

    def attrs(self) -> dict[str, str]:
        out = {"long_name": self.long_name}
        if self.units is not None:
            out["units"] = self.units
        if self.standard_name:
            out["standard_name"] = self.standard_name
        return out


#: how the long_name of a statistic over state variables of different units names them (:func:`of_state`), which the
#: report's axes read back (:func:`twin.report.figures._axis_units`)
MIXED_UNITS = ", over the state variables together ({mix}: mixed units)"


def of_state(meta: VariableMeta, state_units: str | None, state_mix: str = "") -> VariableMeta:
    """``meta`` with ``{state}`` in its units replaced by the state's units (``{state}2``, a variance: squared); with
    ``state_units`` ``None`` (variables of different units, named by ``state_mix``) without units and with a
    ``long_name`` that says the number mixes them."""
    units = meta.units
    if units is None or "{state}" not in units:
        return meta
    if state_units is None:
        return VariableMeta(meta.long_name + MIXED_UNITS.format(mix=state_mix), None, meta.standard_name)
    if units == "{state}2":
        squared = "1" if state_units in ("", "1") else \
            f"({state_units})^2" if "/" in state_units or " " in state_units else f"{state_units}^2"
        return VariableMeta(meta.long_name, squared, meta.standard_name)
    return VariableMeta(meta.long_name, units.replace("{state}", state_units), meta.standard_name)


#: Metadata of the usual diagnostics; ``{state}`` is replaced by the state units given to :class:`DiagnosticsFile`.
DIAGNOSTICS = {
    "rmse": VariableMeta("root-mean-square error of the analysis mean against the truth", "{state}"),
    "rmse_forecast": VariableMeta("root-mean-square error of the forecast mean against the truth", "{state}"),
    "spread": VariableMeta("ensemble spread (root-mean ensemble variance)", "{state}"),
    "spread_forecast": VariableMeta("forecast ensemble spread", "{state}"),
    "innovation_mean": VariableMeta("mean of the innovations y - H(x_f)", "{state}"),
    "innovation_std": VariableMeta("standard deviation of the innovations", "{state}"),
    "innovation_chi2": VariableMeta("normalised innovation statistic d^T (HPH^T + R)^-1 d / p", "1"),
    "n_obs": VariableMeta("number of observations assimilated", "1"),
    "inflation": VariableMeta("multiplicative covariance inflation factor", "1"),
    "coupling_iterations": VariableMeta("coupling iterations in the window", "1"),
    "cost": VariableMeta("value of the cost function at the analysis", "1"),
    "cost_initial": VariableMeta("value of the cost function at the background", "1"),
    "gradient_norm": VariableMeta("norm of the cost-function gradient at the analysis", "1"),
    "wall_time": VariableMeta("wall-clock time of the cycle", "s"),
}


def time_attributes(time_units: str) -> dict[str, str]:
    """CF attributes of a time coordinate: a CF time (``seconds since ...``) with its calendar; a model's own time
    without units of time (Lorenz-96's ``"1"``) is the axis T without the standard name or calendar, which CF gives
    times of a time unit only."""
    if " since " not in time_units:
        return {"long_name": "model time", "axis": "T", "units": time_units}
    return {"standard_name": "time", "long_name": "time", "axis": "T", "units": time_units, "calendar": "standard"}


def position_attributes(axis: str) -> dict[str, str]:
    """CF attributes of a Cartesian model coordinate: x and y are projection coordinates (not longitude/latitude,
    which a checker would otherwise infer from ``axis``); z is a height, positive up."""
    if axis == "z":
        return {"axis": "Z", "positive": "up"}
    return {"axis": axis.upper(), "standard_name": f"projection_{axis}_coordinate"}


def _global_attrs(kind: str, title: str, provenance: Provenance | None) -> dict[str, Any]:
    import twin

    attrs = {"Conventions": CONVENTIONS, "title": title, "source": f"twin {twin.__version__}",
             "history": f"{utc_now()}: written by twin.io.netcdf", "twin_kind": kind}
    if provenance is not None:
        for key, value in provenance.finished().attrs().items():
            attrs[key if key.startswith("twin_") else f"twin_{key}"] = value
    return attrs


def global_attributes(kind: str, title: str, provenance: Provenance | None) -> dict[str, Any]:
    """The global attributes every twin NetCDF file carries (Conventions, title, source, history, provenance), for
    writers of their own (e.g. an xarray Dataset's ``attrs``)."""
    return _global_attrs(kind, title, provenance)


def record_checksum(tmp: str | Path) -> None:
    """Record the data digest in a just-written file (before it is renamed into place), as every twin writer does,
    so that ``twin inspect`` verifies it."""
    _finish(Path(tmp))


def _finish(tmp: Path) -> None:
    """Record the data digest in a just-written temporary file."""
    with netCDF4.Dataset(tmp, "a") as nc:
        nc.setncattr(CHECKSUM_ATTR, _data_digest(nc))


def _data_digest(nc: netCDF4.Dataset) -> str:
    h = hashlib.sha256()
    for name in sorted(nc.variables):
        var = nc.variables[name]
        var.set_auto_maskandscale(False)
        var.set_auto_chartostring(False)
        data = var[...]
        h.update(f"{name}:{var.dtype}:{var.shape};".encode())
        if var.dtype is str or np.asarray(data).dtype.kind == "O":
            h.update("\x00".join(str(s) for s in np.asarray(data).ravel()).encode("utf-8"))
        else:
            a = np.ascontiguousarray(np.asarray(data), dtype=np.asarray(data).dtype.newbyteorder("<"))
            h.update(memoryview(a).cast("B") if a.size else b"")
    return "sha256:" + h.hexdigest()


def verify_netcdf(path) -> tuple[bool | None, str]:
    """Check a twin NetCDF file's data digest: ``(True, "ok")``, ``(False, why)``, or ``(None, "no checksum")``."""
    try:
        with netCDF4.Dataset(path, "r") as nc:
            recorded = getattr(nc, CHECKSUM_ATTR, None)
            if recorded is None:
                return None, "no checksum recorded"
            actual = _data_digest(nc)
    except (OSError, RuntimeError, ValueError) as exc:
        return False, f"unreadable ({exc})"
    if actual != recorded:
        return False, "data do not match the recorded checksum (modified or corrupted)"
    return True, "ok"


def _write_dataset(path, ds: xr.Dataset, encoding: dict, comm, sensitive: bool, unlimited=()) -> Path:
    """Rank 0 writes ``ds`` atomically; collective over ``comm``."""
    comm = as_mpi_comm(comm)
    rank = comm.Get_rank() if comm is not None else 0
    # the values uncompressed and 64 KiB of structure: the most the file takes (HDF5 must not meet a full disk)
    reserve = int(ds.nbytes) + (1 << 16) if ds is not None else 0
    with atomic_output(path, comm, private=sensitive, reserve=reserve) as tmp:
        if rank == 0:
            ds.to_netcdf(tmp, mode="w", format="NETCDF4", engine="netcdf4", encoding=encoding,
                         unlimited_dims=list(unlimited))
            _finish(tmp)
    log.info("wrote %s", path)
    return Path(path)


# -- ensembles ---------------------------------------------------------------------------------------------------------
def gather_members(grid: Grid, vecs: Sequence) -> np.ndarray | None:
    """Stack the gathered fields of ``vecs`` (one per member) on rank 0: shape ``(member,) + grid.shape[::-1]``."""
    parts = [grid.gather(v) for v in vecs]
    return np.stack(parts) if parts and parts[0] is not None else None


def ensemble_dataset(grid: Grid, fields: Mapping[str, np.ndarray], times: Sequence[float], *,
                     variables: Mapping[str, VariableMeta], kind: str = "posterior",
                     time_units: str = DEFAULT_TIME_UNITS, space_units: str = "m", title: str | None = None,
                     provenance: Provenance | None = None) -> xr.Dataset:
    """The CF ensemble dataset (not written); ``fields[name]`` has shape ``(member, time) + grid.shape[::-1]``.

    Raises
    ------
    OutputError
        If a field has the wrong shape, the members differ between fields, or a variable has no metadata.
    """
    times = np.atleast_1d(np.asarray(times, dtype=float))
    spatial = tuple(grid.shape[::-1])
    dims = ("member", "time") + tuple(reversed(_AXES[:grid.dim]))
    n_members = None
    data_vars = {}
    for name, values in fields.items():
        values = np.asarray(values)
        if name not in variables:
            raise OutputError(f"ensemble variable '{name}' has no metadata: give variables={{'{name}': "
                              "VariableMeta(long_name, units[, standard_name])}")
        if values.ndim != 2 + grid.dim or values.shape[1:] != (len(times),) + spatial:
            raise OutputError(f"ensemble variable '{name}' has shape {values.shape}, expected (member, "
                              f"{len(times)}) + {spatial} for {len(times)} times on grid {grid.shape}")
        if n_members is not None and values.shape[0] != n_members:
            raise OutputError(f"ensemble variable '{name}' has {values.shape[0]} members, others {n_members}")
        n_members = values.shape[0]
        data_vars[name] = (dims, values, variables[name].attrs())
    coords = {"member": ("member", np.arange(n_members or 0, dtype=np.int32),
                         {"standard_name": "realization", "long_name": "ensemble member index", "units": "1"}),
              "time": ("time", times, time_attributes(time_units))}
    where = "cell centre" if grid.centering == "cell" else "node"
    for axis in range(grid.dim):
        name = _AXES[axis]
        coords[name] = (name, grid.axis_coordinates(axis),
                        {"long_name": f"{name} coordinate of {where}", "units": space_units,
                         **position_attributes(name)})
    import xarray as xr

    title = title or f"twin {kind} ensemble"
    return xr.Dataset(data_vars, coords=coords, attrs=_global_attrs(kind, title, provenance))


#: values per chunk of an ensemble variable, at least (256 KiB of doubles): a chunk per member and time of a small
#: model (40 values) made compressing the chunks, not the values, the cost of writing the file
CHUNK_VALUES = 1 << 15


def ensemble_chunks(shape: Sequence[int]) -> tuple[int, ...]:
    """Chunk sizes of an ensemble variable ``(member, time) + spatial``: one member, one field, and at most as many
    times as make :data:`CHUNK_VALUES` (one time for fields of that size or more; a map of one time reads one chunk
    per member, a member's history few), spread evenly over the fewest chunks that hold all the times: the last
    chunk is as full as the others (1001 times in chunks of 819 stored 1638 per member, 64 % more than the values
    when uncompressed; in two of 501, 1002)."""
    spatial = tuple(int(n) for n in shape[2:])
    n_times = max(1, int(shape[1]))
    most = max(1, min(n_times, CHUNK_VALUES // max(1, int(np.prod(spatial)))))
    n_chunks = -(-n_times // most)
    return (1, -(-n_times // n_chunks)) + spatial


def write_ensemble(path, grid: Grid, fields: Mapping[str, np.ndarray] | None, times: Sequence[float], *,
                   comm=None, variables: Mapping[str, VariableMeta], kind: str = "posterior",
                   time_units: str = DEFAULT_TIME_UNITS, space_units: str = "m", title: str | None = None,
                   provenance: Provenance | None = None, sensitive: bool = False, complevel: int = 1,
                   dtype: str = "f8") -> Path:
    """Write an ensemble file (collective over ``comm``; ``fields`` is needed on rank 0 only).

    ``fields[name]``: ``(member, time) + grid.shape[::-1]`` arrays, e.g. ``np.stack([gather_members(...) ...],
    axis=1)``. ``dtype="f4"`` halves the file size. See the module docstring for the layout.
    """
    built: dict = {}

    def build() -> None:
        built["ds"] = ensemble_dataset(grid, fields or {}, times, variables=variables, kind=kind,
                                       time_units=time_units, space_units=space_units, title=title,
                                       provenance=provenance)

    root_call(comm, build)  # a bad input on rank 0 raises on every rank, before any file is created
    ds = built.get("ds")
    encoding = {}
    if ds is not None:
        for name, var in ds.data_vars.items():
            encoding[name] = {"zlib": complevel > 0, "complevel": int(complevel), "dtype": dtype, "_FillValue": np.nan,
                              "chunksizes": ensemble_chunks(var.shape)}
        for name in ds.coords:
            encoding[name] = {"_FillValue": None}
    return _write_dataset(path, ds, encoding, comm, sensitive)


def read_ensemble(path) -> xr.Dataset:
    """Open an ensemble file with xarray (times kept as numbers in ``time_units``); loads it into memory."""
    import xarray as xr

    with xr.open_dataset(path, decode_times=False) as ds:
        return ds.load()


# -- diagnostics -------------------------------------------------------------------------------------------------------
#: ``cycle`` of a diagnostics record that belongs to no assimilation cycle (after the last analysis)
NO_CYCLE = -1
#: global attribute of a diagnostics file: the records it holds once its run has finished (:class:`DiagnosticsFile`)
EXPECTED_RECORDS = "twin_expected_records"


class DiagnosticsFile:
    """A diagnostics file with ``time`` as the unlimited record dimension, one record appended per cycle.

    Each :meth:`append` copies the (small) file to a temporary name, appends the record there and renames it into
    place, so the file on disk is always complete.

    Parameters
    ----------
    path : path-like
    comm : communicator, optional
        Rank 0 writes; :meth:`append` is collective.
    provenance : Provenance, optional
    variables : mapping, optional
        Metadata of diagnostics not in :data:`DIAGNOSTICS` (or overriding them).
    state_units : str or None
        Units of state-like diagnostics (RMSE, spread, innovations); ``None`` when the state's variables have different
        units, which ``state_mix`` names (``"h [m], u [m/s], v [m/s]"``): those diagnostics get no ``units`` and a
        ``long_name`` that says they mix them (:class:`VariableMeta`).
    time_units : str
    sensitive : bool
        Owner-only file.
    expected_records : int, optional
        The records the file holds when its run has finished (global attribute ``twin_expected_records``): a reader
        tells a run that stopped early from one that ended (a forecast's ``qoi.nc``, written as it goes).
    """

    def __init__(self, path, comm=None, *, provenance: Provenance | None = None,
                 variables: Mapping[str, VariableMeta] | None = None, state_units: str | None = "1",
                 time_units: str = DEFAULT_TIME_UNITS, title: str = "twin diagnostics", sensitive: bool = False,
                 state_mix: str = "", expected_records: int | None = None):
        self.expected_records = expected_records
        self.path = Path(path)
        self.comm = as_mpi_comm(comm)
        self.rank = self.comm.Get_rank() if self.comm is not None else 0
        self.provenance = provenance
        self.time_units = time_units
        self.title = title
        self.sensitive = sensitive
        self.meta = {k: of_state(v, state_units, state_mix) for k, v in DIAGNOSTICS.items()}
        self.meta.update(variables or {})

    def meta_of(self, name: str) -> VariableMeta:
        """The metadata of diagnostic ``name`` (a known one, or ``<known>_<suffix>``); OutputError otherwise."""
        return self._meta(name)

    def _meta(self, name: str) -> VariableMeta:
        if name in self.meta:
            return self.meta[name]
        base = max((k for k in self.meta if name.startswith(k + "_")), key=len, default=None)
        if base is None:
            raise OutputError(f"diagnostics {self.path}: variable '{name}' has no metadata; pass variables="
                              f"{{'{name}': VariableMeta(long_name, units)}} (known: {', '.join(sorted(self.meta))})")
        m = self.meta[base]
        return VariableMeta(f"{m.long_name} ({name[len(base) + 1:]})", m.units, m.standard_name)

    def append(self, time: float, values: Mapping[str, float], *, cycle: int | None = None) -> int:
        """Append one record (collective); returns the number of records now in the file."""
        for name in values:
            self._meta(name)
        return root_call(self.comm, lambda: self._append(float(time), dict(values), cycle))

    def extend(self, records) -> int:
        """Append several records ``(time, values, cycle)`` in one rewrite of the file (collective): what
        :meth:`append` does record by record, at the cost of one copy of the file instead of one per record (a
        long campaign's queued records otherwise cost a time quadratic in the cycle count). Returns the number of
        records now in the file."""
        records = [(float(t), dict(v), c) for t, v, c in records]
        if not records:
            raise OutputError(f"diagnostics {self.path}: no record to append")
        for _, values, _ in records:
            for name in values:
                self._meta(name)
        return root_call(self.comm, lambda: self._append_many(records))

    def _append(self, time: float, values: dict, cycle: int | None) -> int:
        return self._append_many([(time, values, cycle)])

    def _append_many(self, records) -> int:
        # the copy of the file so far, one record and 64 KiB of structure (HDF5 must not meet a full disk)
        size = self.path.stat().st_size if self.path.exists() else 0
        with atomic_output(self.path, None, private=self.sensitive,
                           reserve=size + sum(16 * (len(v) + 2) for _, v, _ in records) + (1 << 16)) as tmp:
            fresh = not self.path.exists()
            if not fresh:
                shutil.copyfile(self.path, tmp)
            with netCDF4.Dataset(tmp, "w" if fresh else "a", format="NETCDF4") as nc:
                if fresh:
                    nc.createDimension("time", None)
                    t = nc.createVariable("time", "f8", ("time",))
                    t.setncatts(time_attributes(self.time_units))
                    # records after the last analysis (a free run over the forecast horizon) have no cycle: the
                    # variable's fill value, which ncdump shows as _ and xarray reads as missing
                    beyond = any(c is None for _, _, c in records)
                    c = nc.createVariable("cycle", "i4", ("time",), fill_value=NO_CYCLE if beyond else False)
                    c.setncatts({"long_name": "assimilation cycle index" + (
                        " (none after the last analysis)" if beyond else ""), "units": "1"})
                nc.setncatts(_global_attrs("diagnostics", self.title, self.provenance))
                if self.expected_records is not None:
                    nc.setncattr(EXPECTED_RECORDS, np.int32(self.expected_records))
                # one write per variable for all the records (a write per value cost more than the values)
                n, m = len(nc.dimensions["time"]), len(records)
                nc.variables["time"][n:n + m] = np.array([t for t, _, _ in records], dtype=float)
                nc.variables["cycle"][n:n + m] = np.array([NO_CYCLE if c is None else int(c) for _, _, c in records],
                                                          dtype=np.int32)
                columns: dict[str, np.ndarray] = {}
                for j, (_, values, _) in enumerate(records):
                    for name, value in values.items():
                        if name not in columns:
                            if name not in nc.variables:
                                integer = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
                                var = nc.createVariable(name, "i4" if integer else "f8", ("time",),
                                                        fill_value=-2147483647 if integer else np.nan, zlib=True)
                                var.setncatts(self._meta(name).attrs())
                            var = nc.variables[name]
                            # a record without this variable keeps its fill value, as if never written
                            fill = getattr(var, "_FillValue", netCDF4.default_fillvals[var.dtype.str[1:]])
                            columns[name] = np.full(m, fill, dtype=var.dtype)
                        columns[name][j] = value
                for name, column in columns.items():
                    nc.variables[name][n:n + m] = column
            _finish(tmp)
        return n + m

    def write_summary(self, values: Mapping[str, float], meta: Mapping[str, VariableMeta]) -> None:
        """Scalar variables without a dimension (e.g. time averages after the burn-in), replacing earlier values;
        the file must exist. Collective."""
        root_call(self.comm, lambda: self._write_summary(dict(values), dict(meta)))

    def _write_summary(self, values: dict, meta: dict) -> None:
        with atomic_output(self.path, None, private=self.sensitive) as tmp:
            shutil.copyfile(self.path, tmp)
            with netCDF4.Dataset(tmp, "a", format="NETCDF4") as nc:
                for name, value in values.items():
                    var = nc.variables[name] if name in nc.variables else nc.createVariable(name, "f8", ())
                    var.setncatts(meta[name].attrs())
                    var.assignValue(float(value))
            _finish(tmp)

    def read(self) -> xr.Dataset:
        """The whole file, loaded (times as numbers)."""
        import xarray as xr

        with xr.open_dataset(self.path, decode_times=False) as ds:
            return ds.load()
