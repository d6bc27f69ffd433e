"""Time on the report's axes: one unit readers use for the whole experiment (seconds, minutes, hours or days,
chosen from its span), whether the times come from a NetCDF file (CF ``"<unit> since <date>"``) or from a record in
model time units (``decision.json``, checkpoints).

The files keep their own encodings; only the drawing converts. A campaign with a calendar start has files whose
reference date is that start: the label then says from when the time counts (``time [h since 2026-03-01 00:00
UTC]``); files referenced to 1970-01-01 (twin experiments without a calendar) count from the campaign's time 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from twin.core.units import convert
from twin.report.data import RunData

#: display units, largest first: (label, seconds, shortest span shown in it)
_UNITS = (("days", 86400.0, 3 * 86400.0), ("h", 3600.0, 3 * 3600.0), ("min", 60.0, 180.0), ("s", 1.0, 0.0))
_EPOCH = "1970-01-01"


def _seconds(unit: str) -> float | None:
    """Seconds per ``unit`` (``None`` for dimensionless model time or an unknown unit)."""
    if not unit or unit.strip() == "1":
        return None
    try:
        return float(convert(1.0, unit.strip(), "s"))
    except ValueError:
        return None


def _cf(units: str) -> tuple[str, str]:
    """``"hours since 2026-03-01 00:00:00"`` -> ``("hours", "2026-03-01 00:00:00")``; no reference: ``(units, "")``."""
    if " since " in units:
        unit, ref = units.split(" since ", 1)
        return unit.strip(), ref.strip()
    return units.strip(), ""


@dataclass(frozen=True)
class TimeAxis:
    """How the report draws time: ``scale`` seconds per displayed ``unit`` (``None``: dimensionless model time,
    drawn as it is), the reference date the files count from (``since``, empty for time 0 of a twin experiment) and
    the model's time unit (for records in model time)."""

    scale: float | None
    unit: str
    since: str
    model_unit: str

    @property
    def label(self) -> str:
        """The axis label, e.g. ``time [h]``."""
        return f"time [{self.unit}{' since ' + self.since if self.since else ''}]"

    def from_netcdf(self, ds) -> np.ndarray:
        """The times of ``ds`` (raw values, ``decode_times=False``) in display units."""
        values = np.asarray(ds["time"].values, dtype=float)
        unit, _ = _cf(str(ds["time"].attrs.get("units", "")))
        s = _seconds(unit)
        return values if s is None or self.scale is None else values * s / self.scale

    def from_model(self, values) -> np.ndarray:
        """Times in model time units (decision records, checkpoints) in display units."""
        values = np.asarray(values, dtype=float)
        s = _seconds(self.model_unit)
        return values if s is None or self.scale is None else values * s / self.scale

    def duration(self, value: float) -> str:
        """A span in model time units as text in display units (``"6 h"``)."""
        if self.scale is None:
            return f"{value:g}" + (f" {self.model_unit}" if self.model_unit not in ("", "1") else "")
        return f"{float(self.from_model(value)):.4g} {self.unit}"


def _model_unit(data: RunData) -> str:
    unit = str((data.decision or {}).get("time_units", ""))
    if unit:
        return unit
    for ds in (data.posterior, data.forecast, data.diagnostics, data.qoi):
        if ds is not None and "time" in ds.variables:
            u, ref = _cf(str(ds["time"].attrs.get("units", "")))
            if not ref:
                return u.split("(")[0].strip()
            return "s"  # twin writes model time in seconds since the reference when the model's time is physical
    return ""


def time_axis(data: RunData) -> TimeAxis:
    """The time axis of experiment ``data``: its unit chosen from the span of its files' times."""
    model_unit = _model_unit(data)
    span, reference, physical = 0.0, "", False
    for ds in (data.posterior, data.forecast, data.diagnostics, data.qoi):
        if ds is None or "time" not in ds.variables or ds.sizes.get("time", 0) == 0:
            continue
        unit, ref = _cf(str(ds["time"].attrs.get("units", "")))
        s = _seconds(unit)
        if s is None:
            continue
        physical = True
        values = np.asarray(ds["time"].values, dtype=float) * s
        span = max(span, float(np.nanmax(values)))
        reference = reference or ref
    if not physical and _seconds(model_unit) is None:
        return TimeAxis(None, "model time units", "", model_unit)
    if span == 0.0 and data.decision:
        span = float(np.asarray((data.decision or {}).get("horizon", 0.0), dtype=float)) * (_seconds(model_unit) or 1.0)
    label, scale = next((name, sec) for name, sec, least in _UNITS if span >= least)
    since = f"{reference.replace('T', ' ')[:16]} UTC" if reference and not reference.startswith(_EPOCH) else ""
    return TimeAxis(scale, label, since, model_unit)
