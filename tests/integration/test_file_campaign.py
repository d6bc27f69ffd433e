"""A campaign observed through a file, as a twin of a real system is: the Lorenz-96 ETKF twin experiment's synthetic
observations, written by plain netCDF4 code as a CF timeSeries file with positions in km, give exactly the twin
experiment's analyses; the campaign has no truth, so its diagnostics are in observation space: chi-square per degree
of freedom near 1 with the right observation errors and far from it with errors four times too small in variance;
silent stations are left out of their cycles; the report and the decision are written from the posterior alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import netCDF4
import numpy as np
import pytest
import xarray as xr

from twin.io.checkpoint import CheckpointReader

ROOT = Path(__file__).resolve().parents[2]
NETWORK = "observations: [{type: all_points, component: 0, error_std: 1.0}]"


def _run(cwd: Path, *args: str):
    out = subprocess.run([sys.executable, "-m", "twin.cli", *args], cwd=cwd, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


def _station_file(path: Path, y: np.ndarray, times: np.ndarray, error: float, silent=(), outliers=()) -> None:
    """``y`` (cycles, 40) at the 40 grid points of the ring, written as a CF-1.10 timeSeries file."""
    K, m = y.shape
    with netCDF4.Dataset(path, "w") as nc:
        nc.Conventions, nc.featureType = "CF-1.10", "timeSeries"
        nc.createDimension("station", m)
        nc.createDimension("time", K)
        x = nc.createVariable("x", "f8", ("station",))
        x.units, x.axis, x.standard_name = "km", "X", "projection_x_coordinate"
        x[:] = np.arange(m) * 1e-3  # the ring's grid points 0 .. 39 m
        nc.createVariable("station_id", "i4", ("station",)).cf_role = "timeseries_id"
        t = nc.createVariable("time", "f8", ("time",))
        t.units, t.standard_name = "1", "time"  # Lorenz-96 counts dimensionless time
        t[:] = times
        v = nc.createVariable("x_obs", "f8", ("station", "time"), fill_value=-9999.0)
        v.units, v.coordinates, v.ancillary_variables = "1", "time x", "x_obs_error"
        values = y.T.copy()
        for station, cycle in silent:
            values[station, cycle] = -9999.0
        for station, cycle in outliers:  # a gauge gone wrong: 30 error standard deviations off
            values[station, cycle] += 30.0 * error
        v[:] = values
        e = nc.createVariable("x_obs_error", "f8", ("station", "time"))
        e.units, e.standard_name = "1", "x standard_error"
        e[:] = error


@pytest.fixture(scope="module")
def twin_run(tmp_path_factory):
    """The shipped Lorenz-96 ETKF twin experiment (20 cycles) and its observations."""
    d = tmp_path_factory.mktemp("filecampaign")
    text = (ROOT / "configs" / "lorenz96_etkf.yaml").read_text()
    assert NETWORK in text and "cycles: 30" in text
    text = text.replace("cycles: 30", "cycles: 20")
    (d / "twin.yaml").write_text(text)
    _run(d, "run", "twin.yaml", "-o", "experiment", "--quiet")
    with CheckpointReader(d / "experiment" / "experiments" / "lorenz96_etkf" / "observations.h5") as r:
        y, times = r.read_array("observations"), r.read_array("times")
    return d, text, y, times


def _file_campaign(run, name: str, file_error: float, silent=(), outliers=(), check: float | None = None) -> Path:
    d, text, y, times = run
    _station_file(d / f"{name}.nc", y, times[1:], file_error, silent, outliers)
    network = (f"observations: [{{type: file, file: {name}.nc, variables: {{x: {{name: x_obs, units: '1'}}}}}}]")
    if check is not None:
        network += f"\n  background_check: {check}"
    (d / f"{name}.yaml").write_text(text.replace(NETWORK, network).replace("name: lorenz96_etkf", f"name: {name}"))
    _run(d, "run", f"{name}.yaml", "-o", name, "--quiet")
    return d / name / "experiments" / name


def test_observations_from_a_file_give_the_twin_experiments_analysis(twin_run):
    d = twin_run[0]
    exp = _file_campaign(twin_run, "measured", 1.0)
    twin = d / "experiment" / "experiments" / "lorenz96_etkf"
    with xr.open_dataset(twin / "posterior.nc", decode_times=False) as a, \
            xr.open_dataset(exp / "posterior.nc", decode_times=False) as b:
        assert np.array_equal(a["l96_x"].values, b["l96_x"].values)  # bitwise: the same numbers, read from a file
    with xr.open_dataset(exp / "diagnostics.nc", decode_times=False) as diag:
        assert "rmse" not in diag and "chi2_per_dof" in diag  # no truth: observation-space diagnostics
        # after the spin-up (the last 8 of 20 cycles): the innovations are as large as B and R say, nearly (the
        # twin's spread is a little small in these 20 cycles: spread/skill about 0.8)
        chi2 = diag["chi2_per_dof"].values[-8:]
        assert 0.7 < np.mean(chi2) < 1.6, chi2
        assert 0.7 < np.mean(diag["desroziers_r"].values[-8:]) < 1.6  # the true error variance is 1
    assert not (exp / "free_run.nc").exists()  # no nature run to continue
    assert (exp / "decision.json").is_file()
    printed = _run(d, "report", "measured").stdout.splitlines()
    # the terminal gets the answer in one line, then where the report is
    assert printed[-1].startswith("report: ") and printed[0].startswith("measured: ") and len(printed) == 2
    html = (d / "measured" / "report" / "index.html").read_text()
    assert "FAILED" not in html
    # no truth: the report judges the fit in observation space, and says which file fed it, with its QC counts
    assert "Fit to the observations" in html
    assert "innovation chi-square per observation" in html and "measured.nc" in html
    assert "<td>800</td>" in html  # 20 cycles x 40 stations assimilated


def test_wrong_errors_show_in_chi_square_and_silent_stations_are_left_out(twin_run):
    # the file claims errors of 0.5 (variance 4 times too small): chi-square per degree of freedom far above 1
    exp = _file_campaign(twin_run, "overconfident", 0.5)
    with xr.open_dataset(exp / "diagnostics.nc", decode_times=False) as diag:
        assert np.mean(diag["chi2_per_dof"].values[-8:]) > 2.5
        # and Desroziers' estimate of R says how wrong: about 1 where 0.25 was assumed
        assert np.mean(diag["desroziers_r"].values[-8:]) > 3 * np.mean(diag["assumed_r"].values[-8:])
    # three stations silent in cycles 3 and 7: those cycles assimilate 39 and 38 observations
    exp = _file_campaign(twin_run, "silent", 1.0, silent=[(4, 3), (5, 7), (6, 7)])
    with xr.open_dataset(exp / "diagnostics.nc", decode_times=False) as diag:
        n = diag["n_obs"].values
        assert n[3] == 39 and n[7] == 38 and n[0] == 40


def test_background_check_leaves_out_a_gauge_gone_wrong(twin_run):
    """Three readings 30 sigma off with background_check: 5: they are left out (counted per cycle, listed in
    qc.jsonl by cycle, network and row) exactly as if those gauges had been silent: the analyses equal bitwise those
    of the same file with the three readings missing."""
    bad = [(4, 3), (17, 3), (30, 9)]
    checked = _file_campaign(twin_run, "checked", 1.0, outliers=bad, check=5.0)
    silent = _file_campaign(twin_run, "silent3", 1.0, silent=bad, check=5.0)
    with xr.open_dataset(checked / "diagnostics.nc", decode_times=False) as diag:
        n_rej, n_obs = diag["n_rejected_background"].values, diag["n_obs"].values
    assert n_rej[3] == 2 and n_rej[9] == 1 and n_rej.sum() == 3, n_rej
    assert n_obs[3] == 38 and n_obs[9] == 39 and n_obs[0] == 40
    lines = [json.loads(x) for x in (checked / "qc.jsonl").read_text().splitlines()]
    assert [(r["cycle"], r["row"]) for r in lines] == [(3, 4), (3, 17), (9, 30)]
    assert len({r["network"] for r in lines}) == 1
    with xr.open_dataset(checked / "posterior.nc", decode_times=False) as a, \
            xr.open_dataset(silent / "posterior.nc", decode_times=False) as b:
        assert np.array_equal(a["l96_x"].values, b["l96_x"].values)
    assert (silent / "qc.jsonl").read_text() == ""  # nothing rejected where nothing was wrong


def test_a_file_campaign_as_a_workflow_equals_it_online(twin_run):
    """The cluster path reads files too: the file campaign (4 cycles, 8 members) run as a Parsl workflow (member
    forecasts as tasks, the analysis reading the file network's values per cycle from observations.h5) gives the online
    run's analyses bitwise."""
    d, text, y, times = twin_run
    _station_file(d / "wf.nc", y, times[1:], 1.0, (), ())
    network = "observations: [{type: file, file: wf.nc, variables: {x: {name: x_obs, units: '1'}}}]"
    small = (text.replace(NETWORK, network).replace("cycles: 20", "cycles: 4").replace("N: 20", "N: 8")
             .replace("resources: {type: local, ranks: 1, workers: 1}",
                      "resources: {type: local, ranks: 1, workers: 2, launcher: worker, task: member}"))
    assert "cycles: 4" in small and "launcher: worker" in small
    (d / "wf.yaml").write_text(small.replace("name: lorenz96_etkf", "name: wf"))
    _run(d, "run", "wf.yaml", "-o", "wf_workflow", "--workflow", "--quiet")
    online = small.replace("name: lorenz96_etkf", "name: wf").replace("workers: 2, ", "workers: 1, ")
    (d / "wf_on.yaml").write_text(online)
    _run(d, "run", "wf_on.yaml", "-o", "wf_online", "--quiet")
    a, b = (d / run / "experiments" / "wf" for run in ("wf_workflow", "wf_online"))
    assert (a / "forecast" / "cycle_0003").is_dir() and not (b / "forecast").exists()   # really two paths
    with xr.open_dataset(a / "posterior.nc", decode_times=False) as pa, \
            xr.open_dataset(b / "posterior.nc", decode_times=False) as pb:
        assert pa["l96_x"].shape == (8, 5, 40) and np.array_equal(pa["l96_x"].values, pb["l96_x"].values)
    with CheckpointReader(a / "observations.h5") as r:
        (record,) = r.meta["files"]
    assert record["qc"]["accepted"] == 4 * 40 and record["qc"]["outside_time"] == 16 * 40


def test_an_observation_file_changed_after_the_run_is_refused_by_the_rerun(twin_run):
    """The same command again after the campaign's observation file was edited does not go on with stale analyses:
    one line naming the file and the experiment (exit 2, as a changed campaign), the run directory untouched; the file
    restored, the rerun is the plain resume again (exit 0, nothing to do)."""
    d, text, y, times = twin_run
    exp = _file_campaign(twin_run, "edited", 1.0)
    original = (d / "edited.nc").read_bytes()
    before = {p: p.read_bytes() for p in exp.iterdir() if p.is_file()}
    _station_file(d / "edited.nc", y + 0.5, times[1:], 1.0)  # the same layout, other values
    out = subprocess.run([sys.executable, "-m", "twin.cli", "run", "edited.yaml", "-o", "edited", "--quiet"], cwd=d,
                         capture_output=True, text=True, timeout=600)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "Traceback" not in out.stderr, out.stdout + out.stderr
    assert str(d / "edited.nc") in lines[0] and "experiment edited" in lines[0] and "has changed" in lines[0]
    assert "restore the file" in lines[0] and "another run directory" in lines[0]
    assert {p: p.read_bytes() for p in exp.iterdir() if p.is_file()} == before
    (d / "edited.nc").write_bytes(original)
    _run(d, "run", "edited.yaml", "-o", "edited", "--quiet")
    assert (exp / "posterior.nc").read_bytes() == before[exp / "posterior.nc"]
