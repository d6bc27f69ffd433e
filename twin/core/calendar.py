"""Calendar time: a campaign's start instant and CF time coordinates (``"hours since 2026-03-01"``).

A campaign may start at a calendar instant (``timeline.start: 2026-03-01T00:00Z``). Inside, every model counts time
in its own units (``time_units``: ``"s"``, ``"day"``, or ``"1"`` for a dimensionless model such as Lorenz-96) from
that start: model time ``t`` is the instant ``start + t``. Files carry CF time (CF 1.10 section 4.4),
``<unit> since <reference>`` with a value ``v`` per record, and

    t = convert(v, unit, model_units) + convert(reference - start, "s", model_units)

is the model time of a record. Conventions:

* Instants are timezone-aware UTC :class:`datetime.datetime` objects. A date or time written without an offset is
  UTC, as in CF.
* Without a start instant (``start=None``) the time origin is :data:`EPOCH`, 1970-01-01T00:00:00Z: model time ``t``
  is ``t`` model units after the epoch, which is how twin wrote files before campaigns had a calendar start
  (``"seconds since 1970-01-01 00:00:00"``, :mod:`twin.io.netcdf`).
* A time without ``since`` (units ``"day"``, ``"h"``) is a duration from the campaign start.
* A model whose time is dimensionless (``"1"``) has no calendar: only plain numbers with units ``"1"`` are its
  time; calendar times and durations are refused with a message that says so.
* Calendars: ``standard`` (alias ``gregorian``; the default when a file gives none) and ``proleptic_gregorian``.
  Python's :class:`~datetime.datetime` is proleptic Gregorian, which equals ``standard`` from 1582-10-15 on; a
  ``standard`` reference date before that (Julian part of the mixed calendar) is refused, as are the model calendars
  (``noleap``, ``360_day``, ``julian``, ...), whose days do not map onto real instants one to one.
* Months and years are refused as time units: they are not fixed durations, and UDUNITS (365.242198781 days) and
  pint (365.25 days) disagree on the length of a year.

Durations are converted with pint (:func:`twin.core.units.convert`); offsets between instants are computed in integer
microseconds, so no precision is lost before the single conversion to model units.
"""

from __future__ import annotations

import math
import re
from datetime import date, datetime, timedelta, timezone
from typing import Iterable

import numpy as np

from twin.core.units import compatible, convert, parse_units

#: time origin of a campaign without a calendar start
EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

#: calendars whose days are real days (CF 1.10 section 4.4.1), in lower case
CALENDARS = ("standard", "gregorian", "proleptic_gregorian")

_GREGORIAN_REFORM = datetime(1582, 10, 15, tzinfo=timezone.utc)
_LONGEST_FIXED_UNIT_S = 28 * 86400.0  # a month or a year is longer than this; weeks and fortnights are not

# CF names of the model time units that have one, by their length in seconds
_CF_NAMES = ((1.0, "seconds"), (60.0, "minutes"), (3600.0, "hours"), (86400.0, "days"), (1e-3, "milliseconds"),
             (1e-6, "microseconds"))

_ISO = re.compile(
    r"^(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})"
    r"(?:[T ](?P<hour>\d{2})(?::(?P<minute>\d{2})(?::(?P<second>\d{2}(?:\.\d+)?))?)?)?"
    r"(?P<tz>Z|[+-]\d{2}(?::?\d{2})?)?$", re.IGNORECASE)
# UDUNITS reference dates are laxer: one-digit fields, several spaces, "UTC", offsets like "-6:00"
_CF_REFERENCE = re.compile(
    r"^(?P<year>\d{4})-(?P<month>\d{1,2})-(?P<day>\d{1,2})"
    r"(?:(?:T|\s+)(?P<hour>\d{1,2})(?::(?P<minute>\d{1,2})(?::(?P<second>\d{1,2}(?:\.\d*)?))?)?)?"
    r"\s*(?P<tz>Z|UTC|GMT|[+-]\d{1,2}(?::?\d{2})?)?$", re.IGNORECASE)
_SINCE = re.compile(r"^\s*(?P<unit>\S+)\s+since\s+(?P<reference>.+?)\s*$", re.IGNORECASE)


def _instant(m: re.Match) -> datetime:
    """The UTC instant of a match of :data:`_ISO` or :data:`_CF_REFERENCE` (``ValueError`` if out of range)."""
    g = m.groupdict()
    hour, minute = int(g["hour"] or 0), int(g["minute"] or 0)
    second = float(g["second"] or 0.0)
    if hour > 24 or minute > 59 or second >= 60 or (hour == 24 and (minute or second)):
        raise ValueError("time of day out of range")
    whole = int(second)
    micro = round((second - whole) * 1e6)
    base = datetime(int(g["year"]), int(g["month"]), int(g["day"]), tzinfo=timezone.utc)
    instant = base + timedelta(hours=hour, minutes=minute, seconds=whole, microseconds=micro)
    tz = (g["tz"] or "Z").upper()
    if tz not in ("Z", "UTC", "GMT"):
        sign = -1 if tz[0] == "-" else 1
        digits = tz[1:].replace(":", "")
        hh, mm = (digits, "0") if len(digits) <= 2 else (digits[:-2], digits[-2:])
        if int(hh) > 23 or int(mm) > 59:
            raise ValueError("UTC offset out of range")
        instant -= sign * timedelta(hours=int(hh), minutes=int(mm))
    return instant


def parse_start(text: str | datetime | date) -> datetime:
    """The UTC instant of an ISO 8601 date or date-time.

    Parameters
    ----------
    text : str or datetime or date
        ``2026-03-01T00:00Z``, ``2026-03-01``, ``2026-03-01T01:00:00+01:00``, ``2026-03-01 06:30:15.5``: extended
        format, ``T`` or one space between date and time, time to the hour, minute or (fractional) second, offset
        ``Z``, ``+hh``, ``+hhmm`` or ``+hh:mm``; no offset means UTC. A :class:`datetime` (naive: UTC) or a
        :class:`date` (midnight UTC) is accepted too, since YAML loaders turn ``2026-03-01`` into one.

    Returns
    -------
    datetime
        Timezone-aware, in UTC.

    Raises
    ------
    ValueError
        If ``text`` is not such a date, naming it.
    """
    if isinstance(text, datetime):
        return text.replace(tzinfo=timezone.utc) if text.tzinfo is None else text.astimezone(timezone.utc)
    if isinstance(text, date):
        return datetime(text.year, text.month, text.day, tzinfo=timezone.utc)
    m = _ISO.match(str(text).strip())
    if m:
        try:
            return _instant(m)
        except (ValueError, OverflowError) as exc:
            raise ValueError(f"{text!r} is not a valid ISO 8601 date-time ({exc})") from None
    raise ValueError(f"{text!r} is not an ISO 8601 date or date-time (e.g. 2026-03-01T00:00Z or 2026-03-01)")


def _cf_reference(text: str) -> datetime:
    m = _CF_REFERENCE.match(text.strip())
    if not m:
        raise ValueError(f"reference date {text!r} is not a date (e.g. 2026-03-01 00:00:00)")
    try:
        return _instant(m)
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"reference date {text!r} is not valid ({exc})") from None


def _seconds(delta: timedelta) -> float:
    """``delta`` in seconds, from its integer microseconds (exact to the last bit of the result)."""
    return ((delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds) / 1e6


def _origin(start: datetime | None) -> datetime:
    return EPOCH if start is None else parse_start(start)


def _check_calendar(calendar: str | None, reference: datetime | None) -> None:
    name = (calendar or "standard").strip().lower()
    if name not in CALENDARS:
        raise ValueError(f"calendar {calendar!r} is not supported (twin reads {', '.join(CALENDARS)} times: "
                         "convert the file's times to one of them)")
    if name != "proleptic_gregorian" and reference is not None and reference < _GREGORIAN_REFORM:
        raise ValueError(f"reference date {reference.date()} of the {name} calendar is before 1582-10-15, in its "
                         "Julian part, which twin does not read (use proleptic_gregorian)")


def _time_unit(word: str, where: str) -> str:
    """``word`` as a fixed-length unit of time, or ``ValueError``."""
    try:
        parse_units(word)
    except ValueError:
        raise ValueError(f"{where}: unknown unit of time {word!r}") from None
    if not compatible(word, "s"):
        raise ValueError(f"{where}: {word!r} is not a unit of time")
    if convert(1.0, word, "s") > _LONGEST_FIXED_UNIT_S:
        raise ValueError(f"{where}: {word!r} is not a fixed duration (months and years differ in length); "
                         "use days")
    return word


def split_cf_time_units(cf_units: str) -> tuple[str, datetime | None]:
    """The unit and reference instant of ``"<unit> since <reference>"``; ``(cf_units, None)`` without ``since``.

    Raises
    ------
    ValueError
        If the reference is not a date.
    """
    m = _SINCE.match(cf_units)
    if not m:
        return cf_units.strip(), None
    return m.group("unit"), _cf_reference(m.group("reference"))


def cf_time_units(start: datetime | None, model_time_units: str) -> str:
    """The CF ``units`` of a time coordinate that stores model times unchanged.

    Parameters
    ----------
    start : datetime or None
        The campaign's start instant; ``None``: the campaign has no calendar start and the reference is
        :data:`EPOCH` (the files twin wrote before calendar starts said the same).
    model_time_units : str
        The model's time units (``"s"``, ``"day"``, ``"h"``, ...; ``"1"`` for dimensionless time).

    Returns
    -------
    str
        ``"days since 2026-03-01T00:00:00Z"`` for ``("2026-03-01", "day")``; ``"1"`` for a dimensionless model
        without a start.

    Raises
    ------
    ValueError
        For a dimensionless model with a start instant (its time has no calendar), or time units that CF has no
        name for (seconds, minutes, hours, days, milliseconds and microseconds have one).
    """
    origin = _origin(start)
    if parse_units(model_time_units).dimensionless:
        if start is not None:
            raise ValueError(f"model time units {model_time_units!r} are dimensionless: a model time has no "
                             f"calendar date, so a start instant ({origin.isoformat()}) cannot apply to it")
        return "1"
    seconds = float(convert(1.0, _time_unit(model_time_units, "model time units"), "s"))
    for length, name in _CF_NAMES:
        if math.isclose(seconds, length, rel_tol=1e-12):
            return f"{name} since {_iso(origin)}"
    raise ValueError(f"model time units {model_time_units!r} have no CF name (use s, min, h or day)")


def _iso(instant: datetime) -> str:
    text = instant.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")
    if instant.microsecond:
        text += f".{instant.microsecond:06d}"
    return text + "Z"


def to_model_time(values, cf_units: str, calendar: str | None, start: datetime | None,
                  model_time_units: str) -> np.ndarray:
    """Model times (``model_time_units`` after ``start``) of CF time values.

    Parameters
    ----------
    values : array_like
        Time values as stored (any numeric dtype).
    cf_units : str
        Their units: ``"hours since 2026-03-01"``, ``"days since 2026-02-28 12:00"``, ``"s since 2026-03-01T06:00Z"``
        (calendar time), ``"day"`` or ``"h"`` (duration from ``start``), ``"1"`` (dimensionless model time).
    calendar : str or None
        The CF ``calendar`` attribute (``None``: ``standard``).
    start : datetime or None
        The campaign's start instant (``None``: :data:`EPOCH`).
    model_time_units : str
        The model's time units.

    Returns
    -------
    ndarray of float64

    Raises
    ------
    ValueError
        For missing or unknown units, a calendar other than standard/gregorian/proleptic_gregorian, months or years,
        and calendar time for a dimensionless model; the message names the offending text.
    """
    v = np.asarray(values, dtype=np.float64)
    text = (cf_units or "").strip()
    if not text:
        raise ValueError("time has no units (e.g. 'hours since 2026-03-01' or 'day')")
    word, reference = split_cf_time_units(text)
    _check_calendar(calendar, reference)
    model_dimensionless = parse_units(model_time_units).dimensionless
    if reference is None:
        try:
            file_dimensionless = parse_units(word).dimensionless
        except ValueError:
            raise ValueError(f"time units {text!r} are unknown") from None
        if file_dimensionless != model_dimensionless:
            raise ValueError(f"time units {text!r} do not convert to the model's time units {model_time_units!r}"
                             + (" (the model's time is dimensionless: give times as plain numbers with units '1')"
                                if model_dimensionless else ""))
        if not file_dimensionless:
            _time_unit(word, f"time units {text!r}")
        return np.asarray(convert(v, word, model_time_units), dtype=np.float64)
    if model_dimensionless:
        raise ValueError(f"calendar time {text!r} cannot be converted to a dimensionless model time (units "
                         f"{model_time_units!r}); give times as plain numbers with units '1'")
    _time_unit(word, f"time units {text!r}")
    _time_unit(model_time_units, "model time units")
    offset = float(convert(_seconds(reference - _origin(start)), "s", model_time_units))
    return np.asarray(convert(v, word, model_time_units), dtype=np.float64) + offset


def since_start(instants: Iterable[datetime], start: datetime | None, model_time_units: str) -> np.ndarray:
    """Model times of calendar instants (naive ones are UTC): ``instant - start`` in ``model_time_units``.

    Raises
    ------
    ValueError
        If the model's time is dimensionless (it has no calendar).
    """
    if parse_units(model_time_units).dimensionless:
        raise ValueError(f"calendar dates cannot be converted to a dimensionless model time (units "
                         f"{model_time_units!r}); give times as plain numbers")
    _time_unit(model_time_units, "model time units")
    origin = _origin(start)
    seconds = np.array([_seconds(parse_start(t) - origin) for t in instants], dtype=np.float64)
    return np.asarray(convert(seconds, "s", model_time_units), dtype=np.float64)


__all__ = ["EPOCH", "CALENDARS", "parse_start", "split_cf_time_units", "cf_time_units", "to_model_time",
           "since_start"]
