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
