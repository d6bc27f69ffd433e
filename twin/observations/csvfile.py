"""Observations from a plain CSV file, for users without NetCDF tooling.

The file is UTF-8 text, one observation per line after a header line; lines starting with ``#`` and blank lines are
skipped (before or after the header)::

    # sea level and wind at two gauges, 1 March 2026
    time,x,y,variable,value,error,units
    2026-03-01T06:00Z,250,400,sea_level,12.5,2.0,cm
    2026-03-01T06:00Z,250,400,wind_speed,36,3.6,km/h
    2026-03-01T12:00Z,1200,800,sea_level,,2.0,cm

Columns, by header name in any order (``examples/observations/stations.csv`` is a complete example):

``time`` (required)
    An ISO 8601 instant (``2026-03-01T06:00Z``, ``2026-03-01 06:00``; no offset is UTC), converted with the campaign
    start (:mod:`twin.core.calendar`), or a number in the reader's ``time_units``: a duration from the campaign start
    (``"h"``) or a CF calendar time (``"hours since 2026-03-01"``). One kind per file.
``x`` (required), ``y``, ``z``
    Position, in the reader's ``position_units`` (default: the model's length units); ``z`` needs ``y``.
``variable`` (required)
    Name of the observed quantity; a request takes the rows whose name is its ``name`` (else its ``standard_name``,
    else the model variable's name). Rows of names nobody asked for belong to other readers and are skipped, said in the
    log (a WARNING for a name close to one asked for: ``Temp`` or ``temp.`` for ``temp``).
``value`` (required)
    The measurement. An empty cell or ``nan`` (``-nan``, any case) is missing: the row is dropped and counted
    (``table.missing``).
``error`` (optional)
    Error standard deviation, same units as ``value``, positive on every row with a value; without this column the
    request's ``error_std`` (else the reader's) applies to all rows.
``units`` (optional)
    Units of ``value`` and ``error`` on that row (``cm``, ``hPa``, ``km/h``, ``m s-1``); without this column values
    are in the request's units (the model's).

``table.row`` is the 0-based index of the data line (comment and blank lines not counted); messages give the 1-based
line of the file.
"""

from __future__ import annotations

import csv
import difflib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Mapping

import numpy as np

from twin.core.calendar import parse_start, since_start, to_model_time
from twin.core.cfunits import convert_cf, convert_cf_difference
from twin.core.errors import ObservationError
from twin.core.log import get_logger
from twin.observations.table import (DEFAULT_MAX_OBS, ObservationTable, VariableRequest, check_count, concatenate,
                                     existing_file, file_sha256, parse_requests)

log = get_logger("twin.observations.csv")

REQUIRED = ("time", "x", "variable", "value")
OPTIONAL = ("y", "z", "error", "units")


@dataclass
class _Rows:
    """The lines of one requested variable: present values, and how many were missing."""

    request: VariableRequest
    index: list[int] = field(default_factory=list)
    line: list[int] = field(default_factory=list)
    cells: list[list[str]] = field(default_factory=list)
    missing: int = 0


def _header(path: Path, cells: list[str], line: int) -> dict[str, int]:
    names = [c.strip().lower() for c in cells]
    known = REQUIRED + OPTIONAL
    for name in names:
        if name not in known:
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ObservationError(f"observation file {path}: line {line}: unknown column '{name}'{hint}; the "
                                   f"columns are {', '.join(REQUIRED)} and optionally {', '.join(OPTIONAL)}")
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ObservationError(f"observation file {path}: line {line}: column(s) {', '.join(dup)} appear twice")
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise ObservationError(f"observation file {path}: line {line}: missing column(s) {', '.join(missing)} "
                               f"(header: {','.join(names)})")
    if "z" in names and "y" not in names:
        raise ObservationError(f"observation file {path}: line {line}: column z needs a column y")
    return {n: i for i, n in enumerate(names)}


def _split(path: Path, reqs: list[VariableRequest], max_obs: int) -> tuple[dict[str, int], dict[str, _Rows]]:
    """Header columns and the rows of each requested file variable (values still text)."""
    by_name: dict[str, _Rows] = {}
    for r in reqs:
        key = r.name or r.standard_name or r.variable
        if key in by_name:
            raise ObservationError(f"observation file {path}: variables '{by_name[key].request.variable}' and "
                                   f"'{r.variable}' both ask for the rows of '{key}'")
        by_name[key] = _Rows(r)
    columns: dict[str, int] | None = None
    seen: dict[str, int] = {}
    count = 0
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            for cells in reader:
                if not cells or not "".join(cells).strip() or cells[0].lstrip().startswith("#"):
                    continue
                if columns is None:
                    columns = _header(path, cells, reader.line_num)
                    continue
                if [c.strip().lower() for c in cells] == list(columns):
                    raise ObservationError(f"observation file {path}: line {reader.line_num}: the header again (two "
                                           "files joined?): remove it, the file has one header line")
                if len(cells) != len(columns):
                    raise ObservationError(f"observation file {path}: line {reader.line_num}: {len(cells)} fields, "
                                           f"but the header has {len(columns)}")
                count += 1
                check_count(path, count, max_obs, "the file")
                name = cells[columns["variable"]].strip()
                seen[name] = seen.get(name, 0) + 1
                rows = by_name.get(name)
                if rows is None:
                    continue
                value = cells[columns["value"]].strip()
                if not value or value.lower().lstrip("+-") == "nan":  # -nan: what C's printf writes for some NaNs
                    rows.missing += 1
                    continue
                rows.index.append(count - 1)
                rows.line.append(reader.line_num)
                rows.cells.append(cells)
    except UnicodeDecodeError:
        raise ObservationError(f"observation file {path}: is not a UTF-8 text CSV file") from None
    except csv.Error as exc:
        raise ObservationError(f"observation file {path}: is not a readable CSV file ({exc})") from None
    if columns is None:
        raise ObservationError(f"observation file {path}: has no header line (expected {','.join(REQUIRED)},...)")
    for key, rows in by_name.items():
        if not rows.index:
            what = (f"all {rows.missing} values of '{key}' are missing" if rows.missing else
                    f"has no rows of variable '{key}' (variables in the file: {', '.join(sorted(seen)) or 'none'})")
            raise ObservationError(f"observation file {path}: {what} (for '{rows.request.variable}')")
    _say_skipped(path, {name: n for name, n in seen.items() if name not in by_name}, list(by_name))
    return columns, by_name


#: (file, variable) pairs :func:`_say_skipped` said in this process: a campaign reads a file when it is checked and
#: again when its experiment starts, and the line is said once
_SAID: set[tuple[str, str]] = set()


def _say_skipped(path: Path, others: dict[str, int], asked: list[str]) -> None:
    """Rows of variables this reader was not asked for belong to other networks reading the same file, or to none:
    said in the log once per process, as a WARNING where the name is close to one asked for (``Temp``, ``temp.`` for
    ``temp``; by difflib's 0.8, above which other variables' names in one file rarely come)."""
    for name, n in sorted(others.items()):
        if (str(path), name) in _SAID:
            continue
        _SAID.add((str(path), name))
        close = [a for a in asked if a.lower() == name.lower()] or difflib.get_close_matches(name, asked, n=1,
                                                                                              cutoff=0.8)
        if close:
            log.warning("observation file %s: %d row(s) of variable '%s' not read: no network asks for it (did you "
                        "mean '%s'? the names must match exactly)", path, n, name, close[0])
        else:
            log.info("observation file %s: %d row(s) of variable '%s' not read here (no request of this network "
                     "names it)", path, n, name)


@dataclass
class _Columns:
    path: Path
    columns: dict[str, int]
    rows: _Rows

    def prefix(self, i: int | None = None) -> str:
        where = f"line {self.rows.line[i]}: " if i is not None else ""
        key = self.rows.request.name or self.rows.request.standard_name or self.rows.request.variable
        return f"observation file {self.path}: {where}variable '{key}'"

    def text(self, column: str) -> list[str]:
        j = self.columns[column]
        return [cells[j].strip() for cells in self.rows.cells]

    def numbers(self, column: str) -> np.ndarray:
        out = np.empty(len(self.rows.cells))
        for i, cell in enumerate(self.text(column)):
            try:
                out[i] = _number(cell)
            except ValueError:
                raise ObservationError(f"{self.prefix(i)}: {column} {cell!r} is not a number") from None
            if not np.isfinite(out[i]):
                raise ObservationError(f"{self.prefix(i)}: {column} {cell!r} is not finite")
        return out


def _times(c: _Columns, start, model_time_units: str, time_units: str | None) -> np.ndarray:
    cells = c.text("time")
    numeric = _is_number(cells[0])
    for i, cell in enumerate(cells):
        if _is_number(cell) != numeric:
            raise ObservationError(f"{c.prefix(i)}: time {cell!r} is "
                                   + ("not a number, but the first time is one" if numeric else
                                      "a number, but the first time is an ISO 8601 date") + " (one kind per file)")
    if numeric:
        if not time_units:
            raise ObservationError(f"{c.prefix(0)}: times are numbers, but no time_units were given (e.g. 'h' from "
                                   "the campaign start, or 'hours since 2026-03-01')")
        try:
            return to_model_time(c.numbers("time"), time_units, None, start, model_time_units)
        except ValueError as exc:
            raise ObservationError(f"{c.prefix()}: time: {exc}") from None
    instants: list[datetime] = []
    for i, cell in enumerate(cells):
        try:
            instants.append(parse_start(cell))
        except ValueError as exc:
            raise ObservationError(f"{c.prefix(i)}: time: {exc}") from None
    try:
        return since_start(instants, start, model_time_units)
    except ValueError as exc:
        raise ObservationError(f"{c.prefix()}: time: {exc}") from None


def _number(text: str) -> float:
    """A CSV cell as a number, as C's ``strtod`` and a spreadsheet read it: Python's ``float`` also reads ``1_0`` as 10
    (a digit group separator in Python source, a typo in a data file)."""
    if "_" in text:
        raise ValueError(text)
    return float(text)


def _is_number(text: str) -> bool:
    try:
        _number(text)
    except ValueError:
        return False
    return True


def _read_rows(c: _Columns, *, start, model_time_units: str, length_units: str, position_units: str,
               time_units: str | None, error_std: float | None) -> ObservationTable:
    req = c.rows.request
    time = _times(c, start, model_time_units, time_units)
    axes = [a for a in ("x", "y", "z") if a in c.columns]
    try:
        position = np.column_stack([convert_cf(c.numbers(a), position_units, length_units) for a in axes])
    except ValueError as exc:
        raise ObservationError(f"{c.prefix()}: positions: {exc} (position_units {position_units!r}, the model's "
                               f"length units {length_units!r})") from None
    raw_value = c.numbers("value")
    if "error" in c.columns:
        raw_error = c.numbers("error")
        bad = np.flatnonzero(raw_error <= 0)
        if bad.size:
            raise ObservationError(f"{c.prefix(int(bad[0]))}: error {raw_error[bad[0]]!r} must be positive")
    else:
        default = req.error_std if req.error_std is not None else error_std
        if default is None:
            raise ObservationError(f"{c.prefix()}: no observation error: the file has no error column and no "
                                   "error_std is given")
        raw_error = None
    value = np.empty_like(raw_value)
    error = np.full_like(raw_value, np.nan if raw_error is not None else default)
    units = np.asarray(c.text("units")) if "units" in c.columns else np.full(raw_value.size, req.units)
    for u in dict.fromkeys(units.tolist()):
        sel = np.flatnonzero(units == u)
        try:
            value[sel] = convert_cf(raw_value[sel], u, req.units)
            if raw_error is not None:
                error[sel] = convert_cf_difference(raw_error[sel], u, req.units)
        except ValueError as exc:
            raise ObservationError(f"{c.prefix(int(sel[0]))}: units {u!r}: {exc} (the model's units of "
                                   f"'{req.variable}' are {req.units!r})") from None
    return ObservationTable(time, position, req.variable, value, error, np.asarray(c.rows.index), str(c.path), "",
                            {req.variable: req.units}, {req.variable: c.rows.missing}, model_time_units,
                            length_units)


def read_csv(path, variables: Mapping[str, Mapping | VariableRequest], *, start: datetime | None = None,
             model_time_units: str = "s", length_units: str = "m", error_std: float | None = None,
             time_units: str | None = None, position_units: str | None = None,
             max_obs: int = DEFAULT_MAX_OBS) -> ObservationTable:
    """Read observations from a CSV file in the layout of the module docstring.

    Parameters
    ----------
    path : str or Path
    variables : mapping
        Model variable -> request ``{name | standard_name, units, [error_std]}`` (or a
        :class:`~twin.observations.table.VariableRequest`); ``units`` are the model's units of that variable.
    start : datetime, optional
        The campaign's start instant; ``None``: 1970-01-01T00:00Z (:mod:`twin.core.calendar`).
    model_time_units, length_units : str
        The model's units of time and length.
    error_std : float, optional
        Error standard deviation for files without an ``error`` column, when the request has none.
    time_units : str, optional
        Units of numeric times (``"h"``, ``"hours since 2026-03-01"``); needed only when times are numbers.
    position_units : str, optional
        Units of ``x``, ``y``, ``z`` (default ``length_units``).
    max_obs : int
        Refuse a file with more data lines than this (counted while reading, before anything is converted).

    Returns
    -------
    ObservationTable
        The rows with a value of every requested variable, in request order, each in file order.

    Raises
    ------
    ObservationError
        One line naming the file (and the line and variable where there is one): missing file, not UTF-8 text, a
        missing, unknown or repeated column, a line with the wrong number of fields, a cell that is not a number or
        date, missing or unconvertible units, a variable without rows or with only missing values, a non-positive
        error, too many lines.
    """
    p = existing_file(path)
    try:
        reqs = parse_requests(variables)
    except ValueError as exc:
        raise ObservationError(f"observation file {p}: {exc}") from None
    for r in reqs:
        if r.error:
            raise ObservationError(f"observation file {p}: variable '{r.variable}': 'error' names a NetCDF variable; "
                                   "a CSV gives each observation's error in its 'error' column")
    sha256 = file_sha256(p)
    columns, by_name = _split(p, reqs, max_obs)
    parts = [_read_rows(_Columns(p, columns, rows), start=start, model_time_units=model_time_units,
                        length_units=length_units, position_units=position_units or length_units,
                        time_units=time_units, error_std=error_std) for rows in by_name.values()]
    return concatenate(parts, str(p), sha256, model_time_units, length_units)


__all__ = ["REQUIRED", "OPTIONAL", "read_csv"]
