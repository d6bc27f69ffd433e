"""A campaign may start at a calendar instant (``timeline.start: 2026-03-01T00:00Z``): model time counts from 0
there, ``end`` may be a number of units after it or another instant, experiment.yaml keeps the instant, and bad
dates or calendars a model cannot have are refused with the file's line."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from twin.campaign.experiments import base_data
from twin.config.loader import load_campaign, validate_data
from twin.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
QUICK = (ROOT / "configs" / "quickstart.yaml").read_text()
TIMELINE = "timeline:\n  start: 0.0\n  end: 50.0\n  units: s\n  output_every: 10.0\n"


def _load(tmp_path, timeline: str):
    assert TIMELINE in QUICK
    path = tmp_path / "c.yaml"
    path.write_text(QUICK.replace(TIMELINE, timeline))
    return load_campaign(path).config


@pytest.mark.parametrize("end", ["50.0", "2026-03-01T00:00:50Z", "2026-03-01T01:00:50+01:00"])
def test_a_calendar_start_is_model_time_zero(tmp_path, end):
    cfg = _load(tmp_path, f"timeline:\n  start: 2026-03-01T00:00Z\n  end: {end}\n  units: s\n  output_every: 10.0\n")
    tl = cfg.timeline
    assert (tl.start, tl.end) == (0.0, pytest.approx(50.0))
    assert tl.calendar_start == datetime(2026, 3, 1, tzinfo=timezone.utc)
    # experiment.yaml (written from base_data) keeps the instant, and reads back to the same timeline
    data = base_data(cfg)
    assert data["timeline"]["start"] == "2026-03-01T00:00:00Z"
    again = validate_data(data, "experiment.yaml").timeline
    assert (again.start, again.end, again.calendar_start) == (tl.start, tl.end, tl.calendar_start)


def test_days_after_a_date(tmp_path):
    cfg = _load(tmp_path, "timeline:\n  start: '2026-02-27'\n  end: 2026-03-02T12:00Z\n  units: day\n"
                          "  output_every: 0.5\n")
    tl = cfg.timeline
    assert tl.end == pytest.approx(3.5)  # 2026 is no leap year: Feb 27 00:00 to Mar 2 12:00


def test_without_a_calendar_nothing_changes(tmp_path):
    tl = _load(tmp_path, TIMELINE).timeline
    assert (tl.start, tl.end, tl.calendar_start) == (0.0, 50.0, None)
    assert base_data(_load(tmp_path, TIMELINE))["timeline"]["start"] == 0.0


@pytest.mark.parametrize("timeline, expect", [
    ("timeline:\n  start: 2026-03-41\n  end: 50.0\n  units: s\n  output_every: 10.0\n",
     "c.yaml:28:10: timeline.start: '2026-03-41' is not a number of s nor an ISO 8601 date"),
    ("timeline:\n  start: 0.0\n  end: 2026-03-02\n  units: s\n  output_every: 10.0\n",
     "timeline.end: end '2026-03-02' is a date, start is not"),
    # found by trying: a quoted number or one with its unit was called a date
    ("timeline:\n  start: 0.0\n  end: \"50.0\"\n  units: s\n  output_every: 10.0\n",
     "timeline.end: end '50.0' is not a number of s: write it as a plain number, without quotes or units"),
    ("timeline:\n  start: 0.0\n  end: 50 s\n  units: s\n  output_every: 10.0\n",
     "timeline.end: end '50 s' is not a number of s"),
    ("timeline:\n  start: 2026-03-02\n  end: 2026-03-01\n  units: s\n  output_every: 10.0\n", "timeline.end: end (-86400.0) must be after"),
])
def test_bad_dates_are_refused_with_the_line(tmp_path, timeline, expect):
    with pytest.raises(ConfigError) as err:
        _load(tmp_path, timeline)
    assert expect in str(err.value)


def test_a_dimensionless_model_has_no_calendar(tmp_path):
    text = (ROOT / "configs" / "lorenz96_etkf.yaml").read_text()
    path = tmp_path / "l96.yaml"
    path.write_text(text.replace("timeline: {start: 0.0,", "timeline: {start: 2026-03-01T00:00Z,"))
    with pytest.raises(ConfigError, match="l96 count time without units"):
        load_campaign(path)
