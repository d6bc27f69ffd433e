"""Observation files for ES-MDA and 4D-Var (issue 17, points 1 and 5): each observation is used at the model step
nearest its own time (``twin.observations.file_network``), and a twin experiment's ``observations.nc`` fed back as a
``type: file`` network gives the twin experiment's analyses again.

Bitwise, not to round-off, for both methods: the file holds the float64 values and errors the twin experiment
assimilated, at its observation times (Lorenz-96 time is dimensionless: written and read without conversion); the
file network's operator interpolates the same state variable at the same positions (sites in the order of the
twin's rows); an observation on a model step is placed at that step's time computed as the twin computes it (ES-MDA:
``t_0 + n dt``, the schedule's own expression; 4D-Var: ``t_0 + j obs_interval`` on the scheme's grid), so the member
runs and the 4D-Var passes stop at the same instants; ES-MDA's data vector is ordered by time and then row, as the
twin stacks it, so the perturbations of the same random streams fall on the same data; and the prior ensemble (or
4D-Var background) is drawn from the same streams around the configured state, which is where the twin's nature run
starts (4D-Var) or is drawn from (ES-MDA).

The twin experiments here observe at every model step (0.05); the campaigns fed with their files analyse with a
coarser schedule (ES-MDA every 2 steps, 4D-Var observation interval 0.1) and still give the fine twin's analyses
bitwise: the observations between their schedule's times are used at their own steps, not moved to an analysis time.
A measured-style file written with plain netCDF4 (positions in km) with a missing value, a value above ``valid_max``,
a station outside the domain and a report after the campaign gives the analyses of the same file without those
entries, bitwise, and counts each of them in ``observations.h5``; no truth, so the diagnostics are in observation
space and the decision uses the posterior alone.
"""

from __future__ import annotations

import netCDF4
import numpy as np
import pytest
import xarray as xr
import yaml

from twin.campaign import layout
from twin.io.checkpoint import CheckpointReader

pytestmark = pytest.mark.timeout(180)

#: stations between the grid points of the 40-point ring (m): interpolated, none a duplicate of another
STATIONS = [[0.5], [3.25], [7.5], [11.5], [15.75], [19.25], [22.5], [26.25], [30.5], [33.5], [36.75], [38.5]]
TWIN_NETWORK = [{"type": "points", "name": "stations", "component": 0, "error_std": 0.5, "points": STATIONS}]
MODEL = {"l96": {"type": "lorenz96", "n": 40, "dt": 0.05, "initial_condition": "random", "perturbation": 1.0,
                 "forcing": {"value": 8.0, "prior": {"dist": "normal", "mean": 7.0, "std": 1.0},
                             "estimable": True}}}


def _assimilation(method: str, fine: bool, variant: str = "") -> dict:
    """The method's section: observations every model step (``fine``, the twin) or a coarser schedule with the
    same window(s) (the campaigns fed by files)."""
    if method == "esmda":
        a = {"method": "esmda", "N": 12, "seed": 2, "background_std": 1.0, "esmda_alphas": [2.0, 2.0],
             "schedule": {"every": 1, "cycles": 8} if fine else {"every": 2, "cycles": 4}}
        if variant == "local":
            a["localisation"] = {"radius": 6.0}
        return a
    return {"method": "4dvar", "model": "l96", "seed": 3, "cycles": 2,
            **({"obs_interval": 0.05, "window": 4} if fine else {"obs_interval": 0.1, "window": 2}),
            "background_covariance": {"kind": "diagonal", "std": 1.0}, "parameters": [{"name": "F", "std": 1.0}],
            "tao": {"gatol": 1.0e-4, "max_iterations": 60, "on_failure": "warn"}}


def _file_network(name: str) -> list:
    return [{"type": "file", "file": name, "variables": {"x": {"name": "obs_x", "error": "obs_x_error",
                                                                  "units": "1"}}}]


def _run(d, name: str, method: str, observations: list, *, fine: bool, variant: str = "", decision: bool = False):
    """Run the campaign ``name`` in-process (online, one rank); returns its experiment directory."""
    from mpi4py import MPI

    from twin.campaign.online import run_online
    from twin.config.loader import load_campaign

    cfg = {"schema_version": 1, "campaign": {"name": name, "seed": 7}, "models": MODEL,
           "timeline": {"start": 0.0, "end": 1.0, "units": "s"},
           "resources": {"type": "local", "ranks": 1, "workers": 1},
           "assimilation": {**_assimilation(method, fine, variant), "observations": observations}}
    if decision:
        cfg["decision"] = {"qois": ["mean", "energy"], "horizon": 0.5, "credible_levels": [0.05, 0.5, 0.95]}
    path = d / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    (exp,) = run_online(load_campaign(path), MPI.COMM_WORLD, d / name)
    return exp


def _arrays(exp, name: str) -> dict[str, np.ndarray]:
    with xr.open_dataset(exp / name, decode_times=False) as ds:
        return {k: ds[k].values for k in ds.data_vars}


#: what each method's analyses are, in diagnostics.nc
ANALYSIS_KEYS = {"esmda": ("misfit", "parameter_F", "parameter_spread_F", "spread", "n_obs"),
                 "4dvar": ("cost", "cost_initial", "parameter_F", "iterations", "n_obs")}


@pytest.fixture(scope="module", params=["esmda", "4dvar"])
def twin(request, tmp_path_factory):
    """The method's twin experiment observing 12 stations at every model step, and its observations.nc."""
    method = request.param
    d = tmp_path_factory.mktemp(f"roundtrip_{method}")
    exp = _run(d, "twin", method, TWIN_NETWORK, fine=True)
    (d / "measured.nc").write_bytes((exp / "observations.nc").read_bytes())
    return method, d, exp


def _assert_same_analyses(method, a, b, rows=slice(None)) -> None:
    pa, pb = _arrays(a, "posterior.nc")["l96_x"], _arrays(b, "posterior.nc")["l96_x"]
    assert np.array_equal(pa[:, rows], pb), "posterior differs"
    da, db = _arrays(a, "diagnostics.nc"), _arrays(b, "diagnostics.nc")
    for k in ANALYSIS_KEYS[method]:
        assert da[k].tobytes() == db[k].tobytes(), (k, da[k], db[k])


def test_the_twin_experiments_file_gives_its_analyses_bitwise(twin):
    method, d, exp = twin
    with xr.open_dataset(exp / "observations.nc", decode_times=False) as ds:
        assert ds.attrs["featureType"] == "timeSeries" and ds.attrs["twin_networks_not_written"] == "none"
        # every observation at its own time: the twin observed every model step, 0.05 .. 0.4
        assert np.allclose(ds["time"].values, 0.05 * np.arange(1, 9)) and ds["obs_x"].shape == (12, 8)
    fed = _run(d, "fed", method, _file_network("measured.nc"), fine=True)
    _assert_same_analyses(method, exp, fed)
    diag = _arrays(fed, "diagnostics.nc")
    assert "rmse" not in diag and np.all(np.isfinite(diag["chi2_per_dof"]))  # no truth: observation space
    assert not (fed / "observations.nc").exists() and not (fed / "free_run.nc").exists()
    with CheckpointReader(fed / "observations.h5") as r:
        assert "truth" not in r.array_names
        assert r.meta["files"][0]["qc"]["accepted"] == 96 and r.meta["files"][0]["file"].endswith("measured.nc")


def test_observations_between_analysis_times_are_used_at_their_own_steps(twin):
    """A coarser schedule fed with the fine twin's file: ES-MDA's members stop at every observation's step, 4D-Var's
    passes too, so the analyses are the fine twin's (bitwise; at the coarse campaign's times)."""
    method, d, exp = twin
    coarse = _run(d, "coarse", method, _file_network("measured.nc"), fine=False)
    with CheckpointReader(coarse / "observations.h5") as r:
        steps, times = r.read_array("steps"), r.read_array("obs_times")
    assert sorted(set(steps.tolist())) == list(range(1, 9))  # the odd steps are not the coarse schedule's times
    assert np.allclose(times, 0.05 * steps)
    # ES-MDA's posterior.nc holds the schedule's times (every other step of the twin's); 4D-Var's the window ends
    _assert_same_analyses(method, exp, coarse, rows=slice(None, None, 2) if method == "esmda" else slice(None))


def _station_file(path, values, errors, times, positions_m, *, dirty: bool) -> None:
    """The stations' values (station, time) as a CF-1.10 timeSeries file written with plain netCDF4, positions in
    km; ``dirty`` adds what quality control must catch: a station outside the ring, a report after the campaign,
    a value above ``valid_max``; both files miss one value (``_FillValue``)."""
    fill, vmax = -9999.0, 100.0
    v, e, t, x = values.copy(), errors.copy(), list(times), list(positions_m)
    v[3, 2] = fill
    if dirty:
        v[5, 4] = 150.0                                               # above valid_max: missing to the reader
        v, e, x = np.vstack([v, v[:1]]), np.vstack([e, e[:1]]), x + [45.0]   # outside the ring [0, 40) m
        v, e, t = np.hstack([v, v[:, :1]]), np.hstack([e, e[:, :1]]), t + [0.45]  # after the campaign's end
    else:
        v[5, 4] = fill
    with netCDF4.Dataset(path, "w") as nc:
        nc.Conventions, nc.featureType = "CF-1.10", "timeSeries"
        nc.createDimension("station", len(x))
        nc.createDimension("time", len(t))
        xv = nc.createVariable("x", "f8", ("station",))
        xv.units, xv.axis, xv.standard_name = "km", "X", "projection_x_coordinate"
        xv[:] = np.array(x) * 1e-3
        nc.createVariable("station_id", "i4", ("station",)).cf_role = "timeseries_id"
        tv = nc.createVariable("time", "f8", ("time",))
        tv.units, tv.standard_name = "1", "time"
        tv[:] = t
        obs = nc.createVariable("obs_x", "f8", ("station", "time"), fill_value=fill)
        obs.units, obs.coordinates, obs.valid_max = "1", "time x", vmax
        obs[:] = v
        err = nc.createVariable("obs_x_error", "f8", ("station", "time"))
        err.units = "1"
        err[:] = e


def test_a_measured_file_with_bad_values_counts_them_and_uses_the_rest(twin):
    method, d, exp = twin
    with xr.open_dataset(exp / "observations.nc", decode_times=False) as ds:
        values, errors = ds["obs_x"].values, ds["obs_x_error"].values
        times, positions = ds["time"].values.tolist(), ds["obs_x_x"].values.tolist()
    _station_file(d / "clean.nc", values, errors, times, positions, dirty=False)
    _station_file(d / "dirty.nc", values, errors, times, positions, dirty=True)
    clean = _run(d, "clean", method, _file_network("clean.nc"), fine=False, decision=True)
    dirty = _run(d, "dirty", method, _file_network("dirty.nc"), fine=False, decision=True)
    _assert_same_analyses(method, clean, dirty)
    with CheckpointReader(dirty / "observations.h5") as r:
        (record,) = r.meta["files"]
    # 12 stations x 8 times, less two missing; the 13th station's 8 reports outside the domain; the 9th time's 13
    # reports after the campaign
    assert {k: v for k, v in record["qc"].items() if v} == {"accepted": 94, "missing": 2, "outside_time": 13,
                                                            "outside_domain": 8}, record
    diag = _arrays(dirty, "diagnostics.nc")
    n = diag["n_obs"]
    assert (n[0] if method == "esmda" else n.sum()) == 94
    assert "rmse" not in diag and np.all(np.isfinite(diag["omb_std"])) and np.all(np.isfinite(diag["desroziers_r"]))
    assert (dirty / "decision.json").is_file() and not (dirty / "free_run.nc").exists()
    from twin.campaign.status import status

    (exp_status,) = status(d / "dirty", verify=False).experiments
    assert exp_status.state == "done" and exp_status.cycles_done == exp_status.n_cycles, exp_status


@pytest.mark.parametrize("variant", ["local"])
def test_localised_esmda_from_the_twins_file_is_bitwise_too(tmp_path, variant):
    """ES-MDA localised: the data's locations are the stations' (one row per observation of the file)."""
    exp = _run(tmp_path, "twin", "esmda", TWIN_NETWORK, fine=False, variant=variant)
    (tmp_path / "measured.nc").write_bytes((exp / "observations.nc").read_bytes())
    fed = _run(tmp_path, "fed", "esmda", _file_network("measured.nc"), fine=False, variant=variant)
    _assert_same_analyses("esmda", exp, fed)


def test_a_4dvar_window_without_observations_fails_with_one_line_naming_it(tmp_path):
    """Observations only at 0.05 and 0.1: the second window [0.2, 0.4] would have nothing to fit; the experiment
    fails before any window runs, saying which window and file, and what to change."""
    import json

    with netCDF4.Dataset(tmp_path / "early.nc", "w") as nc:
        nc.Conventions, nc.featureType = "CF-1.10", "timeSeries"
        nc.createDimension("station", len(STATIONS))
        nc.createDimension("time", 2)
        x = nc.createVariable("x", "f8", ("station",))
        x.units, x.axis = "m", "X"
        x[:] = np.ravel(STATIONS)
        nc.createVariable("station_id", "i4", ("station",)).cf_role = "timeseries_id"
        t = nc.createVariable("time", "f8", ("time",))
        t.units, t.standard_name = "1", "time"
        t[:] = [0.05, 0.1]
        v = nc.createVariable("obs_x", "f8", ("station", "time"))
        v.units, v.coordinates = "1", "time x"
        v[:] = 1.0
    network = [{"type": "file", "file": "early.nc", "error_std": 0.5,
                "variables": {"x": {"name": "obs_x", "units": "1"}}}]
    exp = _run(tmp_path, "early", "4dvar", network, fine=False)
    reason = json.loads((exp / "failed.json").read_text())["reason"]
    assert "4D-Var window 1 [0.2, 0.4] gets no observation from" in reason and "early.nc" in reason
    assert "\n" not in reason and not layout.checkpoint_file(exp, 1).exists()
