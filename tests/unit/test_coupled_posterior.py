"""A coupled model's ensemble files hold every component's fields on its own coordinates (issue #21), not the
concatenated state on an index axis; the report's panels draw them."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr
from mpi4py import MPI

from twin.campaign.outputs import field_blocks, fields_dataset, write_fields
from twin.core.grid import Grid
from twin.io.netcdf import time_attributes


@pytest.fixture
def coupled():
    air = SimpleNamespace(name="air", grid=Grid(MPI.COMM_SELF, (4, 3), [(0.0, 4000.0), (0.0, 3000.0)], dof=3),
                          state_names=("h", "u", "v"), state_units=("m", "m/s", "m/s"), length_units="m")
    mast = SimpleNamespace(name="mast", grid=Grid(MPI.COMM_SELF, (5,), [(0.0, 2.0)], dof=2, centering="node"),
                           state_names=("x", "v_x"), state_units=("m", "m/s"), length_units="m")
    n_air, n_mast = 4 * 3 * 3, 5 * 2
    model = SimpleNamespace(name="coupled", blocks={"air": slice(0, n_air), "mast": slice(n_air, n_air + n_mast)},
                            models={"air": air, "mast": mast}, grid=Grid(MPI.COMM_SELF, (n_air + n_mast,),
                                                                         [(0.0, float(n_air + n_mast))]))
    yield model
    for g in (air.grid, mast.grid, model.grid):
        g.destroy()


def test_blocks_name_each_component_on_its_own_dimensions(coupled):
    air, mast = field_blocks(coupled)
    assert (air.component, air.names, air.dims, air.shape) == ("air", ("air_h", "air_u", "air_v"),
                                                               ("air_y", "air_x"), (3, 4, 3))
    # a state named like a coordinate is safe once prefixed with its component
    assert (mast.names, mast.dims, mast.units) == (("mast_state_x", "mast_v_x"), ("mast_x",), ("m", "m/s"))


def test_posterior_file_of_a_coupled_model(coupled, tmp_path):
    from twin.io.netcdf import verify_netcdf

    N, T, n = 3, 2, 46
    values = np.arange(N * T * n, dtype=float).reshape(N, T, n)
    lead = {"member": (np.arange(N), {"standard_name": "realization", "units": "1"}),
            "time": (np.array([0.0, 60.0]), time_attributes("seconds since 2026-03-01T00:00:00Z"))}
    ds = fields_dataset(coupled, values, lead, what="of the posterior ensemble")
    write_fields(tmp_path / "posterior.nc", ds, None, kind="posterior", title="t", provenance=None, sensitive=False)
    assert verify_netcdf(tmp_path / "posterior.nc") == (True, "ok")
    with xr.open_dataset(tmp_path / "posterior.nc", decode_times=False) as f:
        assert "state" not in f and set(f.data_vars) == {"air_h", "air_u", "air_v", "mast_state_x", "mast_v_x"}
        assert f["air_u"].dims == ("member", "time", "air_y", "air_x") and f["air_u"].attrs["units"] == "m/s"
        assert f["air_u"].attrs["long_name"] == "u of air of the posterior ensemble"
        np.testing.assert_allclose(f["air_x"].values, [500.0, 1500.0, 2500.0, 3500.0])
        np.testing.assert_allclose(f["mast_x"].values, [0.0, 0.5, 1.0, 1.5, 2.0])
        assert f["air_x"].attrs["units"] == "m" and f["mast_x"].attrs["axis"] == "X"
        # natural order: point-major with the dof fastest; the mast after the 36 entries of the air
        m, t, j, i = 2, 1, 2, 3
        assert float(f["air_v"][m, t, j, i]) == values[m, t, (j * 4 + i) * 3 + 2]
        assert float(f["mast_v_x"][m, t, 4]) == values[m, t, 36 + 4 * 2 + 1]
        assert f["time"].attrs["calendar"] == "standard"


def test_report_panels_draw_the_components(coupled, tmp_path):
    from twin.report.data import load_run
    from twin.report.figures import changes_panel, fan_panel, field_rows, fields_panel

    rng = np.random.default_rng(0)
    values = rng.standard_normal((4, 3, 46))
    lead = {"member": (np.arange(4), {"units": "1"}),
            "time": (np.array([0.0, 60.0, 120.0]), time_attributes("seconds since 1970-01-01 00:00:00"))}
    for name in ("posterior.nc", "forecast.nc"):
        write_fields(tmp_path / name, fields_dataset(coupled, values, lead), None, kind=name[:-3], title="t",
                     provenance=None, sensitive=False)
    run = load_run(tmp_path)
    assert not run.concatenated("air_h")
    out = tmp_path / "img"
    out.mkdir()
    p = fields_panel(run, out)
    assert p.image is not None and p.image.is_file(), p.note
    # one row per grid: the air's first field and the mast's, each the members' mean at the last time in its own
    # layout (the mast's first dof: every second entry after the air's 36)
    rows = {var: frames for var, _, frames in field_rows(run)}
    assert list(rows) == ["air_h", "mast_state_x"]
    frames = {label: (v, sd) for label, v, sd in rows["mast_state_x"]}
    np.testing.assert_allclose(frames["analysis mean"][0], values[:, -1, 36::2].mean(axis=0))
    np.testing.assert_allclose(frames["analysis mean"][1], values[:, -1, 36::2].std(axis=0, ddof=1))
    assert frames["forecast mean at 2 min"][0].shape == (5,)
    assert rows["air_h"][0][1].shape == (3, 4)
    fans = fan_panel(run, out)
    assert fans.image is not None
    changes = changes_panel(run, out)
    assert "domain mean of air_h" in changes.table and "domain mean of mast_v_x" in changes.table
    mean_now = float(np.mean(values[:, -1, 36 + 1::2]))  # mast_v_x, every member's domain mean, averaged
    assert f"{mean_now:.4g}" in changes.table
