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


def test_a_fourdvar_posterior_at_window_ends_finds_its_truth_rows():
    """4D-Var writes its posterior at the window ends (every second observation time here), the nature run has every
    observation time; the posterior's CF times are model times in seconds (x 86400 for a model in days)."""
    from twin.report.data import _at_posterior_times

    times = np.arange(0.0, 25.0)
    truth = np.arange(25.0)[:, None] * np.ones((1, 3))
    rows = _at_posterior_times(truth, times, 86400.0 * np.arange(2.0, 25.0, 2.0))
    assert rows is not None and np.array_equal(rows[:, 0], np.arange(2.0, 25.0, 2.0))
    assert _at_posterior_times(truth, times, 86400.0 * np.array([2.5, 24.0])) is None  # not an observation time


def test_a_single_analysis_has_the_spread_of_its_laplace_samples(tmp_path):
    """Found by a probe: the report's "What changed" table gave a 4D-Var parameter a spread of 0 (its MAP is one
    value) while its Laplace samples spread 0.9; without samples the spread is n/a, not 0."""
    from twin.report.data import RunData
    from twin.report.figures import changes_panel

    data = RunData("x", tmp_path, parameters={0: {"F": np.array([8.28])}, 1: {"F": np.array([8.11])}},
                   parameter_spreads={0: {"F": 1.1}, 1: {"F": 0.9}})
    panel = changes_panel(data, tmp_path)
    assert "<td>parameter F</td><td>8.28</td><td>8.11</td><td>1.1</td><td>0.9</td>" in panel.table
    data.parameter_spreads = {}
    panel = changes_panel(data, tmp_path)
    assert "<td>parameter F</td><td>8.28</td><td>8.11</td><td>n/a</td><td>n/a</td>" in panel.table


def test_an_axis_of_mixed_units_says_what_it_mixes():
    """A diagnostic over state variables of different units has no units (twin.io.netcdf.of_state): its axis says
    what it mixes instead of an empty "[]"."""
    from twin.io.netcdf import VariableMeta, of_state
    from twin.report.figures import _axis_units

    meta = of_state(VariableMeta("root-mean-square error", "{state}"), None, "h [m], u [m/s]")
    ds = xr.Dataset({"rmse": ("time", [1.0], meta.attrs()), "spread": ("time", [1.0], {"units": "m"})})
    assert _axis_units(ds, "rmse") == "h [m], u [m/s]: mixed units" and _axis_units(ds, "spread") == "[m]"
