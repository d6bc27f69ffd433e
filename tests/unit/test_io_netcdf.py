"""CF NetCDF outputs: ensemble, diagnostics and observation files round-trip values, attributes and dtypes."""

import os
import stat

import netCDF4
import numpy as np
import pytest
import xarray as xr

from twin.core.errors import OutputError
from twin.core.grid import Grid
from twin.io.netcdf import DiagnosticsFile, VariableMeta, gather_members, read_ensemble, verify_netcdf, write_ensemble
from twin.io.provenance import collect

H = VariableMeta("water layer thickness", "m", "sea_floor_depth_below_sea_surface")


@pytest.fixture
def grid(comm_self):
    g = Grid(comm_self, (6, 4), ((0.0, 3.0), (0.0, 2.0)), name="basin")
    yield g
    g.destroy()


def _ensemble(grid, n_members=3, n_times=2):
    snaps = []
    for t in range(n_times):
        vecs = [grid.from_function(lambda X, Y, m=m, t=t: X + 10 * Y + 100 * m + 1000 * t) for m in range(n_members)]
        snaps.append(gather_members(grid, vecs))
        for v in vecs:
            v.destroy()
    return np.stack(snaps, axis=1)


def test_ensemble_round_trip(tmp_path, grid, comm_self):
    values = _ensemble(grid)
    prov = collect(comm_self, config_text="x: 1\n")
    path = write_ensemble(tmp_path / "posterior.nc", grid, {"h": values}, [0.0, 3600.0], comm=comm_self,
                          variables={"h": H}, provenance=prov)
    ds = read_ensemble(path)
    assert ds["h"].dims == ("member", "time", "y", "x") and ds["h"].dtype == np.float64
    assert np.array_equal(ds["h"].values, values)
    assert ds["h"].values[2, 1, 3, 5] == pytest.approx(grid.axis_coordinates(0)[5] + 10 * grid.axis_coordinates(1)[3]
                                                       + 1200)
    assert np.allclose(ds["x"].values, [0.25, 0.75, 1.25, 1.75, 2.25, 2.75]) and ds["x"].attrs["axis"] == "X"
    assert ds["y"].attrs["units"] == "m" and ds["member"].attrs["standard_name"] == "realization"
    assert ds["member"].dtype == np.int32 and list(ds["time"].values) == [0.0, 3600.0]
    assert ds["time"].attrs["units"].startswith("seconds since")
    assert ds["h"].attrs == {"long_name": H.long_name, "units": "m", "standard_name": H.standard_name}
    assert ds.attrs["Conventions"] == "CF-1.10" and ds.attrs["twin_kind"] == "posterior"
    assert ds.attrs["twin_config"] == "x: 1\n" and ds.attrs["twin_config_sha256"] == prov.config_sha256
    with netCDF4.Dataset(path) as nc:
        filters = nc["h"].filters()
        assert filters["zlib"] and filters["complevel"] == 1
        # one member, all the times of this small field in one chunk (CHUNK_VALUES values at least)
        assert nc["h"].chunking() == [1, 2, 4, 6]
    assert verify_netcdf(path) == (True, "ok")


def test_ensemble_bad_inputs(tmp_path, grid, comm_self):
    values = _ensemble(grid)
    with pytest.raises(OutputError, match="'h' has no metadata"):
        write_ensemble(tmp_path / "a.nc", grid, {"h": values}, [0.0, 1.0], comm=comm_self, variables={})
    with pytest.raises(OutputError, match=r"'h' has shape \(3, 2, 4, 6\), expected \(member, 3\)"):
        write_ensemble(tmp_path / "a.nc", grid, {"h": values}, [0.0, 1.0, 2.0], comm=comm_self, variables={"h": H})
    assert os.listdir(tmp_path) == []


def test_verify_detects_modified_data(tmp_path, grid, comm_self):
    path = write_ensemble(tmp_path / "f.nc", grid, {"h": _ensemble(grid)}, [0.0, 1.0], comm=comm_self,
                          variables={"h": H}, kind="forecast")
    with netCDF4.Dataset(path, "a") as nc:
        nc["h"][0, 0, 0, 0] = -1.0
    ok, why = verify_netcdf(path)
    assert ok is False and "do not match" in why


def test_diagnostics_append_with_record_dimension(tmp_path, comm_self):
    path = tmp_path / "diagnostics.nc"
    d = DiagnosticsFile(path, comm_self, state_units="m", provenance=collect(comm_self),
                        variables={"q_peak": VariableMeta("peak tumour burden", "mm3")})
    for cycle in range(4):
        values = {"rmse": 1.0 / (cycle + 1), "spread": 0.5, "coupling_iterations": 3 + cycle, "rmse_tumour": 0.1}
        if cycle >= 2:
            values["q_peak"] = 7.5 * cycle
        assert d.append(600.0 * cycle, values, cycle=cycle) == cycle + 1
        assert verify_netcdf(path) == (True, "ok")
    with netCDF4.Dataset(path) as nc:
        assert nc.dimensions["time"].isunlimited() and len(nc.dimensions["time"]) == 4
        assert nc["coupling_iterations"].dtype == np.int32 and list(nc["coupling_iterations"][:]) == [3, 4, 5, 6]
        assert nc["cycle"].dtype == np.int32
    ds = d.read()
    assert list(ds["time"].values) == [0.0, 600.0, 1200.0, 1800.0]
    assert np.allclose(ds["rmse"].values, [1, 1 / 2, 1 / 3, 1 / 4]) and ds["rmse"].attrs["units"] == "m"
    assert np.isnan(ds["q_peak"].values[:2]).all() and list(ds["q_peak"].values[2:]) == [15.0, 22.5]
    assert ds["rmse_tumour"].attrs["long_name"].endswith("(tumour)")
    with pytest.raises(OutputError, match="'mystery' has no metadata"):
        d.append(9.0, {"mystery": 1.0})
    assert len(d.read()["time"]) == 4

    # several records in one rewrite give the file that record-by-record appends give
    e = DiagnosticsFile(tmp_path / "extended.nc", comm_self, state_units="m", provenance=collect(comm_self),
                        variables={"q_peak": VariableMeta("peak tumour burden", "mm3")})
    records = [(600.0 * c, {"rmse": 1.0 / (c + 1), "spread": 0.5, "coupling_iterations": 3 + c, "rmse_tumour": 0.1,
                            **({"q_peak": 7.5 * c} if c >= 2 else {})}, c) for c in range(4)]
    assert e.extend(records[:1]) == 1 and e.extend(records[1:]) == 4
    assert verify_netcdf(tmp_path / "extended.nc") == (True, "ok")
    other = e.read()
    for name in ("time", "cycle", "rmse", "spread", "coupling_iterations", "q_peak", "rmse_tumour"):
        assert np.array_equal(other[name].values, ds[name].values, equal_nan=True), name
        assert other[name].attrs == ds[name].attrs and other[name].dtype == ds[name].dtype, name
    with pytest.raises(OutputError, match="'mystery' has no metadata"):
        e.extend([(9.0, {"mystery": 1.0}, 4)])
    assert len(e.read()["time"]) == 4


def test_sensitive_netcdf_is_owner_only(tmp_path, grid, comm_self):
    prov = collect(comm_self, sensitive=True)
    path = write_ensemble(tmp_path / "p.nc", grid, {"h": _ensemble(grid)}, [0.0, 1.0], comm=comm_self,
                          variables={"h": H}, provenance=prov, sensitive=True)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    d = DiagnosticsFile(tmp_path / "d.nc", comm_self, provenance=prov, sensitive=True)
    d.append(0.0, {"cost": 1.0})
    d.append(1.0, {"cost": 0.5})
    assert stat.S_IMODE((tmp_path / "d.nc").stat().st_mode) == 0o600
    with xr.open_dataset(path) as ds:
        assert ds.attrs["twin_host"] == ds.attrs["twin_user"] == "redacted"


def test_ensemble_chunks_hold_one_member_and_enough_times():
    """A chunk is one member's field at as many times as make 2^15 values: one time for a field that size or
    larger (a map reads one chunk per member), hundreds for a small model (compressing 40-value chunks one by one
    made writing a 1000-cycle Lorenz-96 posterior take seconds)."""
    from twin.io.netcdf import CHUNK_VALUES, ensemble_chunks

    assert ensemble_chunks((3, 10, 256, 256)) == (1, 1, 256, 256)
    # 1001 times, at most CHUNK_VALUES // 40 = 819 per chunk: two chunks of 501 (the second not 182 of 819 full)
    assert CHUNK_VALUES // 40 == 819 and ensemble_chunks((24, 1001, 40)) == (1, 501, 40)
    assert ensemble_chunks((24, 819, 40)) == (1, 819, 40) and ensemble_chunks((24, 820, 40)) == (1, 410, 40)
    assert ensemble_chunks((24, 5, 40)) == (1, 5, 40)
    assert ensemble_chunks((2, 0, 40)) == (1, 1, 40)


def test_diagnostics_of_a_state_of_several_units_have_none(tmp_path):
    """Found by a probe: the RMSE of a shallow-water state (h in m, u and v in m/s together) was labelled "m"; a
    reader took 0.17 m for the sea level's error (0.29 m). An aggregate of different units has no units attribute
    and says what it mixes; a variance of one unit is squared."""
    from twin.io.netcdf import DiagnosticsFile, VariableMeta, of_state

    d = DiagnosticsFile(tmp_path / "d.nc", None, state_units=None, state_mix="h [m], u [m/s], v [m/s]")
    d.append(0.0, {"rmse": 0.17, "spread": 0.1, "innovation_std": 0.2})
    ds = d.read()
    for name in ("rmse", "spread", "innovation_std"):
        assert "units" not in ds[name].attrs, ds[name].attrs
        assert ds[name].attrs["long_name"].endswith("over the state variables together (h [m], u [m/s], v [m/s]: "
                                                    "mixed units)")
    assert of_state(VariableMeta("variance", "{state}2"), "m/s").units == "(m/s)^2"
    assert of_state(VariableMeta("count", "1"), None, "h [m], u [m/s]").units == "1"


def test_a_model_time_without_units_of_time_is_no_cf_time(tmp_path, grid, comm_self):
    """Found by a probe: Lorenz-96's time (units "1") carried standard_name time and a calendar, which CF gives times
    of a time unit only."""
    path = write_ensemble(tmp_path / "posterior.nc", grid, {"h": _ensemble(grid)}, [0.0, 0.05], comm=comm_self,
                          variables={"h": H}, time_units="1")
    with netCDF4.Dataset(path) as nc:
        assert {k: nc["time"].getncattr(k) for k in nc["time"].ncattrs()} == {"long_name": "model time", "axis": "T",
                                                                              "units": "1"}
