"""The round trip of a twin experiment's observations: every twin experiment writes its synthetic observations as the
CF timeSeries file a real station network would send (``observations.nc``); the same campaign fed only with that file
(a ``type: file`` network) gives the twin experiment's analyses bitwise, for the ETKF on every grid point and for the
LETKF on stations between grid points (interpolated, localised by their positions).

Bitwise, not to round-off: the file holds the float64 values and errors the twin assimilated, the file network's
operator is the same interpolation at the same positions, and each cycle's observations carry that cycle's analysis
time, so the analysis sees the same numbers in the same order.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import xarray as xr
import yaml

from twin.observations.base import LinearObservations
from twin.observations.export import point_networks

#: stations between the grid points of the 40-point ring (positions in its length units, m; a station on a grid point
#: would be a duplicate of the all-points network there, which a file network flags and leaves out)
STATIONS = [[0.5], [3.25], [7.5], [11.5], [15.75], [19.25], [22.5], [26.25], [30.5], [33.5], [36.75], [38.5]]

METHODS = {
    "etkf": ({"rotate": True, "inflation": {"multiplicative": 1.1}},
             [{"type": "all_points", "component": 0, "error_std": 1.0}]),
    "letkf": ({"rotate": True, "localisation": {"radius": 4.0}, "inflation": {"multiplicative": 1.05}},
              [{"type": "points", "name": "stations", "component": 0, "error_std": 0.8, "points": STATIONS},
               {"type": "all_points", "name": "everywhere", "component": 0, "error_std": 1.5}]),
}


def _campaign(method: str, observations: list) -> dict:
    settings, _ = METHODS[method]
    return {
        "schema_version": 1,
        "campaign": {"name": f"l96_{method}", "seed": 7},
        "models": {"l96": {"type": "lorenz96", "n": 40, "dt": 0.05, "initial_condition": "random",
                           "perturbation": 1.0,
                           "forcing": {"value": 8.0, "prior": {"dist": "normal", "mean": 8.0, "std": 0.5},
                                       "estimable": True}}},
        "timeline": {"start": 0.0, "end": 1.0, "units": "s"},
        "resources": {"type": "local", "ranks": 1, "workers": 1},
        # background_std stated: its default is the networks' mean error_std, which a file network does not state
        "assimilation": {"method": method, "N": 16, "seed": 3, "schedule": {"every": 1, "cycles": 8},
                         "background_std": 1.0,
                         "observations": observations, **settings},
    }


def _run(cwd: Path, *args: str) -> None:
    out = subprocess.run([sys.executable, "-m", "twin.cli", *args], cwd=cwd, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]


@pytest.mark.parametrize("method", ["etkf", "letkf"])
def test_a_twin_experiments_observation_file_gives_its_analyses_again(tmp_path, method):
    cfg = _campaign(method, METHODS[method][1])
    (tmp_path / "twin.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    _run(tmp_path, "run", "twin.yaml", "-o", "synthetic", "--quiet")
    twin = tmp_path / "synthetic" / "experiments" / f"l96_{method}"
    exported = twin / "observations.nc"
    with xr.open_dataset(exported, decode_times=False) as ds:
        assert ds.attrs["featureType"] == "timeSeries" and ds.attrs["Conventions"] == "CF-1.10"
        assert ds.attrs["twin_networks_not_written"] == "none"
        assert ds["obs_x"].shape == (40 + (12 if method == "letkf" else 0), 8)
        assert np.allclose(ds["time"].values, 0.05 * np.arange(1, 9))
    # the campaign again, with its networks replaced by the file (given relative to the campaign file)
    (tmp_path / "measured.nc").write_bytes(exported.read_bytes())
    cfg["assimilation"]["observations"] = [{"type": "file", "file": "measured.nc",
                                            "variables": {"x": {"name": "obs_x", "error": "obs_x_error", "units": "1"}}}]
    (tmp_path / "file.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    _run(tmp_path, "run", "file.yaml", "-o", "file", "--quiet")
    measured = tmp_path / "file" / "experiments" / f"l96_{method}"
    with xr.open_dataset(twin / "posterior.nc", decode_times=False) as a, \
            xr.open_dataset(measured / "posterior.nc", decode_times=False) as b:
        assert a["l96_x"].shape[1] == 9 and np.array_equal(a["l96_x"].values, b["l96_x"].values)
    with xr.open_dataset(twin / "diagnostics.nc", decode_times=False) as a, \
            xr.open_dataset(measured / "diagnostics.nc", decode_times=False) as b:
        assert np.array_equal(a["spread_a"].values, b["spread_a"].values)
        assert np.all(b["n_obs"].values == a["n_obs"].values)
    assert not (measured / "observations.nc").exists()  # a file campaign does not write its data back out


def test_only_point_networks_are_exported(lorenz_grid_model):
    """A network whose operator is not a point value (here: means of neighbouring points) is named, not written."""
    model = lorenz_grid_model
    n = model.grid.size
    points = LinearObservations.at_points(model.grid, np.array([[1.5], [2.0]]), 1.0, name="points")
    mean = sp.csr_matrix(np.eye(n)[:3] * 0.5 + np.eye(n, k=1)[:3] * 0.5)
    # placed at the first point of each pair: a mean is not the value there (at the midpoint it would be)
    means = LinearObservations(mean, np.ones(3), np.array([[0.0], [1.0], [2.0]]), "means")
    stacked = LinearObservations(sp.vstack([points.matrix, means.matrix]).tocsr(), np.ones(5),
                                 np.vstack([points.locations, means.locations]), "all")
    stacked.network_slices = {"points": slice(0, 2), "means": slice(2, 5)}
    written, left = point_networks(stacked, model)
    assert written == {"points": (0, "x")}
    assert list(left) == ["means"] and "not the point value" in left["means"]


@pytest.fixture
def lorenz_grid_model():
    from mpi4py import MPI

    from twin.kinds.lorenz96.model import Lorenz96

    model = Lorenz96("l96", MPI.COMM_SELF, n=40)
    yield model
    model.destroy()


#: shallow-water stations (km) on h points, on u faces (x = 937.5 km is a west face of the 125 km cells) and between
SW_STATIONS = [[150, 200], [600, 350], [1150, 700], [1700, 300], [300, 900], [937.5, 1125], [1500, 1000], [1850, 1300]]


def _shallow_water(observations: list) -> dict:
    return {
        "schema_version": 1,
        "campaign": {"name": "sw_etkf", "seed": 7},
        "models": {"atmosphere": {
            "type": "shallow_water",
            "grid": {"shape": [16, 16], "extent": [[0, 2000], [0, 2000]], "units": "km", "periodic": True},
            "mean_depth": {"value": 1000, "units": "m"}, "time_step": {"value": 300, "units": "s"},
            "initial": {"name": "balanced_turbulence", "speed": {"value": 15, "units": "m/s"}, "wavenumber": 3,
                        "seed": 4},
            "solver": {"ts_type": "rk", "ts_rk_type": "4"}}},
        "timeline": {"start": 0, "end": 7200, "units": "s"},
        "resources": {"type": "local", "ranks": 1, "workers": 1},
        "assimilation": {"method": "etkf", "N": 12, "seed": 3, "inflation": {"multiplicative": 1.1},
                         "schedule": {"every": 6, "cycles": 4}, "background_std": 0.05,
                         "observations": observations},
    }


def test_staggered_winds_round_trip_on_their_faces(tmp_path):
    """The shallow-water model keeps u on the west and v on the south faces of its C-grid: stations observing h, u
    and v are written to observations.nc (every row, no network left out) and a file network observes u and v where
    the model keeps them (twin.observations.base.point_matrix), so the round trip is bitwise. Interpolated at the cell
    centres instead (before the model said where its winds live), the analyses were off by 0.25 m in h."""
    cfg = _shallow_water([{"name": "synop", "type": "stations", "units": "km", "variables": ["h", "u", "v"],
                           "error_std": {"h": 0.3, "u": 0.5, "v": 0.5}, "points": SW_STATIONS}])
    (tmp_path / "twin.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    _run(tmp_path, "run", "twin.yaml", "-o", "synthetic", "--quiet")
    twin = tmp_path / "synthetic" / "experiments" / "sw_etkf"
    with xr.open_dataset(twin / "observations.nc", decode_times=False) as ds:
        assert ds.attrs["twin_networks_not_written"] == "none"
        for v in ("h", "u", "v"):
            assert ds[f"obs_{v}"].shape == (len(SW_STATIONS), 4)
        assert np.allclose(ds["obs_u_x"].values, 1000.0 * np.array(SW_STATIONS)[:, 0])  # positions, not faces
    (tmp_path / "measured.nc").write_bytes((twin / "observations.nc").read_bytes())
    cfg["assimilation"]["observations"] = [{"type": "file", "file": "measured.nc", "variables": {
        v: {"name": f"obs_{v}", "error": f"obs_{v}_error", "units": u} for v, u in (("h", "m"), ("u", "m/s"),
                                                                                    ("v", "m/s"))}}]
    (tmp_path / "file.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    _run(tmp_path, "run", "file.yaml", "-o", "file", "--quiet")
    measured = tmp_path / "file" / "experiments" / "sw_etkf"
    with xr.open_dataset(twin / "posterior.nc", decode_times=False) as a, \
            xr.open_dataset(measured / "posterior.nc", decode_times=False) as b:
        for v in ("h", "u", "v"):
            assert a[v].shape == (12, 5, 16, 16) and np.array_equal(a[v].values, b[v].values), v
