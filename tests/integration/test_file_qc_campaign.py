"""Thinning and the physical range check in a Lorenz-96 ETKF campaign fed by a station file (10 cycles, 40 stations
1 m apart on the ring): boxes smaller than the station spacing and a range nothing falls outside change nothing
(the analyses are bitwise those of the campaign without the keys); boxes of 2 m keep the station nearest each box
centre and three readings of 99 are flagged ``range``: the counts are in ``observations.h5``, per cycle in
``diagnostics.nc`` and in ``twin status``, and the analyses are bitwise those of a file holding only the observations the checks kept."""

from __future__ import annotations

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
K, M = 10, 40
OUTLIERS = [(5, 2), (8, 4), (21, 7)]  # (station, cycle) reading 99
pytestmark = pytest.mark.timeout(600)


def _run(cwd: Path, *args: str):
    out = subprocess.run([sys.executable, "-m", "twin.cli", *args], cwd=cwd, capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    return out


def _values() -> np.ndarray:
    """Observations (cycles, stations) of about Lorenz-96's climatology."""
    return np.random.default_rng(17).normal(2.3, 3.6, size=(K, M))


def _station_file(path: Path, y: np.ndarray, stations) -> None:
    """A CF timeSeries file of ``y[:, stations]`` (NaN: missing), stations at x = station (m), written in km."""
    stations = list(stations)
    with netCDF4.Dataset(path, "w") as nc:
        nc.Conventions, nc.featureType = "CF-1.10", "timeSeries"
        nc.createDimension("station", len(stations))
        nc.createDimension("time", K)
        x = nc.createVariable("x", "f8", ("station",))
        x.units, x.axis, x.standard_name = "km", "X", "projection_x_coordinate"
        x[:] = np.array(stations, dtype=float) * 1e-3
        nc.createVariable("station_id", "i4", ("station",)).cf_role = "timeseries_id"
        t = nc.createVariable("time", "f8", ("time",))
        t.units, t.standard_name = "1", "time"
        t[:] = 0.1 * np.arange(1, K + 1)  # the analysis times: every 2 steps of 0.05
        v = nc.createVariable("x_obs", "f8", ("station", "time"), fill_value=-9999.0)
        v.units, v.coordinates = "1", "time x"
        v[:] = np.where(np.isfinite(y[:, stations].T), y[:, stations].T, -9999.0)


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    d = tmp_path_factory.mktemp("fileqc")
    text = (ROOT / "configs" / "lorenz96_etkf.yaml").read_text()
    assert NETWORK in text and "cycles: 30" in text
    text = text.replace("cycles: 30", f"cycles: {K}")
    y = _values()
    _station_file(d / "clean.nc", y, range(M))
    bad = y.copy()
    for s, k in OUTLIERS:
        bad[k, s] = 99.0
    _station_file(d / "outliers.nc", bad, range(M))
    # what thinning to 2 m boxes and the range check keep: the odd stations (nearest the box centres 1, 3, ..), but
    # station 4 where station 5 reads 99 (cycle 2); station 8's 99 was to be thinned anyway
    kept = np.full_like(y, np.nan)
    kept[:, 1::2] = y[:, 1::2]
    kept[2, 5], kept[2, 4] = np.nan, y[2, 4]
    kept[7, 21], kept[7, 20] = np.nan, y[7, 20]
    _station_file(d / "kept.nc", kept, sorted(set(range(1, M, 2)) | {4, 20}))
    return d, text


def _campaign(case, name: str, file: str, variable: str = "{name: x_obs, units: '1', error_std: 1.0}",
              extra: str = "") -> Path:
    d, text = case
    network = f"observations: [{{type: file, file: {file}, variables: {{x: {variable}}}{extra}}}]"
    (d / f"{name}.yaml").write_text(text.replace(NETWORK, network).replace("name: lorenz96_etkf", f"name: {name}"))
    _run(d, "run", f"{name}.yaml", "-o", name, "--quiet")
    return d / name / "experiments" / name


def _posterior(exp: Path) -> np.ndarray:
    with xr.open_dataset(exp / "posterior.nc", decode_times=False) as ds:
        return ds["l96_x"].values


def _qc(exp: Path) -> dict:
    with CheckpointReader(exp / "observations.h5") as r:
        (f,) = r.meta["files"]
    return f["qc"]


def test_boxes_finer_than_the_stations_and_a_wide_range_change_nothing(case):
    plain = _campaign(case, "plain", "clean.nc")
    fine = _campaign(case, "fine", "clean.nc", "{name: x_obs, units: '1', error_std: 1.0, range: [-50, 50]}",
                     ", thinning: {spacing: 0.0005, units: km}")
    assert np.array_equal(_posterior(plain), _posterior(fine))  # bitwise
    assert _qc(fine) == _qc(plain) == {"accepted": K * M, "missing": 0, "outside_time": 0, "outside_domain": 0,
                                       "range": 0, "duplicate": 0, "thinned": 0, "background": 0, "superobs": 0}


def test_thinning_and_the_range_check_keep_what_they_should_and_say_so(case):
    d = case[0]
    thinned = _campaign(case, "thinned", "outliers.nc",
                        "{name: x_obs, units: '1', error_std: 1.0, range: [-50, 50]}", ", thinning: {spacing: 2}")
    kept = _campaign(case, "kept", "kept.nc")
    assert _qc(thinned) == {"accepted": K * M // 2, "missing": 0, "outside_time": 0, "outside_domain": 0,
                            "range": 3, "duplicate": 0, "thinned": K * M // 2 - 3, "background": 0, "superobs": 0}
    with xr.open_dataset(thinned / "diagnostics.nc", decode_times=False) as diag:
        assert diag["n_obs"].values.tolist() == [M // 2] * K
        # and per cycle what the checks left out: each cycle's readings are M, M // 2 of them used
        out_of_range = np.bincount([k for _, k in OUTLIERS], minlength=K)
        assert diag["n_rejected_range"].values.tolist() == out_of_range.tolist()
        assert diag["n_rejected_thinned"].values.tolist() == (M - M // 2 - out_of_range).tolist()
        assert int(diag["n_rejected_duplicate"].sum()) == int(diag["n_rejected_outside_domain"].sum()) == 0
        assert diag["n_rejected_range"].attrs["units"] == "1"
    # the analyses are those of the observations the checks kept, bitwise
    assert np.array_equal(_posterior(thinned), _posterior(kept))
    out = subprocess.run([sys.executable, "-m", "twin.cli", "status", "thinned"], cwd=d, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    (line,) = [ln.strip() for ln in out.stdout.splitlines() if "observations:" in ln]
    assert line == ("thinned observations: 200 used, 0 missing, 0 outside the time span, 0 outside the domain, "
                    "0 duplicate, 3 out of range, 197 thinned or superseded, no background check")
    # the report's table of each file's checks says the same
    out = subprocess.run([sys.executable, "-m", "twin.cli", "report", "thinned"], cwd=d, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    html = (d / "thinned" / "report" / "index.html").read_text()
    assert "<th>out of range</th>" in html and "<th>thinned or superseded</th>" in html
    assert "<td>200</td><td>0</td><td>0</td><td>0</td><td>3</td><td>0</td><td>197</td><td>0</td><td></td>" in html
