"""What the live-twin tests (``twin assimilate``: tests/integration/test_live_*.py) share: the ``twin`` command in a
subprocess, station files cut from a twin experiment's observations written with plain netCDF4, and a variable of an
output file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import netCDF4
import numpy as np
import xarray as xr


def twin(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``python -m twin.cli ARGS`` in ``cwd``."""
    return subprocess.run([sys.executable, "-m", "twin.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, check=False)


def ok(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """:func:`twin`, which must exit 0."""
    out = twin(cwd, *args)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


def station_file(path: Path, obs: dict, columns, times=None) -> Path:
    """The observations ``obs`` (``y``, ``e`` of shape (stations, times), ``t``, ``x``, optional variable ``name``)
    of ``columns`` as a CF-1.10 timeSeries file (one station per grid point, positions in m), or at ``times``."""
    y, e = obs["y"][:, columns], obs["e"][:, columns]
    t = obs["t"][columns] if times is None else np.asarray(times, dtype=float)
    name = obs.get("name", "obs_x")
    with netCDF4.Dataset(path, "w") as nc:
        nc.Conventions, nc.featureType = "CF-1.10", "timeSeries"
        nc.createDimension("station", y.shape[0])
        nc.createDimension("time", t.size)
        x = nc.createVariable("x", "f8", ("station",))
        x.units, x.axis, x.standard_name = "m", "X", "projection_x_coordinate"
        x[:] = obs["x"]
        nc.createVariable("station_id", "i4", ("station",)).cf_role = "timeseries_id"
        tv = nc.createVariable("time", "f8", ("time",))
        tv.units, tv.standard_name = "1", "time"  # Lorenz-96 counts dimensionless time
        tv[:] = t
        v = nc.createVariable(name, "f8", ("station", "time"), fill_value=-9999.0)
        v.units, v.coordinates = "1", "time x"
        v[:] = y
        err = nc.createVariable(f"{name}_error", "f8", ("station", "time"))
        err.units = "1"
        err[:] = e
    return path


def values(path: Path, name: str) -> np.ndarray:
    """Variable ``name`` of a NetCDF output, times not decoded."""
    with xr.open_dataset(path, decode_times=False) as ds:
        return ds[name].values.copy()
