"""The report draws time in the unit its readers use, whether it comes from a NetCDF file or a record in model time
units, and says from when it counts when the files have a calendar reference date."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from twin.core.units import duration_text
from twin.report.data import RunData
from twin.report.timeaxis import time_axis


def _data(times, units, decision=None) -> RunData:
    ds = xr.Dataset(coords={"time": ("time", np.asarray(times, dtype=float), {"units": units})})
    return RunData("e", Path("."), diagnostics=ds, decision=decision)


def test_seconds_of_a_twin_experiment_are_drawn_in_hours():
    data = _data(np.arange(1, 13) * 3600.0, "seconds since 1970-01-01 00:00:00",
                 {"time_units": "s", "horizon": 21600.0})
    axis = time_axis(data)
    assert axis.label == "time [h]"
    assert axis.from_netcdf(data.diagnostics) == pytest.approx(np.arange(1, 13))
    assert axis.from_model([43200.0, 64800.0]) == pytest.approx([12.0, 18.0])
    assert axis.duration(21600.0) == "6 h"


def test_days_of_a_patient_and_a_calendar_start():
    # the tumour model counts days; its files say seconds since the campaign's start date
    data = _data(np.array([0.0, 30.0, 60.0]) * 86400, "seconds since 2026-03-01T00:00:00Z",
                 {"time_units": "day", "horizon": 70.0})
    axis = time_axis(data)
    assert axis.label == "time [days since 2026-03-01 00:00 UTC]"
    assert axis.from_netcdf(data.diagnostics) == pytest.approx([0.0, 30.0, 60.0])
    assert axis.from_model([70.0]) == pytest.approx([70.0])


def test_dimensionless_model_time_is_drawn_as_it_is():
    data = _data([0.1, 0.2, 3.0], "1", {"time_units": "1", "horizon": 1.0})
    axis = time_axis(data)
    assert axis.label == "time [model time units]"
    assert axis.from_model([1.5]) == pytest.approx([1.5])
    assert axis.duration(1.0) == "1"


@pytest.mark.parametrize("value, unit, text", [(21600, "s", "6 h"), (90, "s", "90 s"), (600, "s", "10 min"),
                                               (70, "day", "70 days"), (1.0, "1", "1 (model time units)"),
                                               (36, "h", "36 h")])
def test_duration_text(value, unit, text):
    assert duration_text(value, unit) == text
