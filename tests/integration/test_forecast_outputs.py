"""What runs write: CF time with the calendar start as reference date in a forecast run's and a campaign's files
(xarray decodes the dates of the run, not 1970), field files only when ``outputs.fields`` asks for them, at the
``outputs.compression`` level."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from linear_case import linear_campaign

ROOT = Path(__file__).resolve().parents[2]


def test_forecast_files_carry_the_calendar_start(tmp_path):
    text = (ROOT / "configs" / "quickstart.yaml").read_text()
    assert "  start: 0.0\n" in text
    (tmp_path / "q.yaml").write_text(text.replace("  start: 0.0\n", "  start: 2026-03-01T06:00+02:00\n"))
    out = subprocess.run([sys.executable, "-m", "twin.cli", "run", "q.yaml", "-o", "run", "--quiet"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    for name in ("forecast.nc", "qoi.nc"):
        with xr.open_dataset(tmp_path / "run" / name) as ds:
            assert ds["time"].encoding["units"] == "seconds since 2026-03-01T04:00:00Z"
            expected = np.datetime64("2026-03-01T04:00:00") + np.arange(6) * np.timedelta64(10, "s")
            assert (ds["time"].values == expected).all(), ds["time"].values


def test_outputs_fields_and_compression_are_obeyed(tmp_path):
    """``outputs.fields: false`` leaves the field files out (QoIs only); ``compression`` sets their zlib level."""
    import netCDF4

    text = (ROOT / "configs" / "quickstart.yaml").read_text()
    assert "outputs:\n  directory: runs/{name}\n" in text
    for name, outputs in (("nofields", "  fields: false\n"), ("level6", "  compression: 6\n")):
        (tmp_path / f"{name}.yaml").write_text(text.replace("outputs:\n  directory: runs/{name}\n",
                                                            "outputs:\n  directory: runs/{name}\n" + outputs))
        out = subprocess.run([sys.executable, "-m", "twin.cli", "run", f"{name}.yaml", "-o", name, "--quiet"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr
    assert not (tmp_path / "nofields" / "forecast.nc").exists() and (tmp_path / "nofields" / "qoi.nc").is_file()
    with netCDF4.Dataset(tmp_path / "level6" / "forecast.nc") as nc:
        assert nc["T"].filters()["zlib"] and nc["T"].filters()["complevel"] == 6


CAMPAIGN = linear_campaign("dated", start="2026-03-01T12:00Z",
                           tail="decision: {qois: [mass], horizon: 0.1}\noutputs: {compression: 6}\n")


def test_campaign_files_carry_the_calendar_start(tmp_path):
    """Every NetCDF file of a campaign that starts at a date decodes to that date's times; the ensemble files are
    compressed at the ``outputs.compression`` level."""
    import netCDF4

    (tmp_path / "c.yaml").write_text(CAMPAIGN)
    out = subprocess.run([sys.executable, "-m", "twin.cli", "run", "c.yaml", "-o", "run", "--quiet"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    exp = tmp_path / "run" / "experiments" / "dated"
    start = np.datetime64("2026-03-01T12:00:00")
    for name in ("posterior.nc", "forecast.nc", "diagnostics.nc", "free_run.nc", "prediction.nc"):
        with xr.open_dataset(exp / name) as ds:
            assert ds["time"].encoding["units"] == "seconds since 2026-03-01T12:00:00Z", name
            t = ds["time"].values
            assert t.min() >= start and t.max() <= start + np.timedelta64(2, "s"), (name, t)
    with xr.open_dataset(exp / "diagnostics.nc") as ds:
        expected = start + np.arange(1, 5) * np.timedelta64(50, "ms")
        assert (ds["time"].values == expected).all(), ds["time"].values
    for name in ("posterior.nc", "forecast.nc"):
        with netCDF4.Dataset(exp / name) as nc:
            assert nc["u"].filters()["zlib"] and nc["u"].filters()["complevel"] == 6, name
    # the free run over the forecast horizon: those records belong to no cycle, which the file says with its fill
    # value (it wrote -1 as if it were a cycle); diagnostics.nc, every record a cycle, has no fill value
    with netCDF4.Dataset(exp / "free_run.nc") as nc:
        assert nc["cycle"]._FillValue == -1 and "none after the last analysis" in nc["cycle"].long_name
    with xr.open_dataset(exp / "free_run.nc") as ds:
        cycle = ds["cycle"].values
        n = int(np.sum(ds["time"].values <= expected[-1]))
    assert list(cycle[:n]) == list(range(n)) and n < cycle.size and np.isnan(cycle[n:]).all(), cycle
    with netCDF4.Dataset(exp / "diagnostics.nc") as nc:
        assert "_FillValue" not in nc["cycle"].ncattrs() and nc["cycle"][:].tolist() == [0, 1, 2, 3]
    from twin.io.inspect import inspect

    shown = inspect(exp / "free_run.nc")  # the file's type, not the float xarray reads it as
    assert "cycle(time) int32 [1]: assimilation cycle index (none after the last analysis)" in shown, shown


def test_qoi_file_written_in_parts_equals_one_write(tmp_path, monkeypatch):
    """A forecast run brings ``qoi.nc`` up to date every ``QOI_FLUSH_SECONDS`` (a write per output time copied the
    file each time: quadratic in the output times); written at every output time (0 s) it holds the same numbers
    as written once at the end."""
    import twin.driver
    from twin.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "q.yaml").write_text((ROOT / "configs" / "quickstart.yaml").read_text())
    assert main(["run", "q.yaml", "-o", "once", "--quiet"]) == 0
    monkeypatch.setattr(twin.driver, "QOI_FLUSH_SECONDS", 0.0)
    assert main(["run", "q.yaml", "-o", "parts", "--quiet"]) == 0
    with xr.open_dataset(tmp_path / "once" / "qoi.nc", decode_times=False) as a, \
            xr.open_dataset(tmp_path / "parts" / "qoi.nc", decode_times=False) as b:
        assert set(a.variables) == set(b.variables) and a.sizes["time"] == 6
        for name in a.variables:
            assert a[name].values.tobytes() == b[name].values.tobytes(), name
    # twin inspect of the forecast run: its records belong to no cycle (found by a probe: a traceback, exit 1)
    assert main(["inspect", "once"]) == 0
    from twin.io.inspect import inspect

    assert "cycles: none (no record belongs to an assimilation cycle)" in inspect(tmp_path / "once" / "qoi.nc")


FAILS_LATER = '''\
import os

from twin.core.errors import SolverError
from twin_lorenz63.model import Lorenz63


class Failing(Lorenz63):
    """Lorenz-63 that fails from t = FAIL_AT on."""

    def advance(self, state, t0, t1):
        if t0 >= float(os.environ.get("FAIL_AT", "inf")) - 1e-9:
            raise SolverError(self.name, t0, "DIVERGED_TEST")
        super().advance(state, t0, t1)


Failing.config_class = Lorenz63.config_class
'''


def test_a_forecast_that_stopped_early_is_reported_as_not_finished(tmp_path, monkeypatch, capsys):
    """Found by a probe: a forecast killed at 171 of 750 output intervals got an ordinary report and exit status 0.
    qoi.nc now says how many records the whole run writes; here a user's model fails at t = 0.3 of 1.0 (exit 1, as
    a run that started and failed), and twin report says NOT FINISHED with how far it got, exit 1."""
    from importlib import metadata

    import yaml

    import twin.driver
    from twin.cli import main

    if not any(ep.name == "lorenz63" for ep in metadata.entry_points(group="twin.kinds")):
        pytest.skip("needs the example plugin examples/lorenz63-plugin (make setup installs it)")
    data = yaml.safe_load((ROOT / "examples" / "lorenz63-plugin" / "campaign.yaml").read_text())
    for key in ("assimilation", "decision"):
        data.pop(key)
    data["models"]["l63"]["type"] = "failslater:Failing"
    data["timeline"].update(end=1.0, output_every=0.1)
    data["outputs"] = {}
    (tmp_path / "f.yaml").write_text(yaml.safe_dump(data, sort_keys=False))
    (tmp_path / "failslater.py").write_text(FAILS_LATER)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(twin.driver, "QOI_FLUSH_SECONDS", 0.0)  # qoi.nc written at every output time
    monkeypatch.setenv("FAIL_AT", "0.3")
    assert main(["run", "f.yaml", "-o", "run", "--quiet"]) == 1
    capsys.readouterr()
    assert main(["report", "run"]) == 1
    err = capsys.readouterr().err
    assert "error: the forecast in run has not finished (stopped at 3/10 output intervals)" in err, err
    assert "NOT FINISHED: the forecast stopped early" in (tmp_path / "run" / "report" / "index.html").read_text()
    # the whole forecast: an ordinary report, exit 0. (Found on the way: a forecast of this dimensionless-time model
    # ended in a traceback, 's' not convertible to '1', and then its state 'x' collided with forecast.nc's
    # coordinate x.)
    monkeypatch.delenv("FAIL_AT")
    assert main(["run", "f.yaml", "-o", "whole", "--quiet"]) == 0
    assert main(["report", "whole"]) == 0
    with xr.open_dataset(tmp_path / "whole" / "forecast.nc", decode_times=False) as ds:
        assert "l63_x" in ds.data_vars and ds["time"].values.tolist() == pytest.approx(np.arange(11) * 0.1)
