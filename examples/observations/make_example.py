"""Write the example observation files: ``stations.nc`` (plain netCDF4) and the oncology visits (``oncology/``).

``stations.nc``: a CF-1.10 discrete-sampling-geometry timeSeries file, with plain netCDF4 (not twin).

Three tide-and-wind gauges, four hourly records each, in the units a provider would use: sea level in cm, wind in
km/h, station positions in km (projection coordinates), times in hours since 2026-03-01 with the standard calendar.
Each variable lists its standard error as an ancillary variable; one sea-level record is missing (``_FillValue``).
The same observations are in ``stations.csv`` next to this script (the CSV layout of twin.observations.csvfile), and
a test checks that twin reads both into the same table.

Run ``python examples/observations/make_example.py [OUT.nc]`` (default: ``stations.nc`` next to this script).

``oncology/``: the imaging visits of the oncology flagship's patient 1 (``configs/oncology.yaml``, ``campaign.seed``
1), as its ES-MDA twin experiment observed them, written by :func:`twin.kinds.tumour.export.export_visits` as NIfTI-1
images and a visit table dated from 2026-03-01 (read by ``configs/oncology_files.yaml``). :func:`oncology` runs that
twin experiment with ``twin run`` on one rank, with 4 members and one update instead of 32 and four: the nature run
(the truth drawn from the priors by ``campaign.seed``) and the imaging noise (``assimilation.seed``) do not depend on
the ensemble, so the visits are the flagship's bitwise (``tests/integration/test_oncology_files.py`` checks them
against a twin experiment of another size). Run
``python examples/observations/make_example.py oncology [OUT_DIR]`` (default: ``oncology/`` next to this script;
a few seconds).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import netCDF4
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
#: the calendar date of the oncology twin experiment's day 0 in the exported visit table
ONCOLOGY_START = "2026-03-01"

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


def oncology_twin(members: int = 4, alphas: tuple[float, ...] = (1.0,)) -> dict:
    """The campaign of the oncology flagship's ES-MDA twin experiment for patient 1 (``campaign.seed`` 1, its truth
    drawn from the priors), with ``members`` members and the ES-MDA coefficients ``alphas``, on one rank, without
    the decision (what is exported is what it observed)."""
    data = yaml.safe_load((ROOT / "configs" / "oncology.yaml").read_text())
    esmda = next(a for a in data["experiments"]["matrix"]["assimilation"] if a["method"] == "esmda")
    data["campaign"]["seed"] = 1
    data["assimilation"] = {**esmda, "N": members, "esmda_alphas": list(alphas)}
    data["experiments"] = {"truth": data["experiments"]["truth"], "min_members": min(members, 2)}
    data["resources"] = {"type": "local", "ranks": 1, "workers": 1}
    data.pop("decision")
    return data


def oncology(out_dir: Path, start: str = ONCOLOGY_START) -> Path:
    """Run :func:`oncology_twin` in a temporary directory and export its visits to ``out_dir`` (returns the visit
    table)."""
    from twin.kinds.tumour.export import export_visits

    with tempfile.TemporaryDirectory(prefix="oncology_twin_") as tmp:
        campaign = Path(tmp) / "oncology_twin.yaml"
        campaign.write_text(yaml.safe_dump(oncology_twin(), sort_keys=False))
        done = subprocess.run([sys.executable, "-m", "twin.cli", "run", campaign.name, "-o", "run", "--quiet"],
                              cwd=tmp, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"the oncology twin experiment failed: {done.stderr.strip()[-2000:]}")
        return export_visits(Path(tmp) / "run" / "experiments" / "oncology", out_dir, start)


if __name__ == "__main__":
    if sys.argv[1:2] == ["oncology"]:
        print(oncology(Path(sys.argv[2]) if len(sys.argv) > 2 else Path(__file__).with_name("oncology")))
    else:
        out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).with_name("stations.nc")
        print(write(out))
