"""A file of measured observations as ES-MDA and 4D-Var use it: every observation at the model step nearest its own
time (half-way: the later step; clamped to the campaign's span; a step on the 4D-Var grid takes that grid's time
exactly), the filters' checks without the binning into cycles, one entry per observation ordered by step and site."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from twin.kinds.lorenz96.model import Lorenz96
from twin.observations.base import interpolation_matrix
from twin.observations.file_network import StepClock, timed
from twin.observations.table import ObservationTable


@pytest.fixture(scope="module")
def l96():
    m = Lorenz96("l96_timed", MPI.COMM_SELF, n=40)
    yield m
    m.destroy()


def _table(rows) -> ObservationTable:
    t, x, v, y, e = zip(*rows)
    return ObservationTable(np.array(t, dtype=float), np.array(x, dtype=float)[:, None], np.array(v),
                            np.array(y, dtype=float), np.array(e, dtype=float), np.arange(len(rows)), "obs.csv",
                            "0" * 64, {"x": "1"}, {}, "1", "m")


def test_the_nearest_model_step_half_way_to_the_later_one_clamped_to_the_span():
    clock = StepClock(0.0, 0.4, 0.05)
    np.testing.assert_array_equal(clock.steps([0.01, 0.024, 0.025, 0.026, 0.1 + 1e-12, 0.4, 0.39]),
                                  [0, 0, 1, 1, 2, 8, 8])
    assert clock.last == 8 and clock.time(3) == 0.0 + 3 * 0.05
    # a span whose end is not a step: nothing is placed after it
    assert StepClock(0.0, 0.33, 0.05).steps([0.33])[0] == 6
    # the 4D-Var grid: a step on t0 + j interval takes that time exactly (1 x 0.15 is not 3 x 0.05 in floats)
    var = StepClock(0.0, 1.2, 0.05, interval=0.15)
    assert 3 * 0.05 != 0.15
    assert var.time(3) == 0.15 and var.time(6) == 2 * 0.15 and var.time(4) == 4 * 0.05
    with pytest.raises(ValueError, match="time step must be positive"):
        StepClock(0.0, 1.0, 0.0)


def test_every_observation_at_its_own_step_with_the_filters_checks(l96):
    table = _table([
        (0.12, 10.0, "x", 2.0, 0.5),   # step 2 (0.1), site 1
        (0.05, 2.5, "x", 1.0, 0.4),    # step 1, site 0
        (0.06, 2.5, "x", 1.5, 0.6),    # step 1 again, same site: both used (independent errors)
        (0.12, 10.0, "x", 2.0, 0.5),   # duplicate of row 0
        (0.40, 2.5, "x", 3.0, 0.4),    # step 8, the window's end
        (0.45, 2.5, "x", 9.0, 0.4),    # after the campaign
        (0.0, 2.5, "x", 9.0, 0.4),     # at its start: outside (t0, end]
        (0.2, 45.0, "x", 9.0, 0.4),    # outside the ring [0, 40)
        (0.3, 2.5, "x", np.nan, 0.4),  # missing
    ])
    ts = timed(table, l96, StepClock(0.0, 0.4, 0.05))
    # sites in order of appearance among the accepted rows: 10.0 first, then 2.5
    H = interpolation_matrix(l96.grid, np.array([[10.0], [2.5]]), 0)
    assert abs(ts.observations.matrix - H).max() == 0
    assert ts.step.tolist() == [1, 1, 2, 8] and ts.site.tolist() == [1, 1, 0, 1]
    assert ts.row.tolist() == [1, 2, 0, 4] and ts.value.tolist() == [1.0, 1.5, 2.0, 3.0]
    assert ts.error.tolist() == [0.4, 0.6, 0.5, 0.4]
    assert ts.qc.flags.tolist() == [0, 0, 0, 5, 0, 2, 2, 3, 1]
    assert {k: v for k, v in ts.counts.items() if v} == {"accepted": 4, "duplicate": 1, "outside_time": 2,
                                                         "outside_domain": 1, "missing": 1}


def test_nothing_usable_names_the_file(l96):
    with pytest.raises(ValueError, match=r"observation file obs.csv: no observation lies inside the campaign's time "
                                         r"span \(0, 0.4\]"):
        timed(_table([(0.5, 2.5, "x", 1.0, 0.5)]), l96, StepClock(0.0, 0.4, 0.05))
