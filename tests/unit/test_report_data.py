"""What the report reads from a run directory, and what it refuses to read."""

from __future__ import annotations

import numpy as np
import xarray as xr


def test_a_file_larger_than_the_report_reads_is_left_out_with_the_reason(tmp_path, monkeypatch):
    from twin.report import data as report_data

    xr.Dataset({"h": (("member", "time", "x"), np.zeros((4, 3, 1000)))}).to_netcdf(tmp_path / "posterior.nc")
    monkeypatch.setattr(report_data, "READ_LIMIT", 50_000)
    run = report_data.load_run(tmp_path)
    assert run.posterior is None
    assert "posterior.nc holds" in run.missing["posterior"] and "more than the report reads" in run.missing["posterior"]
    monkeypatch.setattr(report_data, "READ_LIMIT", 10**9)
    assert report_data.load_run(tmp_path).posterior["h"].shape == (4, 3, 1000)
