"""The observation file a twin experiment writes (:mod:`twin.observations.export`), read back by the reader real files
go through (:func:`twin.observations.dsg.read_dsg`): every value, error, position and time comes back exactly, on 1-,
2- and 3-D grids, with calendar time; silent stations (NaN) are missing values; the file verifies and a sensitive one
is owner-only."""

from __future__ import annotations

import stat

import numpy as np
import pytest
import scipy.sparse as sp

from export_case import START, export, gauges, heat_model

from twin.io.netcdf import verify_netcdf
from twin.observations.base import LinearObservations
from twin.observations.dsg import read_dsg


@pytest.mark.parametrize("dim", [1, 2, 3])
def test_exported_observations_read_back_exactly(tmp_path, comm_self, dim):
    model = heat_model(comm_self, dim)
    try:
        obs = gauges(model)
        values = np.random.default_rng(1).normal(280.0, 2.0, (3, obs.n_obs))
        values[1, 2] = np.nan  # station 2 silent in cycle 1
        path = export(tmp_path / "observations.nc", comm_self, model, obs, values)
        assert verify_netcdf(path) == (True, "ok")
        t = read_dsg(path, {"T": {"name": "obs_T", "error": "obs_T_error", "units": "K"}}, start=START,
                     length_units="m")
    finally:
        model.grid.destroy()
        model.destroy()
    assert len(t) == values.size - 1 and t.missing == {"T": 1}
    # file order: station by station, each over the cycles' analysis times
    present = [(j, k) for j in range(obs.n_obs) for k in range(3) if (j, k) != (2, 1)]
    assert np.array_equal(t.value, [values[k, j] for j, k in present])
    assert np.array_equal(t.error, [obs.error_std[j] for j, _ in present])
    assert np.array_equal(t.position, np.array([obs.locations[j] for j, _ in present]))
    assert np.array_equal(t.time, [600.0 * (k + 1) for _, k in present])


def test_sensitive_file_is_owner_only_and_other_networks_are_named(tmp_path, comm_self):
    model = heat_model(comm_self, 2)
    try:
        points = gauges(model, 3)
        n = model.grid.size
        box = LinearObservations(sp.csr_matrix(np.full((1, n), 1.0 / n)), [0.5], np.array([[2e3, 1.5e3]]), "mean")
        stacked = LinearObservations(sp.vstack([points.matrix, box.matrix]).tocsr(),
                                     np.r_[points.error_std, box.error_std],
                                     np.vstack([points.locations, box.locations]), "all")
        stacked.network_slices = {"gauges": slice(0, 3), "mean": slice(3, 4)}
        path = export(tmp_path / "observations.nc", comm_self, model, stacked, np.ones((3, 4)), sensitive=True)
    finally:
        model.grid.destroy()
        model.destroy()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    import netCDF4

    with netCDF4.Dataset(path) as nc:
        assert nc.dimensions["station_T"].size == 3
        assert nc.twin_networks_not_written.startswith("mean: its operator is not the point value")
        assert list(nc["obs_T_id"][:]) == ["gauges:0", "gauges:1", "gauges:2"]
