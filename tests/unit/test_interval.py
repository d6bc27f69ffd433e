"""twin.core.interval.Interval: due once its seconds have passed since the start or the last reset (at once with
``due_at_start``); 0 s is always due. (On 2 ranks rank 0's clock decides: tests/mpi/test_campaign_mpi.py.)"""

from __future__ import annotations

import time

from twin.core.interval import Interval


def test_due_after_its_seconds_and_again_after_a_reset():
    every = Interval(0.05)
    assert not every.due()
    time.sleep(0.06)
    assert every.due() and every.due()  # stays due until reset
    every.reset()
    assert not every.due()
    assert Interval(3600, due_at_start=True).due() and Interval(0.0).due()
