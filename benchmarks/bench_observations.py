"""Reading, converting and checking 10^6 measured observations (issue 17's benchmark), side by side with plain xarray.

The file is what a gauge network delivers: a CF-1.10 ``timeSeries`` NetCDF file of 1000 stations x 1000 times of sea
level in centimetres, an ancillary ``standard_error`` variable in centimetres, positions in kilometres, times in
"hours since 2026-03-01 00:00:00", and 1 % of the values ``_FillValue``. Both sides end with the same table: every
present value in metres with its error, time in seconds since the campaign start and position in metres.

- twin: :func:`twin.observations.dsg.read_dsg` (variable by name, units with pint, CF time with the campaign start,
  missing values dropped and counted) and the quality control a file campaign applies before binning
  (:mod:`twin.observations.qc`: missing, outside the time span, outside the domain, duplicates);
- plain xarray: ``xr.open_dataset`` with CF decoding, the same conversions written by hand (factors 0.01 and 1000,
  datetime64 arithmetic), NaN masking and broadcasting to one row per value; no checks.

Each side runs in a fresh interpreter; reported: wall time from the open to the finished table, the peak resident
memory above the interpreter with its imports, and the ratio twin / xarray (goal: at most 2). pint's unit registry,
built once per process (about 0.2-0.4 s, like an import), is built before the clock starts and reported apart; each
side's imports (xarray and pandas on both) are outside the clock.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.harness import ROOT, emit

STATIONS, TIMES = 1000, 1000

TWIN = r"""
import resource, sys, time
import numpy as np
import pandas  # imported by the quality control when it runs (and by xarray on the other side: outside the clock)
from twin.core.calendar import parse_start
from twin.observations import qc
from twin.observations.dsg import read_dsg
from twin.core.units import registry
t = time.perf_counter()
registry()  # pint's unit registry: built once per process, like an import (timed apart)
print("REGISTRY", time.perf_counter() - t)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
table = read_dsg(sys.argv[1], {"h": {"name": "sea_level", "units": "m"}}, start=parse_start("2026-03-01T00:00Z"),
                 model_time_units="s", length_units="m")
control = qc.QualityControl(len(table))
control.apply("missing", qc.missing(table.value, table.error))
control.apply("outside_time", qc.outside_time(table.time, 0.0, 3600.0 * 1000))
control.apply("outside_domain", qc.outside_domain(table.position, ((0.0, 2.0e6), (0.0, 2.0e6))))
control.apply("duplicate", qc.duplicates(table.time, table.position, table.variable))
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("PROBE", seconds, (peak - base) / 1024, int(control.accepted.sum()), float(np.sum(table.value[control.accepted])))
"""

XARRAY = r"""
import resource, sys, time
import numpy as np
import xarray as xr
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
with xr.open_dataset(sys.argv[1]) as ds:
    h = ds["sea_level"].values * 0.01                                   # cm -> m, _FillValue -> NaN
    e = ds["sea_level_error"].values * 0.01
    t = (ds["time"].values - np.datetime64("2026-03-01T00:00")) / np.timedelta64(1, "s")
    x, y = ds["x"].values * 1000.0, ds["y"].values * 1000.0               # km -> m
ok = np.isfinite(h)
value, error = h[ok], e[ok]
time_ = np.broadcast_to(t[None, :], h.shape)[ok]
position = np.stack([np.broadcast_to(x[:, None], h.shape)[ok], np.broadcast_to(y[:, None], h.shape)[ok]], axis=1)
seconds = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("PROBE", seconds, (peak - base) / 1024, int(ok.sum()), float(np.sum(value)))
"""


def _file(path: Path) -> None:
    import netCDF4

    rng = np.random.default_rng(17)
    with netCDF4.Dataset(path, "w") as nc:
        nc.Conventions, nc.featureType = "CF-1.10", "timeSeries"
        nc.createDimension("station", STATIONS)
        nc.createDimension("time", TIMES)
        for name, values in (("x", rng.uniform(0, 2000, STATIONS)), ("y", rng.uniform(0, 2000, STATIONS))):
            v = nc.createVariable(name, "f8", ("station",))
            v.units, v.axis, v.standard_name = "km", name.upper(), f"projection_{name}_coordinate"
            v[:] = values
        nc.createVariable("station_id", "i4", ("station",)).cf_role = "timeseries_id"
        t = nc.createVariable("time", "f8", ("time",))
        t.units, t.standard_name, t.calendar = "hours since 2026-03-01 00:00:00", "time", "standard"
        t[:] = np.arange(1, TIMES + 1, dtype=float)
        h = nc.createVariable("sea_level", "f8", ("station", "time"), fill_value=-9999.0)
        h.units, h.standard_name = "cm", "sea_surface_height"
        h.coordinates, h.ancillary_variables = "time x y", "sea_level_error"
        values = 100.0 * np.sin(np.linspace(0, 40, TIMES))[None, :] + rng.normal(0, 5, (STATIONS, TIMES))
        values[rng.random((STATIONS, TIMES)) < 0.01] = -9999.0
        h[:] = values
        e = nc.createVariable("sea_level_error", "f8", ("station", "time"))
        e.units, e.standard_name = "cm", "sea_surface_height standard_error"
        e[:] = 5.0


def _probe(script: str, path: Path) -> tuple[float, float, int, float, float]:
    out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=1200,
                         cwd=ROOT.parent)
    if out.returncode:
        raise RuntimeError(out.stderr[-3000:])
    lines = out.stdout.splitlines()
    _, seconds, mb, n, total = next(s for s in lines if s.startswith("PROBE")).split()
    registry = [float(s.split()[1]) for s in lines if s.startswith("REGISTRY")]
    return float(seconds), float(mb), int(n), float(total), (registry or [0.0])[0]


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "gauges.nc"
        _file(path)
        ctx = {"observations": STATIONS * TIMES, "file_MB": round(path.stat().st_size / 1e6, 1)}
        runs = {"twin": [], "xarray": []}
        for _ in range(3):  # interleaved
            runs["twin"].append(_probe(TWIN, path))
            runs["xarray"].append(_probe(XARRAY, path))
    best = {k: min(v, key=lambda r: r[0]) for k, v in runs.items()}
    if best["twin"][2] != best["xarray"][2] or not np.isclose(best["twin"][3], best["xarray"][3], rtol=1e-12):
        raise RuntimeError(f"the two tables differ: {best}")
    for side in ("twin", "xarray"):
        emit("observations", f"10^6 observations read and converted, {side}: wall time", best[side][0], "s", **ctx)
        emit("observations", f"10^6 observations read and converted, {side}: peak memory above imports",
             best[side][1], "MB", **ctx)
    emit("observations", "pint unit registry, built once per twin process", best["twin"][4], "s", **ctx)
    emit("observations", "twin / plain xarray wall time (goal <= 2)", best["twin"][0] / best["xarray"][0], "x", **ctx)
    emit("observations", "twin / plain xarray peak memory", best["twin"][1] / max(best["xarray"][1], 1e-9), "x",
         **ctx)


if __name__ == "__main__":
    main()
