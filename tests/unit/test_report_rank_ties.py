"""The rank histogram's ties: a truth equal to members (a clamped node: every member and the truth 0) takes a rank
drawn among those it ties with, so such entries spread evenly over the ranks instead of piling into rank 0."""

from __future__ import annotations

import numpy as np
import xarray as xr

from twin.report.data import RunData
from twin.report.figures import rank_counts


def _data(members: np.ndarray, truth: np.ndarray) -> RunData:
    """``members`` (member, time, x) as posterior.nc's variable ``u``, ``truth`` (time, x)."""
    ds = xr.Dataset({"u": (("member", "time", "x"), members)})
    return RunData(name="ties", directory=None, posterior=ds, truths={"u": truth})


def test_tied_entries_spread_over_the_ranks_and_untied_ones_keep_theirs():
    N, T, n = 4, 3, 5000
    clamped = _data(np.zeros((N, T, n)), np.zeros((T, n)))
    counts = rank_counts(clamped, "u")
    assert counts.sum() == (T - 1) * n and counts.size == N + 1
    expected = counts.sum() / counts.size  # uniform: each of the 5 ranks 2000 times, binomial sd about 40
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected)), counts
    # no ties: the truth above every member has rank N, below every member rank 0
    above = _data(np.zeros((N, T, n)), np.ones((T, n)))
    assert rank_counts(above, "u").tolist() == [0] * N + [(T - 1) * n]
    below = _data(np.zeros((N, T, n)), -np.ones((T, n)))
    assert rank_counts(below, "u").tolist() == [(T - 1) * n] + [0] * N


def test_the_prior_record_is_left_out_only_where_there_is_one():
    """A filter's posterior.nc starts with the prior at t_0, before its first forecast (t_1): left out of the rank
    histogram. A 4D-Var or smoother posterior has forecasts at its own times: every record is an analysis, so a
    one-window 4D-Var (one record) still has a histogram (it was empty: the oncology flagship's)."""
    N, n = 4, 100
    truth = np.ones((3, n))
    members = np.zeros((N, 3, n))
    members[:, 0] = 2.0  # the prior at t_0: above the truth; the analyses below it

    def run(posterior_times, forecast_times, values, truth):
        ds = xr.Dataset({"u": (("member", "time", "x"), values)}, coords={"time": posterior_times})
        fc = xr.Dataset({"u": (("member", "time", "x"), values[:, :len(forecast_times)])},
                        coords={"time": forecast_times})
        return RunData(name="r", directory=None, posterior=ds, forecast=fc, truths={"u": truth})

    filt = run([0.0, 1.0, 2.0], [1.0, 2.0], members, truth)
    assert filt.first_analysis() == 1
    assert rank_counts(filt, "u").tolist() == [0] * N + [2 * n]
    one_window = run([30.0], [30.0], members[:, 1:2], truth[1:2])
    assert one_window.first_analysis() == 0
    assert rank_counts(one_window, "u").tolist() == [0] * N + [n]
    smoother = run([0.0, 1.0, 2.0], [0.0, 1.0, 2.0], members, truth)
    assert smoother.first_analysis() == 0
    assert rank_counts(smoother, "u").tolist() == [n] + [0] * (N - 1) + [2 * n]
