"""``horizon.nc``: the forecast fields over the decision's horizon (issue #21), next to ``prediction.nc``.

Its last time is the configured horizon after the last analysis, in CF time with the campaign's reference date; its
ensemble mean and spread are those of the very member runs whose QoIs ``prediction.nc`` holds, so a linear QoI (the
mass of the tracer, the mean of Lorenz-96's ``x``) of the mean field equals the members' mean QoI, and the mean energy
``<x^2>/2`` of Lorenz-96 equals ``(mean^2 + (N-1)/N spread^2)/2`` averaged over the domain (which checks the spread).
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

from campaign_case import l96_campaign
from linear_case import linear_campaign

DATED = linear_campaign("dated", start="2026-03-01T12:00Z",
                        tail="decision: {qois: [mass, max], horizon: 0.25}\n")


def _run(tmp_path, text: str, name: str):
    (tmp_path / f"{name}.yaml").write_text(text)
    out = subprocess.run([sys.executable, "-m", "twin.cli", "run", f"{name}.yaml", "-o", name, "--quiet"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    (exp,) = [p for p in (tmp_path / name / "experiments").iterdir() if p.is_dir()]
    return exp


def test_horizon_file_of_a_dated_campaign(tmp_path):
    import json

    from twin.io.netcdf import verify_netcdf

    exp = _run(tmp_path, DATED, "dated")
    path = exp / "horizon.nc"
    assert verify_netcdf(path) == (True, "ok")
    # 4 cycles of 5 steps of 0.01 s: the last analysis at 0.2 s, the horizon 0.25 s later
    with xr.open_dataset(path) as ds:
        assert ds["time"].encoding["units"] == "seconds since 2026-03-01T12:00:00Z"
        start = np.datetime64("2026-03-01T12:00:00")
        assert ds["time"].values[-1] == start + np.timedelta64(450, "ms")
        assert ds["forecast_reference_time"].values == start + np.timedelta64(200, "ms")
        assert ds.sizes["time"] == 4 and np.all(np.diff(ds["time"].values) > np.timedelta64(0, "ms"))
    with xr.open_dataset(path, decode_times=False) as ds, \
            xr.open_dataset(exp / "prediction.nc", decode_times=False) as pred:
        assert ds["time"].attrs["standard_name"] == "time" and ds["time"].attrs["calendar"] == "standard"
        assert ds["forecast_period"].attrs["units"] == "seconds"
        np.testing.assert_allclose(ds["forecast_period"].values[-1], 0.25, rtol=1e-12)
        assert ds["forecast_reference_time"].attrs["standard_name"] == "forecast_reference_time"
        mean, spread = ds["u_mean"], ds["u_spread"]
        assert mean.dims == ("time", "x") and mean.attrs["units"] == "1"
        assert mean.attrs["cell_methods"] == "realization: mean"
        assert spread.attrs["cell_methods"] == "realization: standard_deviation"
        assert ds["x"].attrs["units"] == "m" and ds["x"].attrs["axis"] == "X"
        assert float(spread[-1].min()) > 0
        # prediction.nc's coordinates are CF's as the other files' (found by a probe: a fill value on its time, a
        # member without attributes, so ds.cf["realization"] failed)
        assert "_FillValue" not in pred["time"].encoding and "_FillValue" not in pred["member"].encoding
        assert pred["member"].attrs["standard_name"] == "realization" and pred["member"].dtype == np.int32
        assert pred["time"].attrs["calendar"] == "standard" and pred["time"].attrs["long_name"] == "time"
        # the snapshots are output times of prediction.nc; the last is the horizon
        assert np.isin(ds["time"].values, pred["time"].values).all()
        assert ds["time"].values[-1] == pred["time"].values[-1]
        # mass = integral of u: the members' mean mass is the mass of the mean field (trapezoid-free: cells)
        dx = float(np.diff(ds["x"].values)[0])
        for i, t in enumerate(ds["time"].values):
            j = int(np.flatnonzero(pred["time"].values == t)[0])
            np.testing.assert_allclose(float(mean[i].sum()) * dx, float(pred["mass"][:, j].mean()), rtol=1e-10)
        # and max: no member's maximum lies below the maximum of the mean field
        assert float(pred["max"][:, -1].max()) >= float(mean[-1].max()) - 1e-12
    record = json.loads((exp / "decision.json").read_text())
    np.testing.assert_allclose(record["qois"]["mass"]["mean"], float(pred_mean(exp, "mass")), rtol=1e-12)
    # the record says when as a date and where it comes from (a probe: neither, and twin inspect knew it not)
    assert record["time"] == pytest.approx(0.2) and record["time_utc"] == "2026-03-01T12:00:00.200000+00:00"
    with xr.open_dataset(path) as ds:
        assert record["provenance"]["campaign_sha256"] == ds.attrs["twin_campaign_sha256"]
        assert record["provenance"]["git_revision"] == ds.attrs["twin_git_revision"]
    from twin.io.inspect import examine

    seen = examine(exp / "decision.json")
    assert seen.ok and seen.text.startswith(f"{exp / 'decision.json'}: decision record (") and \
        "at 2026-03-01T12:00:00.200000+00:00" in seen.text and "campaign file SHA-256 " in seen.text
    # the report's horizon panel reads the file: a figure and the table of the horizon's mean
    from twin.report.html import write_report

    text = write_report(tmp_path / "dated").read_text()
    section = text[text.index("Forecast fields over the horizon"):]
    assert (tmp_path / "dated" / "report" / "dated" / "horizon_fields.png").is_file()
    assert "<img" in section[:section.index("</table>")] and "mean at +0.25 s" in section
    with xr.open_dataset(path) as ds:
        assert f"{float(ds['u_mean'][-1].mean()):.4g}" in section[:section.index("</table>")]


def pred_mean(exp, name: str) -> float:
    with xr.open_dataset(exp / "prediction.nc", decode_times=False) as pred:
        return float(pred[name][:, -1].mean())


def test_horizon_spread_matches_the_members_energy(tmp_path):
    text = l96_campaign("l96h", N=5, cycles="2", extra="decision: {qois: [mean, energy], horizon: 0.3}\n")
    exp = _run(tmp_path, text, "l96h")
    with xr.open_dataset(exp / "horizon.nc", decode_times=False) as ds, \
            xr.open_dataset(exp / "prediction.nc", decode_times=False) as pred:
        # Lorenz-96 has no time unit: model time, t_K = 2 cycles x 2 steps x 0.05 = 0.2, horizon 0.3 later
        np.testing.assert_allclose(ds["time"].values[-1], 0.5, rtol=1e-12)
        m, s = ds["l96_x_mean"].values, ds["l96_x_spread"].values
        assert m.shape == (4, 40)
        n = pred.sizes["member"]
        for i, t in enumerate(ds["time"].values):
            j = int(np.flatnonzero(np.isclose(pred["time"].values, t, rtol=0, atol=1e-12))[0])
            np.testing.assert_allclose(m[i].mean(), float(pred["mean"][:, j].mean()), rtol=1e-10)
            energy = 0.5 * np.mean(m[i] ** 2 + (n - 1) / n * s[i] ** 2)
            np.testing.assert_allclose(energy, float(pred["energy"][:, j].mean()), rtol=1e-10)


def test_snapshot_indices_end_at_the_horizon():
    from twin.campaign.decide import snapshot_indices

    assert snapshot_indices(10) == [1, 4, 7, 9]
    assert snapshot_indices(3) == [0, 1, 2]
    assert snapshot_indices(1) == [0]
    assert snapshot_indices(10, 1) == [9]

