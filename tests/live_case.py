"""What the live-twin tests (``twin assimilate``: tests/integration/test_live_*.py) share: the ``twin`` command in a
subprocess, station files cut from a twin experiment's observations written with plain netCDF4, the live run those
files are delivered to (:func:`deliver_in_three`), and a variable of an output file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import netCDF4
import numpy as np
import xarray as xr

#: the twin experiment's synthetic network and the same observations read from a file
NETWORK = "observations: [{type: all_points, component: 0, error_std: 1.0}]"
FILE_NETWORK = ("observations: [{type: file, file: %s, variables: {x: {name: obs_x, error: obs_x_error, "
                "units: '1'}}}]")


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


def deliver_in_three(d: Path, text: str, experiment: str, cycles: str, live_cycles: str,
                     keep: str | None = None) -> dict:
    """The twin experiment of campaign ``text`` (observed by :data:`NETWORK`), its observations (``observations.nc``
    of ``experiment``) as one file and cut into three of four observation times each, one campaign over the whole
    file (``all``) and a live run of the first part (``live``: ``cycles`` replaced by ``live_cycles``) to which
    ``twin assimilate`` delivers the second and third; ``keep``: a copy of the live run before the deliveries.
    Returns ``{"dir", "obs", "parts", "runs"}`` (``runs``: the two deliveries' completed processes)."""
    (d / "twin.yaml").write_text(text)
    ok(d, "run", "twin.yaml", "-o", "experiment", "--quiet")
    with xr.open_dataset(d / "experiment" / "experiments" / experiment / "observations.nc", decode_times=False) as ds:
        obs = {"y": ds["obs_x"].values, "e": ds["obs_x_error"].values, "t": ds["time"].values,
               "x": ds["obs_x_x"].values}
    station_file(d / "all.nc", obs, slice(0, obs["y"].shape[1]))
    parts = [station_file(d / f"part{i + 1}.nc", obs, slice(4 * i, 4 * i + 4)) for i in range(3)]
    (d / "all.yaml").write_text(text.replace(NETWORK, FILE_NETWORK % "all.nc"))
    (d / "live.yaml").write_text(text.replace(NETWORK, FILE_NETWORK % "part1.nc").replace(cycles, live_cycles))
    ok(d, "run", "all.yaml", "-o", "all", "--quiet")
    ok(d, "run", "live.yaml", "-o", "live", "--quiet")
    if keep:
        shutil.copytree(d / "live", d / keep)
    runs = [ok(d, "assimilate", "live", str(parts[1]), "--quiet"),
            ok(d, "assimilate", "live", str(parts[2]), "--quiet")]
    return {"dir": d, "obs": obs, "parts": parts, "runs": runs}
