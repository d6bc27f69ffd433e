"""Write ``stations.nc``: a CF-1.10 discrete-sampling-geometry timeSeries file, with plain netCDF4 (not twin).

Three tide-and-wind gauges, four hourly records each, in the units a provider would use: sea level in cm, wind in
km/h, station positions in km (projection coordinates), times in hours since 2026-03-01 with the standard calendar.
Each variable lists its standard error as an ancillary variable; one sea-level record is missing (``_FillValue``).
The same observations are in ``stations.csv`` next to this script (the CSV layout of twin.observations.csvfile), and
a test checks that twin reads both into the same table.

Run ``python examples/observations/make_example.py [OUT.nc]`` (default: ``stations.nc`` next to this script).
"""

from __future__ import annotations

import sys
from pathlib import Path

import netCDF4
import numpy as np

FILL = -999.0
STATIONS = ["north_pier", "harbour", "outer_buoy"]
X_KM = [250.0, 1200.0, 1800.0]
Y_KM = [400.0, 800.0, 1500.0]
HOURS = [3.0, 6.0, 9.0, 12.0]
SEA_LEVEL_CM = [[12.5, 18.0, 9.5, -4.0],
                [7.25, FILL, 15.0, 2.5],
                [-1.5, 3.0, 6.75, 11.0]]
SEA_LEVEL_ERROR_CM = 2.0
WIND_KMH = [[36.0, 32.4, 28.8, 25.2],
            [18.0, 21.6, 25.2, 30.6],
            [54.0, 50.4, 46.8, 43.2]]
WIND_ERROR_KMH = 3.6


def write(path: Path) -> Path:
    with netCDF4.Dataset(path, "w", format="NETCDF4") as nc:
        nc.Conventions = "CF-1.10"
        nc.featureType = "timeSeries"
        nc.title = "example gauges for twin (sea level and eastward wind)"
        nc.createDimension("station", len(STATIONS))
        nc.createDimension("time", len(HOURS))
        nc.createDimension("name_strlen", max(map(len, STATIONS)))

        name = nc.createVariable("station_name", "S1", ("station", "name_strlen"))
        name.cf_role = "timeseries_id"
        name.long_name = "gauge name"
        name[:] = netCDF4.stringtochar(np.array(STATIONS, dtype=f"S{max(map(len, STATIONS))}"))

        time = nc.createVariable("time", "f8", ("time",))
        time.standard_name, time.axis, time.calendar = "time", "T", "standard"
        time.units = "hours since 2026-03-01 00:00:00"
        time[:] = HOURS
        for axis, values in (("x", X_KM), ("y", Y_KM)):
            v = nc.createVariable(axis, "f8", ("station",))
            v.standard_name, v.axis, v.units = f"projection_{axis}_coordinate", axis.upper(), "km"
            v[:] = values

        for var, sn, units, values, error in (
                ("sea_level", "sea_surface_height_above_mean_sea_level", "cm", SEA_LEVEL_CM, SEA_LEVEL_ERROR_CM),
                ("wind", "eastward_wind", "km h-1", WIND_KMH, WIND_ERROR_KMH)):
            v = nc.createVariable(var, "f8", ("station", "time"), fill_value=FILL)
            v.standard_name, v.units, v.coordinates = sn, units, "time x y station_name"
            v.ancillary_variables = f"{var}_error"
            v[:] = np.ma.masked_equal(np.array(values), FILL)
            e = nc.createVariable(f"{var}_error", "f8", ("station", "time"))
            e.standard_name, e.units = f"{sn} standard_error", units
            e[:] = np.full((len(STATIONS), len(HOURS)), error)
    return path


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("stations.nc")
    print(write(out))
