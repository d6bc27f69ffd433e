"""Quality control flags every rejected observation with the first check that rejected it, and the observation-space
diagnostics of a campaign without a truth measure what they claim: chi-square per degree of freedom near 1 for the
right R and near 4 for R a factor 4 too small, Desroziers estimates of R and HBH^T, a flat observation rank histogram
for a calibrated ensemble and a U-shaped one for an over-confident one."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from twin.observations import innovations, qc


def test_each_observation_keeps_the_first_check_that_rejected_it():
    values = np.array([1.0, np.nan, 5.0, 200.0, 2.0, 2.0, 3.0])
    errors = np.ones(7)
    times = np.array([1.0, 1.0, 9.0, 1.0, 2.0, 2.0, 1.0])
    pos = np.array([[0.5], [0.5], [0.5], [0.5], [0.3], [0.3], [1.5]])
    q = qc.QualityControl(7)
    assert q.apply("missing", qc.missing(values, errors)) == 1
    assert q.apply("outside_time", qc.outside_time(times, 0.0, 5.0)) == 1
    assert q.apply("outside_domain", qc.outside_domain(pos, [(0.0, 1.0)])) == 1
    assert q.apply("range", qc.out_of_range(values, -50.0, 100.0)) == 1
    assert q.apply("duplicate", qc.duplicates(times, pos, ["h"] * 7)) == 1
    assert q.flags.tolist() == [0, 1, 2, 4, 0, 5, 3]
    counts = q.counts()
    assert counts["accepted"] == 2 and sum(counts.values()) == 7
    # a check never re-flags an observation another check rejected first
    assert q.apply("background", np.ones(7, dtype=bool)) == 2
    assert q.flags.tolist() == [7, 1, 2, 4, 7, 5, 3]


def test_background_check():
    d = np.array([0.0, 2.9, 3.1, -3.1, 10.0])
    flagged = qc.background(d, hbht_variance=np.full(5, 0.0), error_std=1.0, k=3.0)
    assert flagged.tolist() == [False, False, True, True, True]
    # a large forecast spread makes the same innovation plausible
    assert not qc.background(10.0, hbht_variance=100.0, error_std=1.0, k=3.0)


def test_thinning_keeps_the_observation_nearest_each_box_centre():
    pos = np.array([[0.1, 0.1], [0.45, 0.55], [0.9, 0.9], [1.2, 0.2], [1.5, 0.5]])
    bad = qc.thinned(pos, ["h"] * 5, np.zeros(5), spacing=1.0, origin=(0.0, 0.0))
    assert bad.tolist() == [True, False, True, True, False]
    # different variables or cycles are thinned separately
    assert not qc.thinned(pos[:2], ["h", "u"], [0, 0], 1.0, (0, 0)).any()
    assert not qc.thinned(pos[:2], ["h", "h"], [0, 1], 1.0, (0, 0)).any()


def test_superobservations_average_and_shrink_the_error():
    pos = np.array([[0.2], [0.4], [0.6], [1.5]])
    p, v, e, n = qc.superobservations(pos, [1.0, 2.0, 3.0, 10.0], [0.3, 0.3, 0.3, 0.5], 1.0, (0.0,))
    assert n.tolist() == [3, 1]
    assert p.ravel() == pytest.approx([0.4, 1.5]) and v == pytest.approx([2.0, 10.0])
    assert e == pytest.approx([0.3 / np.sqrt(3), 0.5])


@settings(max_examples=50, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 3), st.integers(0, 3), st.sampled_from("hu")), min_size=1, max_size=40))
def test_duplicates_keep_exactly_one_of_each_group(rows):
    t = np.array([r[0] for r in rows], float)
    p = np.array([[r[1]] for r in rows], float)
    v = [r[2] for r in rows]
    bad = qc.duplicates(t, p, v)
    kept = {(t[i], p[i, 0], v[i]) for i in np.flatnonzero(~bad)}
    assert len(kept) == int((~bad).sum()) == len(set(rows))


def test_duplicates_of_large_times_and_positions_are_found_and_distinct_ones_kept():
    """Times of 1e10 s over the 1e-9 tolerance do not fit an int64 key: 1.0e10 and 1.2e10 were one key and the second
    was dropped as a duplicate (with a RuntimeWarning). Distinct observations are kept however large, a genuine
    duplicate is still flagged, and no warning is raised."""
    times = np.array([1.0e10, 1.2e10, 1.2e10, 2.0e9, 2.0e9 + 1e-12])
    pos = np.array([[0.3, 0.6]] * 5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        bad = qc.duplicates(times, pos, ["T"] * 5)
        assert bad.tolist() == [False, False, True, False, True]
        q = qc.QualityControl(5)
        assert q.apply("duplicate", bad) == 2 and q.counts()["accepted"] == 3
        # positions of 9.3e9 and 1e10 length units, and times near the largest float
        far = qc.duplicates([5.0] * 3, [[9.3e9], [1.0e10], [1.0e10]], ["T"] * 3)
        assert far.tolist() == [False, False, True]
        huge = qc.duplicates([1.0e300, 1.1e300, -1.7e308, -1.7e308], [[0.0]] * 4, ["T"] * 4)
        assert huge.tolist() == [False, False, False, True]


def _cycle(rng, m, N, r_true, r_assumed, spread_scale=1.0):
    """One cycle of a linear-Gaussian analysis with H = I: the truth, a background ensemble whose spread is right
    (times spread_scale), observations with error r_true, and the ETKF-like analysis with the assumed error."""
    b = 1.0
    truth = rng.standard_normal(m)
    xb = truth + np.sqrt(b) * rng.standard_normal(m)  # background error variance b
    members = xb[:, None] + spread_scale * np.sqrt(b) * rng.standard_normal((m, N))
    members = members - members.mean(axis=1, keepdims=True) + xb[:, None]
    y = truth + np.sqrt(r_true) * rng.standard_normal(m)
    hbht = members.var(axis=1, ddof=1)
    gain = hbht / (hbht + r_assumed)
    xa = xb + gain * (y - xb)
    analysis = xa[:, None] + np.sqrt(1 - gain)[:, None] * (members - xb[:, None])
    return y, members, analysis


def test_chi_square_is_near_one_for_the_right_errors_and_near_four_for_errors_four_times_too_small():
    rng = np.random.default_rng(5)
    right = innovations.fit(*_cycle(rng, 20000, 40, 1.0, 1.0), error_std=1.0)
    assert right.chi2_per_dof == pytest.approx(1.0, abs=0.05)
    # the true errors and background spread are 4 times the assumed variances: chi2/m near 4
    y, members, analysis = _cycle(rng, 20000, 40, 4.0, 1.0, spread_scale=0.5)
    wrong = innovations.fit(y, members, analysis, error_std=1.0)
    assert wrong.chi2_per_dof > 3.0
    assert abs(right.omb_mean) < 0.05 and right.omb_std == pytest.approx(np.sqrt(2.0), rel=0.03)


def test_desroziers_recovers_r_and_hbht():
    rng = np.random.default_rng(6)
    y, members, analysis = _cycle(rng, 40000, 60, 1.0, 1.0)
    f = innovations.fit(y, members, analysis, error_std=1.0)
    assert f.desroziers_r == pytest.approx(1.0, rel=0.06)
    assert f.desroziers_hbht == pytest.approx(f.ensemble_hbht, rel=0.08)
    # a wrong assumed R shows: the estimate follows the true error, not the assumed one
    y, members, analysis = _cycle(rng, 40000, 60, 2.0, 1.0)
    f = innovations.fit(y, members, analysis, error_std=1.0)
    assert f.desroziers_r > 1.4 and f.assumed_r == pytest.approx(1.0)


def test_observation_rank_histogram_is_flat_when_calibrated_and_u_shaped_when_overconfident():
    rng = np.random.default_rng(7)
    N = 9
    counts = {}
    for name, scale in (("calibrated", 1.0), ("overconfident", 0.3)):
        # observation error variance 0.25; the members' spread is the background error's (1) times scale
        y, members, _ = _cycle(rng, 30000, N, 0.25, 0.25, spread_scale=scale)
        ranks = innovations.observation_ranks(y, members, 0.5, rng)
        counts[name] = innovations.rank_histogram(ranks, N) / y.size
    flat = counts["calibrated"]
    assert np.max(np.abs(flat - 1 / (N + 1))) < 0.015
    u = counts["overconfident"]
    assert u[0] + u[-1] > 2 * (2 / (N + 1)) and np.all(u[1:-1] < 1 / (N + 1))
