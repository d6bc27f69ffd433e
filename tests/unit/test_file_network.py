"""A file of measured observations becomes a filter's network: fixed sites, one value per site and cycle (the report
nearest the analysis time), NaN where a site was silent, and a flag for every observation of the file that is not
assimilated (outside the time span or the domain, duplicate, superseded)."""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest
from mpi4py import MPI

from twin.kinds.lorenz96.model import Lorenz96
from twin.observations.base import interpolation_matrix
from twin.observations.file_network import series
from twin.observations.files import read_dsg
from twin.observations.table import ObservationTable


@pytest.fixture(scope="module")
def l96():
    m = Lorenz96("l96_file", MPI.COMM_SELF, n=40)
    yield m
    m.destroy()


def _table(rows) -> ObservationTable:
    t, x, v, y, e = zip(*rows)
    return ObservationTable(np.array(t), np.array(x)[:, None], np.array(v), np.array(y), np.array(e),
                            np.arange(len(rows)), "obs.csv", "0" * 64, {"x": "1"}, {}, "1", "m")


def test_sites_values_and_flags(l96):
    edges = [0.0, 0.1, 0.2, 0.3]
    table = _table([
        (0.1, 2.5, "x", 1.0, 0.5),     # cycle 0, site 0
        (0.1, 10.0, "x", 2.0, 0.5),    # cycle 0, site 1
        (0.2, 2.5, "x", 3.0, 0.6),     # cycle 1, site 0
        (0.15, 2.5, "x", 9.0, 0.6),    # cycle 1, site 0 again, further from the analysis time 0.2: superseded
        (0.2, 2.5, "x", 3.0, 0.6),     # duplicate of row 2
        (0.3, 10.0, "x", 4.0, 0.5),    # cycle 2, site 1
        (0.35, 10.0, "x", 5.0, 0.5),   # after the campaign
        (0.0, 10.0, "x", 5.0, 0.5),    # at the start: no analysis uses it
        (0.3, 45.0, "x", 5.0, 0.5),    # outside the ring [0, 40]
    ])
    s = series(table, l96, edges)
    assert s.observations.n_obs == 2 and s.site_variables == ["x", "x"]
    nan = np.nan
    np.testing.assert_array_equal(s.values, [[1.0, 2.0], [3.0, nan], [nan, 4.0]])
    np.testing.assert_array_equal(s.errors, [[0.5, 0.5], [0.6, nan], [nan, 0.5]])
    assert s.qc.flags.tolist() == [0, 0, 0, 6, 5, 0, 2, 2, 3]
    assert s.counts == {"accepted": 4, "missing": 0, "outside_time": 2, "outside_domain": 1, "range": 0,
                        "duplicate": 1, "thinned": 1, "background": 0, "superobs": 0}
    H = interpolation_matrix(l96.grid, np.array([[2.5], [10.0]]), 0)
    assert abs(s.observations.matrix - H).max() == 0


def test_nothing_usable_is_an_error_naming_the_file(l96):
    with pytest.raises(ValueError, match=r"observation file obs.csv: no observation lies inside the campaign's time "
                                         r"span \(0, 0.3\]"):
        series(_table([(0.5, 2.5, "x", 1.0, 0.5)]), l96, [0.0, 0.1, 0.2, 0.3])


def test_a_station_file_in_other_units_gives_the_series(tmp_path, l96):
    """A CF timeSeries file written with plain netCDF4, times in minutes since a reference 6 minutes before the
    campaign's time 0 and errors as an ancillary variable, gives the values at the analysis times."""
    path = tmp_path / "stations.nc"
    with netCDF4.Dataset(path, "w") as nc:
        nc.Conventions, nc.featureType = "CF-1.10", "timeSeries"
        nc.createDimension("station", 2)
        nc.createDimension("time", 3)
        x = nc.createVariable("x", "f8", ("station",))
        x.units, x.axis = "m", "X"
        x[:] = [2.5, 10.0]
        nc.createVariable("station", "i4", ("station",)).cf_role = "timeseries_id"
        t = nc.createVariable("time", "f8", ("time",))
        t.units, t.standard_name = "minutes since 1970-01-01 00:00:00", "time"
        t[:] = [6.0 + 6.0 * k for k in range(1, 4)]  # model seconds 360 + 360 k
        v = nc.createVariable("xobs", "f8", ("station", "time"), fill_value=-999.0)
        v.units, v.coordinates, v.ancillary_variables = "1", "time x", "xobs_error"
        v[:] = [[1.0, -999.0, 3.0], [4.0, 5.0, 6.0]]
        err = nc.createVariable("xobs_error", "f8", ("station", "time"))
        err.units, err.standard_name = "1", "x standard_error"
        err[:] = 0.5
    table = read_dsg(path, {"x": {"name": "xobs", "units": "1"}}, model_time_units="s", length_units="m")
    s = series(table, l96, [360.0, 720.0, 1080.0, 1440.0])
    np.testing.assert_array_equal(s.values, [[1.0, 4.0], [np.nan, 5.0], [3.0, 6.0]])
    assert s.counts["accepted"] == 5 and table.missing == {"x": 1}
